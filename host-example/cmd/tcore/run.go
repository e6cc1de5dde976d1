package main

import (
	"context"

	"encoding/json"
	"flag"
	"fmt"
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/rs/zerolog"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/progress"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/evaluate"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// inProcess lists the stages the CLI can run inside its own process
// (--in-process), for debugging without plugin binaries.
func inProcess() dag.InProcess { return dag.InProcess(builtin.Stages()) }

// runConfig is one `tcore run`.
type runConfig struct {
	common
	train, test, encoder, out string
	pipeline, evalSpec, truth string
	spec                      json.RawMessage
	seed                      int64
	inProcess                 bool
	imageCol, labelCol        string
	last                      *report.Run // what the last execute wrote
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.common.register(fs)
	fs.StringVar(&c.train, "train", "", "training dataset: Parquet, Arrow IPC or image folder (required)")
	fs.StringVar(&c.test, "test", "", "clean test dataset")
	fs.StringVar(&c.encoder, "encoder", "", "pre-trained encoder (ONNX)")
	fs.StringVar(&c.out, "out", "", "run folder (required); finished nodes in it are reused")
	fs.StringVar(&c.pipeline, "pipeline", "tcore", "built-in pipeline ("+strings.Join(pipelines.Names(), ", ")+") or a pipeline JSON file")
	fs.StringVar(&c.evalSpec, "eval", "", "eval spec (JSON file: target and trigger) for the attack success rate on --test")
	fs.StringVar(&c.truth, "truth", "", "ground truth of --train (truth.csv or a truth/v1 file): purity of the seed, trusted and kept sets")
	fs.Int64Var(&c.seed, "seed", 1, "random seed")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the stages inside this process instead of as plugins")
	fs.StringVar(&c.imageCol, "image-col", "", "image column of the datasets (default: detected)")
	fs.StringVar(&c.labelCol, "label-col", "", "label column of the datasets (default: label or labels)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.train == "" || c.out == "" {
		return usagef("run: --train and --out are required")
	}
	return c.execute(ctx, stdout, stderr)
}

func (c *runConfig) execute(ctx context.Context, stdout, stderr io.Writer) error {
	start := time.Now()
	if err := c.check(); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	p, err := pipelines.Resolve(c.pipeline)
	if err != nil {
		return err
	}
	inputs := map[string]string{}
	given := map[string]string{"train": c.train, "test": c.test}
	for _, name := range p.Inputs() {
		v, known := given[name]
		if !known {
			return usagef("run: pipeline %q needs input %q, which tcore run does not provide (inputs: train, test)", p.Name, name)
		}
		if v == "" {
			return usagef("run: pipeline %q needs --%s", p.Name, name)
		}
		if _, err := os.Stat(v); err != nil {
			return usagef("run: --%s: %v", name, err)
		}
		inputs[name] = v
	}
	if c.evalSpec != "" {
		if c.spec, err = readSpec(c.evalSpec); err != nil {
			return err
		}
	}
	if c.truth != "" && !fileExists(c.truth) {
		return usagef("run: --truth: %s: no such file", c.truth)
	}
	if c.encoder != "" {
		if _, err := os.Stat(c.encoder); err != nil {
			return usagef("run: --encoder: %v", err)
		}
	}
	stages, err := c.provider(log)
	if err != nil {
		return err
	}
	if err := c.bindFlags(p, stages); err != nil {
		return err
	}
	board := progress.New(stderr)
	r := &dag.Runner{Stages: stages, Observer: board,
		Read: arrowio.ReadOptions{ImageCol: c.imageCol, LabelCol: c.labelCol}}
	res, err := r.Run(ctx, p, inputs, c.out)
	board.Close()
	if err != nil {
		return err
	}
	rep, err := writeReport(ctx, c, p, res)
	if err != nil {
		return err
	}
	run, err := report.Load(res.Dir, c.truth)
	if err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	run.Seconds = time.Since(start).Seconds()
	if err := report.Write(filepath.Join(res.Dir, "report.html"), []*report.Run{run}); err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	c.last = run
	printSummary(stdout, rep, res)
	return nil
}

// provider runs stages in process (--in-process) or as the manifest's
// plugins. Either way ONNX Runtime comes from the one setting --ort-lib
// (else TCORE_ORT_LIB, else the fetched copy): initialised here for stages
// in this process, handed to plugin processes in their environment.
func (c *runConfig) provider(log zerolog.Logger) (dag.Provider, error) {
	if c.inProcess {
		if err := ort.Init(c.ortLib); err != nil && c.ortLib != "" {
			return nil, usagef("--ort-lib: %v", err)
		}
		return inProcess(), nil
	}
	cat, err := loadCatalog(c.manifest)
	if err != nil {
		return nil, err
	}
	var env []string
	if e, err := ort.Env(c.ortLib); err == nil {
		env = append(env, e)
	} else if c.ortLib != "" {
		return nil, usagef("--ort-lib: %v", err)
	}
	return dag.Plugins{Catalog: cat, Log: log, Env: env}, nil
}

// bindFlags gives the pipeline's stage parameters what the command line
// says, by role: the encoder (--encoder), device (--device), seed (--seed)
// and the classifier's place in the run folder, unless the pipeline sets
// them.
func (c *runConfig) bindFlags(p *dag.Pipeline, stages dag.Provider) error {
	seed := c.seed
	return p.Bind(stages, dag.Bindings{Encoder: c.encoder, Device: c.device, Seed: &seed,
		Export: filepath.Join(c.out, "clean_model.onnx"), RunDir: c.out})
}

// report is report.json.
type runReport struct {
	Pipeline    string             `json:"pipeline"`
	Seed        int64              `json:"seed"`
	ACC         *float64           `json:"acc"`
	ASR         *float64           `json:"asr"`
	Evaluation  *evaluate.Result   `json:"evaluation,omitempty"`
	Samples     map[string]int     `json:"samples"`
	Channels    map[string]int     `json:"channels"`
	EncoderScan any                `json:"encoder_scan"`
	Inputs      map[string]string  `json:"inputs"`
	Encoder     string             `json:"encoder,omitempty"`
	Model       string             `json:"model,omitempty"`
	TimingsS    map[string]float64 `json:"timings_s"`
	Reused      []string           `json:"reused_nodes"`
	Nodes       map[string]any     `json:"nodes"`
}

func writeReport(ctx context.Context, c *runConfig, p *dag.Pipeline, res *dag.Result) (*runReport, error) {
	rep := &runReport{Pipeline: p.Name, Seed: c.seed, Inputs: map[string]string{"train": c.train, "test": c.test},
		Encoder: c.encoder, TimingsS: map[string]float64{}, Reused: []string{}, Nodes: map[string]any{},
		Samples: map[string]int{}, Channels: map[string]int{"total": 0, "filtered": 0}}
	for _, id := range res.Order {
		n := res.Nodes[id]
		rep.TimingsS[id] = n.Seconds
		if n.Cached {
			rep.Reused = append(rep.Reused, id)
		}
		rep.Nodes[id] = map[string]any{"stage": n.Stage, "metrics": n.Metrics, "outputs": n.Outputs}
		if scan, ok := n.Metrics["encoder_scan"]; ok {
			rep.EncoderScan = scan
		}
	}
	counts, err := writeSamples(res)
	if err != nil {
		return nil, err
	}
	rep.Samples = counts
	if rep.Channels, err = writeChannels(res); err != nil {
		return nil, err
	}
	model := filepath.Join(res.Dir, "clean_model.onnx")
	if _, err := os.Stat(model); err == nil {
		rep.Model = model
		if c.test != "" {
			e := evalRun{model: model, data: c.test, device: c.device, batch: 256,
				read: arrowio.ReadOptions{ImageCol: c.imageCol, LabelCol: c.labelCol}, spec: c.spec, truth: c.truth}
			if samples := filepath.Join(res.Dir, "samples.parquet"); c.truth != "" && fileExists(samples) {
				e.samples = samples
			}
			ev, err := e.run(ctx)
			if err != nil {
				return nil, fmt.Errorf("evaluating %s on %s: %w", model, c.test, err)
			}
			rep.ACC, rep.ASR = &ev.ACC, ev.ASR
			rep.Evaluation = &ev.Result
		}
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	af, err := arrowio.CreateAtomic(filepath.Join(res.Dir, "report.json"))
	if err != nil {
		return nil, err
	}
	if _, err := af.Write(append(b, '\n')); err != nil {
		af.Abort()
		return nil, err
	}
	return rep, af.Commit()
}

// outputsOfKind lists the run's output files of a kind, in node order.
func outputsOfKind(res *dag.Result, kind arrowio.Kind) []string {
	var out []string
	for _, id := range res.Order {
		n := res.Nodes[id]
		ports := make([]string, 0, len(n.Outputs))
		for p := range n.Outputs {
			ports = append(ports, p)
		}
		sort.Strings(ports)
		for _, port := range ports {
			full, _ := res.OutputPath(id, port)
			if kindOfFile(full) == kind {
				out = append(out, full)
			}
		}
	}
	return out
}

// writeSamples writes samples.parquet: every scores/v1 output of the run
// joined by sample_id (rows in the order of the first), and returns the
// counts of seeds, trusted and kept samples.
func writeSamples(res *dag.Result) (map[string]int, error) {
	paths := outputsOfKind(res, arrowio.KindScores)
	counts := map[string]int{}
	if len(paths) == 0 {
		return counts, nil
	}
	type col struct {
		field arrow.Field
		vals  map[uint64]any
	}
	var ids []uint64
	var cols []col
	for k, path := range paths {
		r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
		if err != nil {
			return nil, err
		}
		s := r.Schema()
		base := len(cols)
		for _, f := range s.Fields()[1:] {
			cols = append(cols, col{field: f, vals: map[uint64]any{}})
		}
		for r.Next() {
			rec := r.Record()
			rid := rec.Column(0).(*array.Uint64).Uint64Values()
			if k == 0 {
				ids = append(ids, rid...)
			}
			for c := 1; c < int(rec.NumCols()); c++ {
				cc := cols[base+c-1]
				a := rec.Column(c)
				for i, id := range rid {
					if a.IsNull(i) {
						continue
					}
					switch a := a.(type) {
					case *array.Float32:
						cc.vals[id] = a.Value(i)
					case *array.Int32:
						cc.vals[id] = a.Value(i)
					case *array.Boolean:
						cc.vals[id] = a.Value(i)
					}
				}
			}
		}
		err = r.Err()
		r.Release()
		if err != nil {
			return nil, err
		}
	}
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = c.field
		fields[i].Nullable = true
	}
	schema, err := arrowio.ScoresSchema(fields...)
	if err != nil {
		return nil, err
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Uint64Builder).AppendValues(ids, nil)
	for i, c := range cols {
		fb := b.Field(i + 1)
		for _, id := range ids {
			v, ok := c.vals[id]
			switch {
			case !ok:
				fb.AppendNull()
			case c.field.Type.ID() == arrow.FLOAT32:
				fb.(*array.Float32Builder).Append(v.(float32))
			case c.field.Type.ID() == arrow.INT32:
				fb.(*array.Int32Builder).Append(v.(int32))
			default:
				fb.(*array.BooleanBuilder).Append(v.(bool))
				if v.(bool) {
					switch c.field.Name {
					case "sift.seed":
						counts["seed"]++
					case "expand.trusted":
						counts["trusted"]++
					case "bootstrap.kept":
						counts["kept"]++
					}
				}
			}
		}
	}
	counts["total"] = len(ids)
	rec := b.NewRecord()
	defer rec.Release()
	rr, _ := array.NewRecordReader(schema, []arrow.Record{rec})
	defer rr.Release()
	_, err = arrowio.WriteParquet(filepath.Join(res.Dir, "samples.parquet"), rr)
	return counts, err
}

// writeChannels writes channels.parquet (the run's channels/v1 output, or
// an empty table) and returns its counts.
func writeChannels(res *dag.Result) (map[string]int, error) {
	counts := map[string]int{"total": 0, "filtered": 0}
	var rr array.RecordReader
	if paths := outputsOfKind(res, arrowio.KindChannels); len(paths) > 0 {
		r, err := arrowio.OpenDataset(context.Background(), paths[len(paths)-1], arrowio.ReadOptions{})
		if err != nil {
			return nil, err
		}
		var recs []arrow.Record
		for r.Next() {
			rec := r.Record()
			rec.Retain()
			recs = append(recs, rec)
			keep := rec.Column(2).(*array.Boolean)
			for i := 0; i < keep.Len(); i++ {
				counts["total"]++
				if !keep.Value(i) {
					counts["filtered"]++
				}
			}
		}
		r.Release()
		rr, _ = array.NewRecordReader(arrowio.ChannelsSchema(), recs)
		for _, rec := range recs {
			rec.Release()
		}
	} else {
		rr, _ = array.NewRecordReader(arrowio.ChannelsSchema(), nil)
	}
	defer rr.Release()
	_, err := arrowio.WriteParquet(filepath.Join(res.Dir, "channels.parquet"), rr)
	return counts, err
}

func kindOfFile(path string) arrowio.Kind {
	r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return ""
	}
	defer r.Release()
	k, _ := arrowio.KindOf(r.Schema())
	return k
}

