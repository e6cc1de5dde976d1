package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// cmdEval prints the accuracy of an ONNX classifier on a labelled dataset.
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var model, data, imageCol, labelCol, output string
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
	res, err := evaluate(ctx, model, data, output, c.device, batch, threads, arrowio.ReadOptions{ImageCol: imageCol, LabelCol: labelCol})
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(stdout, string(b))
	return nil
}

// evalResult is what tcore eval prints.
type evalResult struct {
	Model    string             `json:"model"`
	Data     string             `json:"data"`
	N        int64              `json:"n"`
	Correct  int64              `json:"correct"`
	Accuracy float64            `json:"accuracy"`
	PerClass map[string]float64 `json:"per_class_accuracy"`
	Counts   map[string]int64   `json:"per_class_n"`
	Seconds  float64            `json:"seconds"`
}

// evaluate runs the classifier through the embed stage (its logits are the
// "embedding") and scores the predictions as they stream out.
func evaluate(ctx context.Context, model, data, output, device string, batch, threads int, ro arrowio.ReadOptions) (*evalResult, error) {
	r, err := arrowio.OpenDataset(ctx, data, ro)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	absModel, _ := filepath.Abs(model)
	params, _ := json.Marshal(map[string]any{"encoder": absModel, "layers": []string{}, "embedding": output,
		"device": device, "batch_size": batch, "threads": threads})
	sc := &scorer{perN: map[int32]int64{}, perOK: map[int32]int64{}}
	m, err := plugin.Local(embed.New()).Run(ctx, params, singleInput{"images", r}, sc, nil)
	if err != nil {
		return nil, err
	}
	res := &evalResult{Model: model, Data: data, N: sc.n, Correct: sc.ok, PerClass: map[string]float64{}, Counts: map[string]int64{}}
	if sc.n > 0 {
		res.Accuracy = float64(sc.ok) / float64(sc.n)
	}
	for l, n := range sc.perN {
		k := strconv.Itoa(int(l))
		res.Counts[k] = n
		res.PerClass[k] = float64(sc.perOK[l]) / float64(n)
	}
	res.Seconds, _ = m["seconds"].(float64)
	return res, nil
}

// singleInput serves one reader on one port.
type singleInput struct {
	port string
	r    array.RecordReader
}

func (s singleInput) Open(port string) (array.RecordReader, error) {
	if port != s.port {
		return nil, plugin.ErrNotConnected
	}
	s.r.Retain()
	return s.r, nil
}

// scorer is an Outputs that counts correct argmax predictions.
type scorer struct {
	n, ok       int64
	perN, perOK map[int32]int64
}

func (s *scorer) Create(string, *arrow.Schema) (plugin.RecordWriter, error) { return s, nil }
func (s *scorer) Close() error                                              { return nil }
func (s *scorer) Write(rec arrow.Record) error {
	labels := rec.Column(1).(*array.Int32).Int32Values()
	l := rec.Column(2).(*array.FixedSizeList)
	k := int(l.DataType().(*arrow.FixedSizeListType).Len())
	vals := l.ListValues().(*array.Float32).Float32Values()[l.Offset()*k:]
	for i, y := range labels {
		row := vals[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		s.n++
		s.perN[y]++
		if int32(best) == y {
			s.ok++
			s.perOK[y]++
		}
	}
	return nil
}
