package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/progress"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/stages/kit/attack"
)

// benchConfig is the file tcore bench reads (BENCHMARK.md's matrix).
type benchConfig struct {
	Out       string            `json:"out"`       // results folder (default: runs/bench)
	Test      string            `json:"test"`      // clean test set, shared by every scenario
	Encoders  map[string]string `json:"encoders"`  // name -> ONNX file
	Pipelines []string          `json:"pipelines"` // built-in names or files; none first is best
	Rates     []float64         `json:"rates"`     // poison rates of scenarios with a recipe
	Scenarios []benchScenario   `json:"scenarios"`
}

// benchScenario is one row group: an encoder and training data, poisoned
// beforehand (truth given) or by a recipe at each rate.
type benchScenario struct {
	ID        string          `json:"id"`
	Encoder   string          `json:"encoder"`   // a key of encoders
	Train     string          `json:"train"`     // training data
	PerClass  int             `json:"per_class"` // use only the first this many rows of each class (0: all)
	Truth     string          `json:"truth"`     // its ground truth, if poisoned beforehand
	Poison    json.RawMessage `json:"poison"`    // poison stage params (trigger, target, clean_label), applied at each rate
	Rates     []float64       `json:"rates"`     // overrides the config's rates
	Eval      json.RawMessage `json:"eval"`      // eval spec for the ASR
	Triggered string          `json:"triggered"` // or a triggered test set (non-target images with the trigger, labelled with the target): ASR = accuracy on it
	Pipelines []string        `json:"pipelines"` // overrides the config's pipelines
}

// benchRow is one cell's result.
type benchRow struct {
	Scenario  string   `json:"scenario"`
	Rate      *float64 `json:"rate"`
	Pipeline  string   `json:"pipeline"`
	ACC       *float64 `json:"acc"`
	ASR       *float64 `json:"asr"`
	Seed      string   `json:"seed"`    // poisoned/rows
	Trusted   string   `json:"trusted"` // poisoned/rows
	Kept      string   `json:"kept"`    // poisoned/rows
	Precision *float64 `json:"detector_precision"`
	Recall    *float64 `json:"detector_recall"`
	Masked    int      `json:"channels_masked"`
	Seconds   float64  `json:"seconds"`
	Dir       string   `json:"dir"`
	Reused    bool     `json:"reused"`
}

