package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/progress"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// inProcess lists the stages the CLI can run inside its own process
// (--in-process), for debugging without plugin binaries.
func inProcess() dag.InProcess { return dag.InProcess(builtin.Stages()) }

// reuseFromDoc is the help of --reuse-from (run and bench).
const reuseFromDoc = "with --in-process: key the node cache as the tcore executable at this path did (an earlier build), so its run folders serve this build every node whose stage has the same version in both; a stage with a new version, and every node after it, runs again (stages bump their version whenever their outputs change)"

// runConfig is one `tcore run`.
type runConfig struct {
	common
	train, test, encoder, out string
	pipeline, evalSpec, truth string
	spec                      json.RawMessage
	seed                      int64
	inProcess                 bool
	reuseFrom                 string // --reuse-from: another build's executable
	imageCol, labelCol        string
	classes                   int
	params                    paramFlag // NODE.PARAM -> JSON value
	reference                 bool
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
	fs.StringVar(&c.reuseFrom, "reuse-from", "", reuseFromDoc)
	fs.StringVar(&c.imageCol, "image-col", "", "image column of the datasets (default: detected)")
	fs.StringVar(&c.labelCol, "label-col", "", "label column of the datasets (default: label or labels)")
	fs.IntVar(&c.classes, "classes", 0, "number of classes the classifier has (default: the largest training label + 1, which then needs rows of every class below it)")
	fs.BoolVar(&c.reference, "reference", true, "with --test, also train the none baseline (one head on every row over the same embedding) and report its accuracy beside the run's")
	c.params = paramFlag{}
	fs.Var(c.params, "param", "NODE.PARAM=VALUE: set a stage parameter of the pipeline (VALUE is JSON, else a string), e.g. embed.mean=[0.485,0.456,0.406]; repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.classes < 0 {
		return usagef("run: --classes %d: want a positive number of classes (or 0 for the labels' largest + 1)", c.classes)
	}
	if c.train == "" || c.out == "" {
		return usagef("run: --train and --out are required")
	}
	s, err := c.execute(ctx, stderr)
	if err != nil {
		return err
	}
	printSummary(stdout, s, c.out)
	return nil
}

// execute checks the flags and runs the pipeline (runner.Run).
func (c *runConfig) execute(ctx context.Context, stderr io.Writer) (*report.Summary, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var saved lockedBuffer // the log, kept for the run folder
	log, err := c.logger(io.MultiWriter(stderr, &saved))
	if err != nil {
		return nil, err
	}
	p, err := c.resolvePipeline()
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"train": c.train, "test": c.test, "encoder": c.encoder, "truth": c.truth} {
		if v == "" {
			continue
		}
		if _, err := os.Stat(v); err != nil {
			return nil, usagef("run: --%s: %v", name, err)
		}
	}
	if c.evalSpec != "" {
		if c.spec, err = readSpec(c.evalSpec); err != nil {
			return nil, err
		}
	}
	stages, err := c.provider(log)
	if err != nil {
		return nil, err
	}
	board := progress.New(stderr)
	defer board.Close()
	seed := c.seed
	r := &runner.Run{Pipeline: p, Stages: stages, Observer: board, Train: c.train, Test: c.test,
		Read:     arrowio.ReadOptions{ImageCol: c.imageCol, LabelCol: c.labelCol},
		Bindings: dag.Bindings{Encoder: c.encoder, Device: c.device, Seed: &seed},
		Out:      c.out, Spec: c.spec, Truth: c.truth, Classes: c.classes, StageTimeout: c.timeout, Reference: c.reference}
	s, err := r.Execute(log.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return s, arrowio.WriteFileAtomic(filepath.Join(c.out, report.LogFile), saved.Bytes())
}

// resolvePipeline returns the run's pipeline with its --param values set.
func (c *runConfig) resolvePipeline() (*dag.Pipeline, error) {
	p, err := pipelines.Resolve(c.pipeline)
	if err != nil {
		return nil, err
	}
	return p, p.Set(c.params)
}

// lockedBuffer is a bytes.Buffer that several goroutines may write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Bytes returns what was written.
func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

