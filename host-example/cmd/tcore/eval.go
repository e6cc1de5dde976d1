package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// cmdEval prints the accuracy of an ONNX classifier on a labelled dataset.
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var model, data, imageCol, labelCol, output, spec string
	var batch, threads, classes int
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
	fs.IntVar(&classes, "classes", 0, "the classifier's number of classes (default: the largest label of --data + 1); its output must be that wide")
	if err := parse(fs, args); err != nil {
		return err
	}
	if classes < 0 {
		return usagef("eval: --classes %d: want a positive number of classes (or 0 for the labels' largest + 1)", classes)
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
	e := runner.Eval{Model: model, Data: data, Output: output, Device: c.device, Batch: batch, Threads: threads, Classes: classes,
		Read: arrowio.ReadOptions{ImageCol: imageCol, LabelCol: labelCol}}
	if spec != "" {
		s, err := readSpec(spec)
		if err != nil {
			return err
		}
		e.Spec = s
	}
	res, err := e.Run(ctx)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(stdout, string(b))
	return nil
}

// readSpec reads and checks an eval spec file (a usage error names the
// file and field).
func readSpec(path string) (json.RawMessage, error) {
	if _, err := attack.ReadSpec(path); err != nil {
		return nil, usagef("--eval: %v", err)
	}
	b, _ := os.ReadFile(path)
	// The spec travels on as JSON: its image path must not depend on
	// where it was read from.
	return attack.ResolveImage(b, filepath.Dir(path))
}