func loadBenchConfig(path string) (*benchConfig, error) {
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
	if c.Test = rel(c.Test); c.Test == "" {
		return nil, bad("test", "missing (a clean test set)")
	}
	if len(c.Pipelines) == 0 {
		c.Pipelines = []string{"none", "tcore"}
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{0.1}
	}
	for k, v := range c.Encoders {
		c.Encoders[k] = rel(v)
		if !fileExists(c.Encoders[k]) {
			return nil, bad("encoders."+k, "%s: no such file", c.Encoders[k])
		}
	}
	if len(c.Scenarios) == 0 {
		return nil, bad("scenarios", "none given")
	}
	seen := map[string]bool{}
	for i := range c.Scenarios {
		s := &c.Scenarios[i]
		at := fmt.Sprintf("scenarios[%d]", i)
		if s.ID == "" || strings.ContainsAny(s.ID, `/\ `) || seen[s.ID] {
			return nil, bad(at+".id", "%q: want a unique name without slashes or spaces", s.ID)
		}
		seen[s.ID] = true
		if _, ok := c.Encoders[s.Encoder]; !ok {
			return nil, bad(at+".encoder", "%q is not one of encoders", s.Encoder)
		}
		s.Train, s.Truth = rel(s.Train), rel(s.Truth)
		if !fileExists(s.Train) {
			return nil, bad(at+".train", "%s: no such file", s.Train)
		}
		if s.Truth != "" && !fileExists(s.Truth) {
			return nil, bad(at+".truth", "%s: no such file", s.Truth)
		}
		if s.Triggered = rel(s.Triggered); s.Triggered != "" && !fileExists(s.Triggered) {
			return nil, bad(at+".triggered", "%s: no such file", s.Triggered)
		}
		if len(s.Eval) > 0 {
			if _, err := attack.ParseSpec(s.Eval); err != nil {
				return nil, bad(at+".eval", "%v", err)
			}
		}
		if len(s.Poison) > 0 {
			if s.Truth != "" {
				return nil, bad(at+".poison", "a scenario is poisoned beforehand (truth) or by a recipe (poison), not both")
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
		for _, p := range s.Pipelines {
			if _, err := pipelines.Resolve(p); err != nil {
				return nil, bad(at+".pipelines", "%v", err)
			}
		}
	}
	return &c, nil
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
	var cfgPath string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c.common.register(fs)
	fs.StringVar(&cfgPath, "config", "", "benchmark config (JSON; required)")
	fs.StringVar(&c.out, "out", "", "results folder (default: the config's out, then runs/bench); finished cells in it are reused")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the stages inside this process instead of as plugins")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfgPath == "" {
		return usagef("bench: --config is required")
	}
	cfg, err := loadBenchConfig(cfgPath)
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
	c.test, c.seed = cfg.Test, 1
	var rows []benchRow
	start := time.Now()
	for _, s := range cfg.Scenarios {
		rates := []*float64{nil}
		if len(s.Poison) > 0 {
			rates = nil
			for _, r := range s.Rates {
				r := r
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
		for _, rate := range rates {
			cell := s.ID
			train, truth := s.Train, s.Truth
			if rate != nil {
				cell = fmt.Sprintf("%s-%g", s.ID, *rate)
				var err error
				if train, truth, err = c.poisonFor(ctx, log, s, *rate, filepath.Join(c.out, cell, "poisoned"), stderr); err != nil {
					return fmt.Errorf("bench: %s: %w", cell, err)
				}
			}
			var specPath string
			if len(s.Eval) > 0 {
				specPath = filepath.Join(c.out, cell, "eval.json")
				os.MkdirAll(filepath.Dir(specPath), 0o755)
				if err := os.WriteFile(specPath, s.Eval, 0o644); err != nil {
					return err
				}
			}
			var cellRows []benchRow
			for _, pl := range s.Pipelines {
				name := strings.TrimSuffix(filepath.Base(pl), ".json")
				dir := filepath.Join(c.out, cell, name)
				row := benchRow{Scenario: s.ID, Rate: rate, Pipeline: name, Dir: dir}
				rep, reused, secs, err := c.benchCell(ctx, dir, pl, cfg.Encoders[s.Encoder], train, truth, specPath, stderr)
				if err != nil {
					return fmt.Errorf("bench: %s / %s: %w", cell, name, err)
				}
				row.fill(rep)
				row.Seconds, row.Reused = secs, reused
				if s.Triggered != "" {
					ev, err := evalRun{model: filepath.Join(dir, "clean_model.onnx"), data: s.Triggered, device: c.device, batch: 256}.run(ctx)
					if err != nil {
						return fmt.Errorf("bench: %s / %s: ASR on %s: %w", cell, name, s.Triggered, err)
					}
					row.ASR = &ev.ACC
				}
				state := fmt.Sprintf("%.0fs", secs)
				if reused {
					state = "reused"
				}
				fmt.Fprintf(stdout, "%-14s %-10s ACC %s ASR %s  %s\n", cell, name, pct(row.ACC), pct(row.ASR), state)
				cellRows = append(cellRows, row)
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
	return nil
}

// poisonFor plants the scenario's recipe at rate (a cached DAG run) and
// returns the poisoned images and their truth.
func (c *runConfig) poisonFor(ctx context.Context, log zerolog.Logger, s benchScenario, rate float64, dir string, stderr io.Writer) (string, string, error) {
	var recipe map[string]json.RawMessage
	json.Unmarshal(s.Poison, &recipe)
	recipe["rate"], _ = json.Marshal(rate)
	params, _ := json.Marshal(recipe)
	p, _ := pipelines.Get("poison")
	for i := range p.Nodes {
		if p.Nodes[i].Stage == "poison" {
			p.Nodes[i].Params = params
		}
	}
	stages, err := c.provider(log)
	if err != nil {
		return "", "", err
	}
	if err := c.bindFlags(p, stages); err != nil {
		return "", "", err
	}
	board := progress.New(stderr)
	res, err := (&dag.Runner{Stages: stages, Observer: board}).Run(ctx, p, map[string]string{"train": s.Train}, dir)
	board.Close()
	if err != nil {
		return "", "", err
	}
	images, _ := res.OutputPath("poison", "images")
	truth, _ := res.OutputPath("poison", "truth")
	return images, truth, nil
}

// cellDone marks a finished cell: its report plus the seconds it took.
type cellDone struct {
	Seconds float64 `json:"seconds"`
}

// benchCell runs one pipeline on one scenario, or reuses the finished cell.
func (c *runConfig) benchCell(ctx context.Context, dir, pipeline, encoder, train, truth, spec string, stderr io.Writer) (map[string]any, bool, float64, error) {
	marker := filepath.Join(dir, "cell.json")
	if b, err := os.ReadFile(marker); err == nil {
		var done cellDone
		rb, rerr := os.ReadFile(filepath.Join(dir, "report.json"))
		var rep map[string]any
		if json.Unmarshal(b, &done) == nil && rerr == nil && json.Unmarshal(rb, &rep) == nil {
			return rep, true, done.Seconds, nil
		}
	}
	rc := *c
	rc.out, rc.pipeline, rc.encoder, rc.train, rc.truth, rc.evalSpec = dir, pipeline, encoder, train, truth, spec
	start := time.Now()
	if err := rc.execute(ctx, io.Discard, stderr); err != nil {
		return nil, false, 0, err
	}
	secs := time.Since(start).Seconds()
	b, _ := json.Marshal(cellDone{Seconds: secs})
	af, err := arrowio.CreateAtomic(marker)
	if err != nil {
		return nil, false, 0, err
	}
	af.Write(b)
	if err := af.Commit(); err != nil {
		return nil, false, 0, err
	}
	return rc.last.Report, false, secs, nil
}

func (r *benchRow) fill(rep map[string]any) {
	if v, ok := report.Num(rep, "acc"); ok {
		r.ACC = &v
	}
	if v, ok := report.Num(rep, "asr"); ok {
		r.ASR = &v
	}
	set := func(name string) string {
		n, ok := report.Num(rep, "evaluation", "sets", name, "n")
		p, _ := report.Num(rep, "evaluation", "sets", name, "poisoned")
		if !ok {
			if n, ok := report.Num(rep, "samples", name); ok {
				return fmt.Sprintf("?/%d", int(n))
			}
			return ""
		}
		return fmt.Sprintf("%d/%d", int(p), int(n))
	}
	r.Seed, r.Trusted, r.Kept = set("seed"), set("trusted"), set("kept")
	if v, ok := report.Num(rep, "evaluation", "detector", "precision"); ok {
		r.Precision = &v
	}
	if v, ok := report.Num(rep, "evaluation", "detector", "recall"); ok {
		r.Recall = &v
	}
	m, _ := report.Num(rep, "channels", "filtered")
	r.Masked = int(m)
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

var benchHeader = []string{"scenario", "rate", "pipeline", "ACC %", "ASR %", "seed poisoned/n", "trusted poisoned/n", "kept poisoned/n", "not-kept precision", "not-kept recall", "channels masked", "seconds"}

func (r benchRow) cells() []string {
	rate := "—"
	if r.Rate != nil {
		rate = strconv.FormatFloat(*r.Rate, 'g', -1, 64)
	}
	dash := func(s string) string {
		if s == "" {
			return "—"
		}
		return s
	}
	return []string{r.Scenario, rate, r.Pipeline, pct(r.ACC), pct(r.ASR), dash(r.Seed), dash(r.Trusted), dash(r.Kept),
		ratio(r.Precision), ratio(r.Recall), strconv.Itoa(r.Masked), fmt.Sprintf("%.0f", r.Seconds)}
}

func benchMarkdown(rows []benchRow) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(benchHeader, " | ") + " |\n|")
	for range benchHeader {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return b.String()
}

func writeBench(dir string, rows []benchRow) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var cb bytes.Buffer
	w := csv.NewWriter(&cb)
	w.Write(benchHeader)
	for _, r := range rows {
		w.Write(r.cells())
	}
	w.Flush()
	jb, _ := json.MarshalIndent(rows, "", "  ")
	for name, data := range map[string][]byte{"results.md": []byte(benchMarkdown(rows)), "results.csv": cb.Bytes(), "results.json": append(jb, '\n')} {
		af, err := arrowio.CreateAtomic(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if _, err := af.Write(data); err != nil {
			af.Abort()
			return err
		}
		if err := af.Commit(); err != nil {
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