// provider runs stages in process (--in-process) or as the manifest's
// plugins. Either way ONNX Runtime comes from the one setting --ort-lib
// (else TCORE_ORT_LIB, else the fetched copy): initialised here for stages
// in this process, handed to plugin processes in their environment.
func (c *runConfig) provider(log zerolog.Logger) (dag.Provider, error) {
	if c.reuseFrom != "" && !c.inProcess {
		return nil, usagef("--reuse-from needs --in-process (a plugin's nodes are keyed by its own binary)")
	}
	if c.inProcess {
		if err := ort.Init(c.ortLib); err != nil && c.ortLib != "" {
			return nil, usagef("--ort-lib: %v", err)
		}
		if c.reuseFrom != "" {
			sum, err := plugin.FileSHA256(c.reuseFrom)
			if err != nil {
				return nil, usagef("--reuse-from: %v", err)
			}
			return dag.InProcessAs{InProcess: inProcess(), SHA256: sum}, nil
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

func printSummary(w io.Writer, s *report.Summary, dir string) {
	fmt.Fprintf(w, "pipeline %s: %d nodes, run folder %s\n", s.Pipeline, len(s.Nodes), dir)
	if s.ACC != nil {
		fmt.Fprintf(w, "  accuracy on %s: %.4f (clean_model.onnx)\n", s.Inputs["test"], *s.ACC)
	}
	if s.ASR != nil {
		fmt.Fprintf(w, "  attack success rate: %.4f (%d triggered non-target images)\n", *s.ASR, s.Evaluation.ASRN)
	}
	if ref := s.Reference; ref != nil && ref.ACC != nil {
		fmt.Fprintf(w, "  without the defence (none: one head on every row, same encoder): accuracy %.4f", *ref.ACC)
		if ref.ASR != nil {
			fmt.Fprintf(w, ", attack success rate %.4f", *ref.ASR)
		}
		fmt.Fprintf(w, " (%s)\n", ref.Model)
	}
	for _, k := range []string{"seed", "trusted", "kept"} {
		if set, ok := s.Set(k); ok {
			fmt.Fprintf(w, "  %-8s %6d rows, %5d poisoned (purity %.4f)\n", k, set.N, set.Poisoned, set.Purity)
		}
	}
	if ev := s.Evaluation; ev != nil && ev.Detector != nil {
		fmt.Fprintf(w, "  not kept as a poison detector: precision %.3f, recall %.3f\n", ev.Detector.Precision, ev.Detector.Recall)
	}
	fmt.Fprintf(w, "  rows %d: seeds %d, trusted %d, kept %d; channels masked %d of %d\n",
		s.Samples.Total, s.Samples.Seed, s.Samples.Trusted, s.Samples.Kept, s.Channels.Filtered, s.Channels.Total)
	if sc := s.EncoderScan; sc != nil {
		verdict := "clean"
		switch {
		case sc.Backdoored:
			verdict = "backdoored"
		case sc.UndoneByData:
			verdict = fmt.Sprintf("backdoored by the patch pasted into the data (z %.1f), undone by the data stages; nothing masked", sc.PlantedZ)
		}
		fmt.Fprintf(w, "  encoder scan: best same-size z %.1f (gap_min %.0f): %s\n", sc.BestZ, sc.GapMin, verdict)
	}
	for _, id := range s.NodeIDs() {
		if r := fmt.Sprint(s.Nodes[id].Metrics["relabelled"]); s.Nodes[id].Stage == "bootstrap" && r != "0" && r != "<nil>" {
			fmt.Fprintf(w, "  relabelled %s rows left out: the final head trained on them under the class it gives them (bootstrap.label in samples.parquet)\n", r)
		}
		if g, ok := s.Nodes[id].Metrics["gated"].(string); ok && s.Nodes[id].Stage == "bootstrap" {
			fmt.Fprintf(w, "  classifier gated (only inputs that behave as a trigger's go through the filtered encoder): %s\n", g)
		}
	}
	ids := make([]string, 0, len(s.TimingsS))
	for id := range s.TimingsS {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		state := fmt.Sprintf("%.1fs", s.TimingsS[id])
		for _, r := range s.Reused {
			if r == id {
				state = "reused"
			}
		}
		if st := report.Slowest(s.Steps(id), 3); state != "reused" && len(st) > 0 {
			parts := make([]string, len(st))
			for k, x := range st {
				parts[k] = fmt.Sprintf("%s %.1fs", x.Step, x.Seconds)
			}
			state += " (longest steps: " + strings.Join(parts, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-10s %-10s %s\n", id, s.Nodes[id].Stage, state)
	}
	fmt.Fprintf(w, "  report: %s\n", filepath.Join(dir, "report.html"))
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
