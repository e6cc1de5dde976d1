package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/progress"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/stages/kit/attack"
)

// benchConfig is the file tcore bench reads (docs/BENCHMARK.md's matrix).
type benchConfig struct {
	Out       string            `json:"out"`       // results folder (default: runs/bench)
	Test      string            `json:"test"`      // clean test set, shared by the scenarios that name none
	Encoders  map[string]string `json:"encoders"`  // name -> ONNX file
	Pipelines []string          `json:"pipelines"` // built-in names or files; none first is best
	Rates     []float64         `json:"rates"`     // poison rates of scenarios with a recipe
	Seeds     []int64           `json:"seeds"`     // the defence's seeds: each cell runs once per seed (default [1])
	Ledger    string            `json:"ledger"`    // a ledger of finished runs (JSON Lines) that the bench reads and adds to (ledger.go)
	Scenarios []benchScenario   `json:"scenarios"`
}

// benchScenario is one row group: an encoder and training data, poisoned
// beforehand (truth given) or by a recipe at each rate.
type benchScenario struct {
	ID        string                     `json:"id"`
	Half      string                     `json:"half"`           // tuning or held-out (the zoo's split; "" outside it)
	Encoder   string                     `json:"encoder"`        // a key of encoders
	Train     string                     `json:"train"`          // training data
	Test      string                     `json:"test"`           // clean test set (default: the config's)
	PerClass  int                        `json:"per_class"`      // use only the first this many rows of each class (0: all)
	TestPer   int                        `json:"test_per_class"` // the same for the test set
	Params    map[string]json.RawMessage `json:"params"`         // stage parameters, "node.param": value (as tcore run --param)
	Truth     string                     `json:"truth"`          // its ground truth, if poisoned beforehand
	Poison    json.RawMessage            `json:"poison"`         // poison stage params (trigger, target, clean_label), applied at each rate
	Rates     []float64                  `json:"rates"`          // overrides the config's rates
	Eval      json.RawMessage            `json:"eval"`           // eval spec for the ASR
	Triggered string                     `json:"triggered"`      // or a triggered test set (non-target images with the trigger, labelled with the target): ASR = accuracy on it
	Pipelines []string                   `json:"pipelines"`      // overrides the config's pipelines
	Seeds     []int64                    `json:"seeds"`          // overrides the config's seeds
	// Reference names a scenario on clean data (run earlier in the
	// config) whose none model, trained without poison, measures this
	// cell's trigger too: the ASR a clean model shows (clean_asr), the
	// floor a defence can reach.
	Reference string `json:"reference"`
}

// benchRow is one run's result: a cell (scenario and rate), a pipeline
// and a seed.
type benchRow struct {
	Scenario  string   `json:"scenario"`
	Half      string   `json:"half,omitempty"`
	Rate      *float64 `json:"rate"`
	Pipeline  string   `json:"pipeline"`
	Seed      int64    `json:"seed"`
	ACC       *float64 `json:"acc"`
	ASR       *float64 `json:"asr"`
	SeedSet   string   `json:"seed_set"` // poisoned/rows
	Trusted   string   `json:"trusted"`  // poisoned/rows
	Kept      string   `json:"kept"`     // poisoned/rows
	Precision *float64 `json:"detector_precision"`
	Recall    *float64 `json:"detector_recall"`
	Masked    int      `json:"channels_masked"`
	ScanZ     *float64 `json:"scan_z"`
	CleanASR  *float64 `json:"clean_asr"` // the reference's clean model on this trigger
	// Twin is the scenario on clean data with the same encoder and
	// training set (cleanTwins): its none run is the accuracy a defence
	// is held to (the bar), shown beside each cell's mean.
	Twin string `json:"clean_twin,omitempty"`
	// ASRFrom says what ASR was measured on: "eval" (tcore painted the
	// trigger of the scenario's eval spec onto the test set's non-target
	// images), or the scenario's triggered test set.
	ASRFrom string  `json:"asr_from,omitempty"`
	Seconds float64 `json:"seconds"`
	Dir     string  `json:"dir,omitempty"`
	// Reused says the run was not run again: its folder held it
	// finished, or a ledger did.
	Reused bool `json:"reused,omitempty"`
}

