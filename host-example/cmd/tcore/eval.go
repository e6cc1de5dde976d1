package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/evaluate"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// cmdEval prints the accuracy of an ONNX classifier on a labelled dataset.
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var model, data, imageCol, labelCol, output, spec string
	var batch, threads int
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&model, "model", "", "ONNX classifier: one image input, logits output (required)")
	fs.StringVar(&data, "data", "", "labelled dataset: Parquet, Arrow IPC or image folder (required)")
	fs.StringVar(&output, "output", "", "the logits output (default: 'logits' or the only rank-2 output)")
	fs.StringVar(&imageCol, "image-col", "", "image column (default: detected)")
	fs.StringVar(&labelCol, "label-col", "", "label column (default: label or labels)")
	fs.IntVar(&batch, "batch-size", 256, "images per batch")
	fs.IntVar(&threads, "threads", 0, "ONNX Runtime threads (0: one per core)")
	fs.StringVar(&spec, "eval", "", "eval spec (JSON file): also measure the attack success rate")
	if err := parse(fs, args); err != nil {
		return err
	}
	if model == "" || data == "" {
		return usagef("eval: --model and --data are required")
	}
	if err := c.check(); err != nil {
		return err
	}
	for _, p := range []string{model, data} {
		if _, err := os.Stat(p); err != nil {
			return usagef("eval: %v", err)
		}
	}
	if err := ort.Init(c.ortLib); err != nil {
		return err
	}
	e := evalRun{model: model, data: data, output: output, device: c.device, batch: batch, threads: threads,
		read: arrowio.ReadOptions{ImageCol: imageCol, LabelCol: labelCol}}
	if spec != "" {
		s, err := readSpec(spec)
		if err != nil {
			return err
		}
		e.spec = s
	}
	res, err := e.run(ctx)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(stdout, string(b))
	return nil
}

// evalResult is what tcore eval prints.
type evalResult struct {
	Model    string  `json:"model"`
	Data     string  `json:"data"`
	Correct  int64   `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	evaluate.Result
}

// evalRun is one evaluation: the model, the test data and, where given,
// the eval spec, the run's samples and the ground truth.
type evalRun struct {
	model, data, output, device string
	batch, threads              int
	read                        arrowio.ReadOptions
	spec                        json.RawMessage // eval spec, or nil
	samples, truth              string          // files, or ""
}

// run evaluates through the evaluate stage, in process.
func (e evalRun) run(ctx context.Context) (*evalResult, error) {
	in := plugin.NewTables()
	defer in.Release()
	r, err := arrowio.OpenDataset(ctx, e.data, e.read)
	if err != nil {
		return nil, err
	}
	err = putAll(in, "test", r)
	r.Release()
	if err != nil {
		return nil, err
	}
	if e.samples != "" {
		if err := putFile(ctx, in, "samples", e.samples); err != nil {
			return nil, err
		}
	}
	if e.truth != "" {
		t, err := arrowio.ReadTruth(e.truth)
		if err != nil {
			return nil, err
		}
		in.Put("truth", t.Schema(), t)
		t.Release()
	}
	absModel, _ := filepath.Abs(e.model)
	params, _ := json.Marshal(map[string]any{"model": absModel, "output": e.output, "spec": e.spec,
		"device": e.device, "batch_size": e.batch, "threads": e.threads})
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(evaluate.New()).Run(ctx, params, in, out, nil)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(m)
	res := &evalResult{Model: e.model, Data: e.data}
	if err := json.Unmarshal(b, &res.Result); err != nil {
		return nil, err
	}
	res.Accuracy = res.ACC
	res.Correct = int64(math.Round(res.ACC * float64(res.N)))
	return res, nil
}

func putFile(ctx context.Context, in *plugin.Tables, port, path string) error {
	r, err := arrowio.OpenDataset(ctx, path, arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer r.Release()
	return putAll(in, port, r)
}

func putAll(in *plugin.Tables, port string, r array.RecordReader) error {
	var recs []arrow.Record
	for r.Next() {
		recs = append(recs, r.Record())
		r.Record().Retain()
	}
	in.Put(port, r.Schema(), recs...)
	for _, rec := range recs {
		rec.Release()
	}
	return r.Err()
}

// readSpec reads and checks an eval spec file (a usage error names the
// file and field).
func readSpec(path string) (json.RawMessage, error) {
	if _, err := attack.ReadSpec(path); err != nil {
		return nil, usagef("--eval: %v", err)
	}
	b, _ := os.ReadFile(path)
	return b, nil
}
