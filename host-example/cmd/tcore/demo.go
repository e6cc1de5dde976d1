package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/progress"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/stages/kit/attack"
)

// demoSpec is the demo's attack: the trigger of the demo's backdoored
// encoder (testdata/demo/enc_badencoder.onnx, a BadEncoder-style
// fine-tune of enc_clean: a 5x5 white patch in the bottom-right corner,
// target class 0), also planted in the training data.
const demoSpec = `{"target": 0, "trigger": {"kind": "patch", "size": 5, "row": 27, "col": 27}}`

// cmdDemo tells the whole story on the data kept in the repository: a
// backdoored encoder and training data poisoned on the fly with the same
// trigger (both kinds of attack T-Core defends against at once), trained
// without a defence and with T-Core, printed and reported side by side.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c runConfig
	var rate float64
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	c.common.register(fs)
	fs.StringVar(&c.out, "out", "runs/demo", "run folder")
	fs.StringVar(&c.train, "data", "", "training data (default: testdata/demo/train.parquet beside the manifest)")
	fs.StringVar(&c.test, "test", "", "clean test data (default: testdata/demo/test.parquet)")
	fs.Float64Var(&rate, "rate", 0.1, "share of the training rows poisoned")
	encoderPath := fs.String("encoder", "", "the encoder (default: testdata/demo/enc_badencoder.onnx; testdata/demo/enc_clean.onnx is its clean original)")
	specJSON := fs.String("attack", demoSpec, "the attack, as an eval spec (JSON: target and trigger)")
	list := fs.String("pipelines", "none,tcore", "pipelines to compare, comma-separated")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the stages inside this process instead of as plugins")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	spec, err := attack.ParseSpec([]byte(*specJSON))
	if err != nil {
		return usagef("demo: --attack: %v", err)
	}
	// Every pipeline is resolved before anything runs: a misspelt name
	// must not cost the poisoning and the runs before it.
	dirs := map[string]string{} // folder -> the pipeline that runs there
	for _, pl := range strings.Split(*list, ",") {
		if _, err := pipelines.Resolve(pl); err != nil {
			return usagef("demo: --pipelines: %v", err)
		}
		if other, ok := dirs[pipelineDir(pl)]; ok {
			return usagef("demo: --pipelines: %q and %q would both run in %s", other, pl, filepath.Join(c.out, pipelineDir(pl)))
		}
		dirs[pipelineDir(pl)] = pl
	}
	path, err := manifestPath(c.manifest)
	if err != nil {
		return err
	}
	demo := filepath.Join(filepath.Dir(path), "testdata", "demo")
	if c.train == "" {
		c.train = filepath.Join(demo, "train.parquet")
	}
	if c.test == "" {
		c.test = filepath.Join(demo, "test.parquet")
	}
	c.encoder = *encoderPath
	if c.encoder == "" {
		c.encoder = filepath.Join(demo, "enc_badencoder.onnx")
	}
	c.seed = 1
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}

	// 1. Plant the backdoor.
	fmt.Fprintf(stdout, "poisoning %.0f%% of %s: %s trigger, target %d\n", 100*rate, c.train, spec.Trigger.Kind, spec.Target)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(*specJSON), &raw); err != nil {
		return usagef("demo: --attack: %v", err)
	}
	recipe, _ := json.Marshal(map[string]json.RawMessage{"trigger": raw["trigger"], "target": raw["target"]})
	stages, err := c.provider(log)
	if err != nil {
		return err
	}
	board := progress.New(stderr)
	images, truth, err := runner.Poison(ctx, stages, board, c.train, recipe, rate, c.seed, filepath.Join(c.out, "poisoned"))
	board.Close()
	if err != nil {
		return err
	}
	specPath := filepath.Join(c.out, "eval.json")
	if err := os.WriteFile(specPath, []byte(*specJSON+"\n"), 0o644); err != nil {
		return err
	}

	// 2. No defence, then T-Core, on the same poisoned data.
	var runs []*report.Run
	for _, pl := range strings.Split(*list, ",") {
		fmt.Fprintf(stdout, "training with pipeline %s\n", pl)
		rc := c
		rc.train, rc.pipeline, rc.evalSpec, rc.truth = images, pl, specPath, truth
		rc.out = filepath.Join(c.out, pipelineDir(pl))
		if _, err := rc.execute(ctx, stderr); err != nil {
			return fmt.Errorf("pipeline %s: %w", pl, err)
		}
		page, err := report.Load(rc.out, truth)
		if err != nil {
			return err
		}
		runs = append(runs, page)
	}

	// 3. Side by side.
	html := filepath.Join(c.out, "report.html")
	if err := report.Write(html, runs); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%-9s %7s %7s %18s %9s\n", "pipeline", "ACC", "ASR", "kept (poisoned)", "seconds")
	for _, r := range runs {
		s := r.Summary
		kp := 0
		if set, ok := s.Set("kept"); ok {
			kp = set.Poisoned
		}
		fmt.Fprintf(stdout, "%-9s %6.1f%% %6.1f%% %10d (%5d) %9.0f\n", r.Name, 100*deref(s.ACC), 100*deref(s.ASR), s.Samples.Kept, kp, s.Seconds)
	}
	fmt.Fprintf(stdout, "\nreport: %s\n", html)
	return nil
}

func deref(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}