func loadBenchConfig(path string, only []string, encodersOptional bool) (*benchConfig, error) {
	return readBenchConfig(path, fileExists, only, encodersOptional)
}

// readBenchConfig reads and checks a bench config, asking exists whether
// each file it names is there (a check of the config alone passes one that
// always says yes). With only (id prefixes, as --only takes them) the
// files are checked for the scenarios it selects alone, so that a cell
// runs while encoders of other cells are still to be made; only must
// select at least one scenario. With encodersOptional the encoder files
// need not exist (a ledger's table on any draw names them only).
func readBenchConfig(path string, exists func(string) bool, only []string, encodersOptional bool) (*benchConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("bench: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c benchConfig
	if err := dec.Decode(&c); err != nil {
		return nil, usagef("bench: %s: %v", path, err)
	}
	base := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	bad := func(field, format string, args ...any) error {
		return usagef("bench: %s: %s: %s", path, field, fmt.Sprintf(format, args...))
	}
	c.Out = rel(c.Out)
	c.Test = rel(c.Test)
	c.Ledger = rel(c.Ledger)
	if len(c.Pipelines) == 0 {
		c.Pipelines = []string{"none", "tcore"}
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{0.1}
	}
	if len(c.Seeds) == 0 {
		c.Seeds = []int64{1}
	}
	for k, v := range c.Encoders {
		c.Encoders[k] = rel(v)
	}
	if len(c.Scenarios) == 0 {
		return nil, bad("scenarios", "none given")
	}
	seen := map[string]bool{}
	checked := map[string]bool{} // encoders whose file was looked for
	selected := 0
	for i := range c.Scenarios {
		s := &c.Scenarios[i]
		at := fmt.Sprintf("scenarios[%d]", i)
		if s.ID == "" || strings.ContainsAny(s.ID, `/\ `) || seen[s.ID] {
			return nil, bad(at+".id", "%q: want a unique name without slashes or spaces", s.ID)
		}
		seen[s.ID] = true
		if s.Half != "" && s.Half != "tuning" && s.Half != "held-out" {
			return nil, bad(at+".half", "%q: want tuning, held-out or nothing", s.Half)
		}
		enc, ok := c.Encoders[s.Encoder]
		if !ok {
			return nil, bad(at+".encoder", "%q is not one of encoders", s.Encoder)
		}
		s.Train, s.Truth, s.Test, s.Triggered = rel(s.Train), rel(s.Truth), rel(s.Test), rel(s.Triggered)
		if s.Test == "" {
			s.Test = c.Test
		}
		if selects(only, s.ID) {
			selected++
			if !checked[s.Encoder] {
				checked[s.Encoder] = true
				if !exists(enc) && !encodersOptional {
					return nil, bad("encoders."+s.Encoder, "%s: no such file", enc)
				}
			}
			for field, f := range map[string]string{"train": s.Train, "truth": s.Truth, "test": s.Test, "triggered": s.Triggered} {
				if f != "" && !exists(f) {
					return nil, bad(at+"."+field, "%s: no such file", f)
				}
			}
		}
		if s.Test == "" {
			return nil, bad(at+".test", "missing (a clean test set, here or for the whole config)")
		}
		var err error
		if len(s.Eval) > 0 {
			if s.Eval, err = attack.ResolveImage(s.Eval, base); err != nil {
				return nil, bad(at+".eval", "%v", err)
			}
			if _, err := attack.ParseSpec(s.Eval); err != nil {
				return nil, bad(at+".eval", "%v", err)
			}
		}
		if s.Truth != "" && s.PerClass > 0 {
			return nil, bad(at+".per_class", "a scenario poisoned beforehand (truth) runs on its whole training set: the truth covers every row")
		}
		if len(s.Poison) > 0 {
			if s.Truth != "" {
				return nil, bad(at+".poison", "a scenario is poisoned beforehand (truth) or by a recipe (poison), not both")
			}
			if s.Poison, err = attack.ResolveImage(s.Poison, base); err != nil {
				return nil, bad(at+".poison", "%v", err)
			}
			if err := checkPoison(s.Poison); err != nil {
				return nil, bad(at+".poison", "%v", err)
			}
			if len(s.Rates) == 0 {
				s.Rates = c.Rates
			}
		}
		if len(s.Pipelines) == 0 {
			s.Pipelines = c.Pipelines
		}
		if len(s.Seeds) == 0 {
			s.Seeds = c.Seeds
		}
		if s.Reference != "" && !seen[s.Reference] {
			return nil, bad(at+".reference", "%q is not a scenario listed before this one", s.Reference)
		}
	}
	if selected == 0 {
		return nil, usagef("bench: %s: --only %s: no scenario's id starts with it", path, strings.Join(only, ","))
	}
	return &c, nil
}

// checkBenchParams checks every scenario's pipelines, with its params
// set, against the stages' specs (path is the config's file, for the
// error): an unknown pipeline, a node it lacks, a parameter a stage does
// not have or a value it refuses stops the bench before its first cell,
// not when that scenario's turn comes.
func checkBenchParams(path string, c *benchConfig, stages dag.Provider) error {
	for i, s := range c.Scenarios {
		bad := func(field string, err error) error {
			return usagef("bench: %s: scenarios[%d].%s (%s): %v", path, i, field, s.ID, err)
		}
		for _, p := range s.Pipelines {
			pl, err := pipelines.Resolve(p)
			if err != nil {
				return bad("pipelines", err)
			}
			if err := pl.Set(s.Params); err != nil {
				return bad("params", err)
			}
			if _, err := pl.Shape(stages); err != nil {
				return bad("params", err)
			}
		}
	}
	return nil
}

// pipelineDir is the folder a pipeline's run gets inside a bench cell or
// a demo: a built-in's name, or a pipeline file's name without ".json"
// (runs/cfg/tcore-x.json runs in tcore-x).
func pipelineDir(pl string) string {
	return strings.TrimSuffix(filepath.Base(pl), ".json")
}

// checkPoison validates a recipe as the poison stage would (rate aside).
func checkPoison(raw json.RawMessage) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	for k := range m {
		switch k {
		case "trigger", "target", "clean_label", "seed":
		default:
			return fmt.Errorf("%q is not a recipe field (trigger, target, clean_label, seed)", k)
		}
	}
	_, err := attack.ParseTrigger(m["trigger"], "trigger")
	return err
}