func printSummary(w io.Writer, rep *runReport, res *dag.Result) {
	fmt.Fprintf(w, "pipeline %s: %d nodes, run folder %s\n", rep.Pipeline, len(res.Order), res.Dir)
	if rep.ACC != nil {
		fmt.Fprintf(w, "  accuracy on %s: %.4f (clean_model.onnx)\n", rep.Inputs["test"], *rep.ACC)
	}
	if rep.ASR != nil {
		fmt.Fprintf(w, "  attack success rate: %.4f (%d triggered non-target images)\n", *rep.ASR, rep.Evaluation.ASRN)
	}
	if ev := rep.Evaluation; ev != nil && ev.Sets != nil {
		for _, k := range []string{"seed", "trusted", "kept"} {
			if s, ok := ev.Sets[k]; ok {
				fmt.Fprintf(w, "  %-8s %6d rows, %5d poisoned (purity %.4f)\n", k, s.N, s.Poisoned, s.Purity)
			}
		}
		if d := ev.Detector; d != nil {
			fmt.Fprintf(w, "  not kept as a poison detector: precision %.3f, recall %.3f\n", d.Precision, d.Recall)
		}
	}
	if len(rep.Samples) > 0 {
		fmt.Fprintf(w, "  samples: %v\n", rep.Samples)
	}
	for _, id := range res.Order {
		n := res.Nodes[id]
		what := n.Stage
		if what == "" {
			what = "input " + n.Input
		}
		state := fmt.Sprintf("%.2fs", n.Seconds)
		if n.Cached {
			state = "reused"
		}
		m, _ := json.Marshal(n.Metrics)
		fmt.Fprintf(w, "  %-10s %-14s %-8s %s\n", id, what, state, m)
	}
}

// manifestPath finds the manifest: flag, $TCORE_MANIFEST, the folder above
// the executable (bin/..), the working directory.
func manifestPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv("TCORE_MANIFEST"); v != "" {
		return v, nil
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(filepath.Dir(exe)), "manifest.json"))
	}
	if wd, err := os.Getwd(); err == nil {
		cands = append(cands, filepath.Join(wd, "manifest.json"))
	}
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", usagef("no manifest.json found (looked at %v); pass --manifest or set TCORE_MANIFEST", cands)
}

func loadCatalog(flagValue string) (*plugin.Catalog, error) {
	path, err := manifestPath(flagValue)
	if err != nil {
		return nil, err
	}
	return plugin.LoadCatalog(path)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
