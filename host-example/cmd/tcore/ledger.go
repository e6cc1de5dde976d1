package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
)

// A bench ledger is a JSON Lines file of finished bench runs, one row per
// cell, pipeline and seed, that outlives the results folder: a later bench
// (on another machine, or after the folder is gone) reads a run from it
// instead of running it again, as long as the run is the same one. A run
// is the same when its run key (runKeys: the pipeline with its params, the
// seed, the device, the eval spec and the files by content) and its
// stages' versions are. Versions, not the binaries' hashes: a stage's
// version changes whenever its outputs do (docs/DECISIONS.md), and a
// rebuild that changes nothing must not throw away hours of runs. A ledger
// is small (a row is under 1 kB) and is meant to be committed beside its
// config; it names no path of the machine that ran it.
type ledger struct {
	path string
	rows []ledgerRow
}

// ledgerRow is one finished run: its bench row (without the folder it
// ran in) and what identifies it.
type ledgerRow struct {
	benchRow
	// Run is the run's key (runKeys).
	Run string `json:"run"`
	// Recipe is the run's key with the encoder counted by its name in
	// the config, not its content (what --any-draw matches).
	Recipe string `json:"recipe"`
	// Versions are the versions of the stages the pipeline ran.
	Versions map[string]string `json:"versions"`
	// Encoder is the sha256 of the encoder file (also inside Run): an
	// encoder rebuilt from its recipe is another draw, and its rows say
	// which.
	Encoder string `json:"encoder_sha256,omitempty"`
	// Recorded is the day the row was written (UTC, YYYY-MM-DD).
	Recorded string `json:"recorded"`
}

// runID is what a ledger row must match to stand for a run.
type runID struct {
	Scenario string
	Rate     *float64
	Pipeline string
	Seed     int64
	Run      string
	Recipe   string
	Versions map[string]string
	Encoder  string // the encoder file's sha256 (recorded, not matched: Run holds it)
}

// matches says whether r stands for the run id: the same run key (with
// anyDraw, the same recipe key) and the same stage versions.
func (id runID) matches(r *ledgerRow, anyDraw bool) bool {
	same := r.Run == id.Run
	if anyDraw {
		same = r.Recipe == id.Recipe
	}
	return same && r.Scenario == id.Scenario && rateString(r.Rate) == rateString(id.Rate) && r.Pipeline == id.Pipeline &&
		r.Seed == id.Seed && maps.Equal(r.Versions, id.Versions)
}

// rateString is a poison rate as the bench writes it ("" for none).
func rateString(r *float64) string {
	if r == nil {
		return ""
	}
	return strconv.FormatFloat(*r, 'g', -1, 64)
}

// openLedger reads the ledger at path; a file that is not there yet is an
// empty ledger. A row that does not parse, or lacks its identity, is an
// error naming the file and line.
func openLedger(path string) (*ledger, error) {
	l := &ledger{path: path}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return l, nil
	}
	if err != nil {
		return nil, usagef("bench: ledger: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		var r ledgerRow
		if err := dec.Decode(&r); err != nil {
			return nil, usagef("bench: ledger %s: line %d: %v", path, line, err)
		}
		switch {
		case r.Scenario == "" || r.Pipeline == "":
			return nil, usagef("bench: ledger %s: line %d: no scenario or pipeline", path, line)
		case r.Run == "" || r.Recipe == "" || len(r.Versions) == 0:
			return nil, usagef("bench: ledger %s: line %d: no run key, recipe key or stage versions", path, line)
		}
		l.rows = append(l.rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("bench: ledger %s: %v", path, err)
	}
	return l, nil
}

// find returns the row that stands for the run id (anyDraw: on any draw
// of its encoder; the row of the same draw first).
func (l *ledger) find(id runID, anyDraw bool) (benchRow, bool) {
	if r, ok := l.find1(id, false); ok || !anyDraw {
		return r, ok
	}
	return l.find1(id, true)
}

func (l *ledger) find1(id runID, anyDraw bool) (benchRow, bool) {
	for i := range l.rows {
		if id.matches(&l.rows[i], anyDraw) {
			return l.rows[i].benchRow, true
		}
	}
	return benchRow{}, false
}

// record adds the finished run row under id, unless the ledger has it
// (added says which). Benches may share a ledger (--only runs side by
// side): under an exclusive lock on PATH.lock it reads the file again,
// adds the row to what is there, and rewrites the file whole and
// atomically, so no bench drops another's rows and no reader sees half a
// row.
func (l *ledger) record(id runID, row benchRow) (added bool, err error) {
	unlock, err := lockFile(l.path + ".lock")
	if err != nil {
		return false, fmt.Errorf("bench: ledger: %w", err)
	}
	defer unlock()
	now, err := openLedger(l.path)
	if err != nil {
		return false, err
	}
	l.rows = now.rows
	if _, ok := l.find(id, false); ok {
		return false, nil
	}
	row.Dir, row.Reused = "", false
	if row.ASRFrom != "" && row.ASRFrom != asrFromEval {
		row.ASRFrom = filepath.Base(row.ASRFrom) // a triggered test set: its name, no path of this machine
	}
	l.rows = append(l.rows, ledgerRow{benchRow: row, Run: id.Run, Recipe: id.Recipe, Versions: id.Versions, Encoder: id.Encoder, Recorded: time.Now().UTC().Format("2006-01-02")})
	var b bytes.Buffer
	for _, r := range l.rows {
		line, err := json.Marshal(r)
		if err != nil {
			return false, err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := arrowio.WriteFileAtomic(l.path, b.Bytes()); err != nil {
		return false, fmt.Errorf("bench: ledger: %w", err)
	}
	return true, nil
}

// lockFile takes an exclusive flock on path (made if missing), waiting
// for another holder; the lock goes with the process, however it ends.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// versions returns the versions of the stages p's nodes run.
func versions(p *dag.Pipeline, stages dag.Provider) map[string]string {
	out := map[string]string{}
	for _, n := range p.Nodes {
		if n.Stage == "" {
			continue
		}
		if s, ok := stages.Spec(n.Stage); ok {
			out[n.Stage] = s.Version
		}
	}
	return out
}

// markerVersions returns the stage versions a cell's completion marker
// was written under: its Versions, or, in a marker written before it had
// them, the version part of each fingerprint ("local+VERSION+HASH" of an
// in-process stage, "VERSION+SHA256" of a plugin).
func markerVersions(done cellDone) map[string]string {
	if done.Versions != nil {
		return done.Versions
	}
	out := make(map[string]string, len(done.Stages))
	for name, fp := range done.Stages {
		fp = strings.TrimPrefix(fp, "local+")
		if i := strings.IndexByte(fp, '+'); i >= 0 {
			fp = fp[:i]
		}
		out[name] = fp
	}
	return out
}