// cmdBench runs the benchmark matrix and writes results.md, .csv, .json.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c runConfig
	var cfgPath, only, ledgerPath string
	var ledgerOnly, anyDraw bool
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c.common.register(fs)
	fs.StringVar(&cfgPath, "config", "", "benchmark config (JSON; required)")
	fs.StringVar(&c.out, "out", "", "results folder (default: the config's out, then runs/bench); finished cells in it are reused")
	fs.StringVar(&only, "only", "", "run only the scenarios whose id starts with one of these (comma-separated)")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the stages inside this process instead of as plugins")
	fs.StringVar(&c.reuseFrom, "reuse-from", "", reuseFromDoc)
	fs.StringVar(&ledgerPath, "ledger", "", "ledger of finished runs (JSON Lines; default: the config's ledger): a run it holds under the same run key and stage versions is read from it, not run, and every finished run is added to it; a finished cell in the results folder counts by its stages' versions then, not by their builds")
	fs.BoolVar(&anyDraw, "any-draw", false, "a ledger row also stands for a run whose encoder is another file under the same name in the config (a zoo encoder rebuilt from its recipe is another draw of the same attack); its row keeps the sha256 of the draw it ran on")
	fs.BoolVar(&ledgerOnly, "ledger-only", false, "run no pipeline: the table of the runs the ledger and the results folder hold, and a list of those they lack")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfgPath == "" {
		return usagef("bench: --config is required")
	}
	var prefixes []string
	for _, p := range strings.Split(only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			prefixes = append(prefixes, p)
		}
	}
	cfg, err := loadBenchConfig(cfgPath, prefixes, ledgerOnly && anyDraw)
	if err != nil {
		return err
	}
	if c.out == "" {
		c.out = cfg.Out
	}
	if c.out == "" {
		c.out = filepath.Join("runs", "bench")
	}
	if err := c.check(); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	stages, err := c.provider(log)
	if err != nil {
		return err
	}
	if err := checkBenchParams(cfgPath, cfg, stages); err != nil {
		return err
	}
	if ledgerPath == "" {
		ledgerPath = cfg.Ledger
	}
	var led *ledger
	if ledgerPath != "" {
		if led, err = openLedger(ledgerPath); err != nil {
			return err
		}
	} else if ledgerOnly || anyDraw {
		return usagef("bench: --ledger-only and --any-draw need a ledger (--ledger, or the config's ledger)")
	}
	twins := cleanTwins(cfg.Scenarios)
	var fromLedger, recorded int
	var missing []string
	var rows []benchRow
	start := time.Now()
	refDir := map[string]string{} // scenario -> its none run (seed of the first run)
	for _, s := range cfg.Scenarios {
		if len(s.Poison) == 0 {
			refDir[s.ID] = filepath.Join(c.out, s.ID, "none", fmt.Sprintf("seed-%d", s.Seeds[0]))
		}
		if !selects(prefixes, s.ID) {
			continue
		}
		rates := []*float64{nil}
		if len(s.Poison) > 0 {
			rates = nil
			for _, r := range s.Rates {
				rates = append(rates, &r)
			}
		}
		if s.PerClass > 0 {
			sub := filepath.Join(c.out, s.ID+"-subset.arrow")
			if err := subset(ctx, s.Train, s.PerClass, sub); err != nil {
				return fmt.Errorf("bench: %s: %w", s.ID, err)
			}
			s.Train = sub
		}
		if s.TestPer > 0 {
			sub := filepath.Join(c.out, s.ID+"-test-subset.arrow")
			if err := subset(ctx, s.Test, s.TestPer, sub); err != nil {
				return fmt.Errorf("bench: %s: %w", s.ID, err)
			}
			s.Test = sub
		}
		for _, rate := range rates {
			cell := s.ID
			train, truth := s.Train, s.Truth
			if rate != nil {
				cell = fmt.Sprintf("%s-%g", s.ID, *rate)
				board := progress.New(stderr)
				train, truth, err = runner.Poison(ctx, stages, board, s.Train, s.Poison, *rate, 1, filepath.Join(c.out, cell, "poisoned"))
				board.Close()
				if err != nil {
					return fmt.Errorf("bench: %s: %w", cell, err)
				}
			}
			var cleanASR *float64
			if ref, ok := refDir[s.Reference]; ok && len(s.Eval) > 0 && fileExists(filepath.Join(ref, "clean_model.onnx")) {
				ev, err := runner.Eval{Model: filepath.Join(ref, "clean_model.onnx"), Data: s.Test, Device: c.device, Spec: s.Eval}.Run(ctx)
				if err != nil {
					return fmt.Errorf("bench: %s: the reference's clean model on this trigger: %w", cell, err)
				}
				cleanASR = ev.ASR
			}
			var cellRows []benchRow
			for _, pl := range s.Pipelines {
				name := pipelineDir(pl)
				for _, seed := range s.Seeds {
					dir := filepath.Join(c.out, cell, name, fmt.Sprintf("seed-%d", seed))
					row := benchRow{Scenario: s.ID, Half: s.Half, Rate: rate, Pipeline: name, Seed: seed, Dir: dir, CleanASR: cleanASR, Twin: twins[s.ID]}

					rc := c
					rc.out, rc.pipeline, rc.encoder, rc.train, rc.test, rc.truth, rc.seed, rc.spec = dir, pl, cfg.Encoders[s.Encoder], train, s.Test, truth, seed, s.Eval
					rc.params = s.Params
					at := fmt.Sprintf("%s / %s / seed %d", cell, name, seed)
					bp, err := rc.planCell(stages, s.Encoder)
					if err != nil {
						return fmt.Errorf("bench: %s: %w", at, err)
					}
					id := runID{Scenario: s.ID, Rate: rate, Pipeline: name, Seed: seed, Run: bp.key, Recipe: bp.recipe, Versions: bp.versions, Encoder: bp.encSum}
					sum, reused := rc.finishedCell(bp, led != nil)
					if !reused && led != nil {
						if lr, ok := led.find(id, anyDraw); ok {
							lr.Dir, lr.Reused, lr.Half, lr.Twin = dir, true, s.Half, twins[s.ID]
							if lr.CleanASR == nil {
								lr.CleanASR = cleanASR
							}
							fromLedger++
							fmt.Fprintf(stdout, "%-22s %-10s seed %d  ACC %s ASR %s  masked %d  ledger\n", cell, name, seed, pct(lr.ACC), pct(lr.ASR), lr.Masked)
							cellRows = append(cellRows, lr)
							continue
						}
					}
					if !reused {
						if ledgerOnly {
							missing = append(missing, at)
							continue
						}
						if sum, err = rc.benchCell(ctx, bp, stages, stderr); err != nil {
							return fmt.Errorf("bench: %s: %w", at, err)
						}
					}
					row.fill(sum)
					if row.ASR != nil {
						row.ASRFrom = asrFromEval
					}
					row.Seconds, row.Reused = sum.UncachedSeconds(), reused
					if s.Triggered != "" {
						// The triggered set holds the target's label alone: the
						// classifier's width is the run's class count.
						classes := 0
						if sum.Classes != nil {
							classes = sum.Classes.N
						}
						ev, err := runner.Eval{Model: filepath.Join(dir, "clean_model.onnx"), Data: s.Triggered, Device: c.device, Classes: classes}.Run(ctx)
						if err != nil {
							return fmt.Errorf("bench: %s / %s: ASR on %s: %w", cell, name, s.Triggered, err)
						}
						row.ASR, row.ASRFrom = &ev.ACC, s.Triggered
					}
					if led != nil {
						added, err := led.record(id, row)
						if err != nil {
							return err
						}
						if added {
							recorded++
						}
					}
					state := fmt.Sprintf("%.0fs", row.Seconds)
					if reused {
						state = "reused"
					}
					fmt.Fprintf(stdout, "%-22s %-10s seed %d  ACC %s ASR %s  masked %d  %s\n", cell, name, seed, pct(row.ACC), pct(row.ASR), row.Masked, state)
					cellRows = append(cellRows, row)
				}
			}
			// none first: every defence is read against it
			sort.SliceStable(cellRows, func(a, b int) bool { return cellRows[a].Pipeline == "none" && cellRows[b].Pipeline != "none" })
			rows = append(rows, cellRows...)
		}
	}
	if err := writeBench(c.out, rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s\nresults: %s (.csv, .json); %.0f s\n", benchMarkdown(rows), filepath.Join(c.out, "results.md"), time.Since(start).Seconds())
	if led != nil {
		fmt.Fprintf(stdout, "ledger %s: %d runs read from it, %d added to it", ledgerPath, fromLedger, recorded)
		if ledgerOnly {
			fmt.Fprintf(stdout, ", %d not run yet", len(missing))
		}
		fmt.Fprintln(stdout)
		for _, m := range missing {
			fmt.Fprintf(stdout, "  not run: %s\n", m)
		}
	}
	return nil
}

// cleanTwins maps each scenario to its clean twin: the first scenario
// of the config on clean data (no poison, no truth) with the same encoder,
// training and test sets and per-class cut (a T1 cell is its own twin, a
// T3 cell's is the T1 cell of its encoder, a T2 cell's the T0 cell of its
// dataset). A scenario without one is left out.
func cleanTwins(scs []benchScenario) map[string]string {
	out := map[string]string{}
	for _, s := range scs {
		for _, t := range scs {
			if len(t.Poison) == 0 && t.Truth == "" && t.Encoder == s.Encoder && t.Train == s.Train &&
				t.Test == s.Test && t.PerClass == s.PerClass && t.TestPer == s.TestPer {
				out[s.ID] = t.ID
				break
			}
		}
	}
	return out
}

// selects says whether --only's prefixes select the scenario id: every
// id when there are none, else the ids starting with one of them.
func selects(prefixes []string, id string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if p != "" && strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// cellDone marks a finished cell.
type cellDone struct {
	Seconds float64 `json:"seconds"`
	// Stages are the fingerprints of the pipeline's stages (a binary's
	// sha256, an in-process stage's version): a finished cell is reused
	// only while they stay the same.
	Stages map[string]string `json:"stages"`
	// Versions are the stages' versions (what a ledger compares;
	// markerVersions reads them from Stages in older markers).
	Versions map[string]string `json:"versions,omitempty"`
	// Run identifies what the cell ran (runKeys): the pipeline with the
	// scenario's params, the seed, the eval spec and the files by content.
	// A cell is reused only while it stays the same too.
	Run string `json:"run"`
}

// runKeys identifies what a bench cell runs: the pipeline p with its
// params, the seed, the device, the eval spec, and the training, test,
// encoder and truth files by content (key: a file rebuilt at the same
// path is another run). recipe is the same with the encoder counted by its
// name in the config (encoderAs) instead of its content, which a rebuilt
// draw of the same zoo encoder shares (ledger --any-draw); encSum is the
// encoder's sha256 ("" when the file is not there, which only a ledger's
// table on any draw allows). Each file is read once.
func (c *runConfig) runKeys(p *dag.Pipeline, encoderAs string) (key, recipe, encSum string, err error) {
	hk, hr := sha256.New(), sha256.New()
	ek, er := json.NewEncoder(hk), json.NewEncoder(hr)
	head := []any{p, c.seed, c.device, string(c.spec)}
	if err := ek.Encode(head); err != nil {
		return "", "", "", err
	}
	er.Encode(head)
	for _, f := range []string{c.train, c.test, c.encoder, c.truth} {
		sum := ""
		switch {
		case f == c.encoder && !fileExists(f):
			sum = "no encoder file"
		case f != "":
			if sum, err = dag.HashPath(f); err != nil {
				return "", "", "", err
			}
		}
		ek.Encode(sum)
		if f == c.encoder {
			encSum = sum
			sum = "encoder " + encoderAs
		}
		er.Encode(sum)
	}
	if encSum == "no encoder file" {
		encSum = ""
	}
	return hex.EncodeToString(hk.Sum(nil)), hex.EncodeToString(hr.Sum(nil)), encSum, nil
}

// fingerprints returns the fingerprints of the stages p's nodes run.
func fingerprints(p *dag.Pipeline, stages dag.Provider) map[string]string {
	out := map[string]string{}
	for _, n := range p.Nodes {
		if n.Stage != "" {
			out[n.Stage] = stages.Fingerprint(n.Stage)
		}
	}
	return out
}

// cellPlan is what a bench cell is to run: the pipeline, and what
// identifies the run (the stages' fingerprints and versions, runKeys).
type cellPlan struct {
	p                   *dag.Pipeline
	fp, versions        map[string]string
	key, recipe, encSum string
}

// planCell resolves the cell's pipeline and identifies its run; encoder
// is the encoder's name in the config (for the recipe key).
func (c *runConfig) planCell(stages dag.Provider, encoder string) (*cellPlan, error) {
	p, err := c.resolvePipeline()
	if err != nil {
		return nil, err
	}
	key, recipe, encSum, err := c.runKeys(p, encoder)
	if err != nil {
		return nil, err
	}
	return &cellPlan{p: p, fp: fingerprints(p, stages), versions: versions(p, stages), key: key, recipe: recipe, encSum: encSum}, nil
}

// finishedCell returns the summary of the cell's finished run in its
// folder, if the folder holds the run planned: the same run key, and the
// same stage fingerprints (byVersion: the same stage versions).
func (c *runConfig) finishedCell(bp *cellPlan, byVersion bool) (*report.Summary, bool) {
	b, err := os.ReadFile(filepath.Join(c.out, "cell.json"))
	if err != nil {
		return nil, false
	}
	var done cellDone
	if json.Unmarshal(b, &done) != nil || done.Run != bp.key {
		return nil, false
	}
	same := maps.Equal(done.Stages, bp.fp)
	if byVersion {
		same = maps.Equal(markerVersions(done), bp.versions)
	}
	if !same {
		return nil, false
	}
	s, err := report.ReadSummary(c.out)
	if err != nil {
		return nil, false
	}
	s.Seconds = done.Seconds
	return s, true
}

// benchCell runs the planned cell and marks it finished.
func (c *runConfig) benchCell(ctx context.Context, bp *cellPlan, stages dag.Provider, stderr io.Writer) (*report.Summary, error) {
	board := progress.New(stderr)
	defer board.Close()
	seed := c.seed
	r := &runner.Run{Pipeline: bp.p, Stages: stages, Observer: board, Train: c.train, Test: c.test,
		Bindings: dag.Bindings{Encoder: c.encoder, Device: c.device, Seed: &seed}, Out: c.out, Spec: c.spec, Truth: c.truth, StageTimeout: c.timeout}
	s, err := r.Execute(ctx)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(cellDone{Seconds: s.Seconds, Stages: bp.fp, Versions: bp.versions, Run: bp.key})
	return s, arrowio.WriteFileAtomic(filepath.Join(c.out, "cell.json"), b)
}

func (r *benchRow) fill(s *report.Summary) {
	r.ACC, r.ASR = s.ACC, s.ASR
	set := func(name string, n int) string {
		if v, ok := s.Set(name); ok {
			return fmt.Sprintf("%d/%d", v.Poisoned, v.N)
		}
		if n > 0 {
			return fmt.Sprintf("?/%d", n)
		}
		return ""
	}
	r.SeedSet, r.Trusted, r.Kept = set("seed", s.Samples.Seed), set("trusted", s.Samples.Trusted), set("kept", s.Samples.Kept)
	if ev := s.Evaluation; ev != nil && ev.Detector != nil {
		r.Precision, r.Recall = &ev.Detector.Precision, &ev.Detector.Recall
	}
	r.Masked = s.Channels.Filtered
	if sc := s.EncoderScan; sc != nil {
		r.ScanZ = &sc.BestZ
	}
}

// dash is s, or "—" for an empty table cell.
func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func pct(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.1f", 100**v)
}

func ratio(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f", *v)
}

var benchHeader = []string{"scenario", "half", "rate", "pipeline", "seed", "ACC %", "ASR %", "seed poisoned/n", "trusted poisoned/n", "kept poisoned/n", "not-kept precision", "not-kept recall", "channels masked", "scan z", "seconds"}

func (r benchRow) cells() []string {
	rate := dash(rateString(r.Rate))
	z := "—"
	if r.ScanZ != nil {
		z = fmt.Sprintf("%.1f", *r.ScanZ)
	}
	return []string{r.Scenario, dash(r.Half), rate, r.Pipeline, strconv.FormatInt(r.Seed, 10), pct(r.ACC), pct(r.ASR), dash(r.SeedSet), dash(r.Trusted), dash(r.Kept),
		ratio(r.Precision), ratio(r.Recall), strconv.Itoa(r.Masked), z, fmt.Sprintf("%.0f", r.Seconds)}
}

// aggregate is one cell and pipeline over its seeds.
type aggregate struct {
	Scenario, Half, Pipeline, Twin string
	Rate                           *float64
	Seeds                          int
	ACC, ASR, Masked               []float64
	CleanASR                       *float64
}

// meanSD formats values (fractions, shown as %) as mean ± sd.
func meanSD(v []float64, scale float64, digits int) string {
	if len(v) == 0 {
		return "—"
	}
	var sq float64
	m := mean(v) * scale
	for _, x := range v {
		sq += (x*scale - m) * (x*scale - m)
	}
	if len(v) == 1 {
		return strconv.FormatFloat(m, 'f', digits, 64)
	}
	return fmt.Sprintf("%.*f ± %.*f", digits, m, digits, math.Sqrt(sq/float64(len(v)-1)))
}

// mean is the mean of v (not empty).
func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// aggregates groups rows by cell and pipeline, in row order.
func aggregates(rows []benchRow) []*aggregate {
	var out []*aggregate
	idx := map[string]*aggregate{}
	for _, r := range rows {
		key := r.Scenario + "\x00" + rateString(r.Rate) + "\x00" + r.Pipeline
		a, ok := idx[key]
		if !ok {
			a = &aggregate{Scenario: r.Scenario, Half: r.Half, Pipeline: r.Pipeline, Rate: r.Rate, Twin: r.Twin}
			idx[key] = a
			out = append(out, a)
		}
		a.Seeds++
		if r.CleanASR != nil {
			a.CleanASR = r.CleanASR
		}
		if r.ACC != nil {
			a.ACC = append(a.ACC, *r.ACC)
		}
		if r.ASR != nil {
			a.ASR = append(a.ASR, *r.ASR)
		}
		a.Masked = append(a.Masked, float64(r.Masked))
	}
	return out
}

// benchMarkdown is the results table, mean ± sd over seeds per cell and
// pipeline (with the change of the mean ACC against the clean twin's
// none, in points), then every run.
func benchMarkdown(rows []benchRow) string {
	var b strings.Builder
	b.WriteString("| scenario | half | rate | pipeline | seeds | ACC % | ACC vs clean `none` | ASR % | clean-model ASR % | channels masked |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	aggs := aggregates(rows)
	cleanNone := map[string][]float64{} // clean twin -> its none runs' ACC
	for _, a := range aggs {
		if a.Pipeline == "none" && a.Rate == nil && a.Twin == a.Scenario {
			cleanNone[a.Scenario] = a.ACC
		}
	}
	for _, a := range aggs {
		rate, half := dash(rateString(a.Rate)), dash(a.Half)
		change := "—"
		if ref := cleanNone[a.Twin]; len(ref) > 0 && len(a.ACC) > 0 && !(a.Pipeline == "none" && a.Twin == a.Scenario && a.Rate == nil) {
			change = fmt.Sprintf("%+.2f", 100*(mean(a.ACC)-mean(ref)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", a.Scenario, half, rate, a.Pipeline, a.Seeds,
			meanSD(a.ACC, 100, 1), change, meanSD(a.ASR, 100, 1), pct(a.CleanASR), meanSD(a.Masked, 1, 0))
	}
	b.WriteString(asrNote(rows))
	b.WriteString("\nEvery run:\n\n| " + strings.Join(benchHeader, " | ") + " |\n|")
	for range benchHeader {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return b.String()
}

// asrFromEval is a row's ASRFrom when tcore painted the eval spec's
// trigger (the alternative is the triggered test set's path).
const asrFromEval = "eval"

// asrNote says what the ASR column was measured on: the trigger painted
// from the eval spec, or a scenario's triggered test set (the two can
// differ for the same attack), naming the scenarios of each.
func asrNote(rows []benchRow) string {
	var order []string
	by := map[string][]string{}
	for _, r := range rows {
		if r.ASRFrom == "" {
			continue
		}
		if _, ok := by[r.ASRFrom]; !ok {
			order = append(order, r.ASRFrom)
		}
		if l := by[r.ASRFrom]; len(l) == 0 || l[len(l)-1] != r.Scenario {
			by[r.ASRFrom] = append(l, r.Scenario)
		}
	}
	if len(order) == 0 {
		return ""
	}
	var parts []string
	for _, from := range order {
		what := "the trigger of its eval spec painted by tcore onto the test set's non-target images"
		if from != asrFromEval {
			what = "the triggered test set " + filepath.Base(from)
		}
		parts = append(parts, fmt.Sprintf("%s: %s", strings.Join(by[from], ", "), what))
	}
	return "\nASR % is the accuracy, against the target label, on non-target test images carrying the trigger; " + strings.Join(parts, "; ") + ".\n"
}

func writeBench(dir string, rows []benchRow) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var cb bytes.Buffer
	w := csv.NewWriter(&cb)
	if err := w.Write(benchHeader); err != nil {
		return err
	}
	for _, r := range rows {
		if err := w.Write(r.cells()); err != nil {
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	jb, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"results.md": []byte(benchMarkdown(rows)), "results.csv": cb.Bytes(), "results.json": append(jb, '\n')} {
		if err := arrowio.WriteFileAtomic(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	return nil
}

// subset writes the first perClass rows of each class of a dataset to dst
// (Arrow IPC, images/v1), unless dst exists.
func subset(ctx context.Context, src string, perClass int, dst string) error {
	if fileExists(dst) {
		return nil
	}
	r, err := arrowio.OpenDataset(ctx, src, arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer r.Release()
	b := array.NewRecordBuilder(memory.DefaultAllocator, r.Schema())
	defer b.Release()
	count := map[int32]int{}
	for r.Next() {
		rec := r.Record()
		ids, ls, im := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Int32), rec.Column(2).(*array.Binary)
		for i := 0; i < ids.Len(); i++ {
			if count[ls.Value(i)] >= perClass {
				continue
			}
			count[ls.Value(i)]++
			b.Field(0).(*array.Uint64Builder).Append(ids.Value(i))
			b.Field(1).(*array.Int32Builder).Append(ls.Value(i))
			b.Field(2).(*array.BinaryBuilder).Append(im.Value(i))
		}
	}
	if err := r.Err(); err != nil {
		return err
	}
	rec := b.NewRecord()
	defer rec.Release()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rr, err := array.NewRecordReader(rec.Schema(), []arrow.Record{rec})
	if err != nil {
		return err
	}
	defer rr.Release()
	_, err = arrowio.WriteIPCFile(dst, rr)
	return err
}
