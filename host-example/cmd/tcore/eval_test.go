package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// tcore eval on a classifier built from the Go test encoder and a linear
// head: labels are the reference prediction for even rows and a wrong
// class for odd rows, so the accuracy must be exactly one half.
func TestEvalAccuracy(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(21)
	rng := rand.New(rand.NewPCG(5, 5))
	head := onnxgraph.Dense{In: 32, Out: 3, W: make([]float32, 96), B: make([]float32, 3)}
	for i := range head.W {
		head.W[i] = float32(rng.NormFloat64())
	}
	m := net.Model()
	if err := m.AppendHead("embedding", []onnxgraph.Dense{head}, "logits"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "clf.onnx")
	m.Save(model)

	s := arrow.NewSchema([]arrow.Field{{Name: "img", Type: arrow.BinaryTypes.Binary}, {Name: "labels", Type: arrow.PrimitiveTypes.Uint16}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	const n = 40
	for i := 0; i < n; i++ {
		img := image.NewNRGBA(image.Rect(0, 0, 16, 16))
		x := make([]float32, 768)
		for p := 0; p < 256; p++ {
			c := color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
			img.Set(p%16, p/16, c)
			x[p], x[256+p], x[512+p] = float32(c.R)/255, float32(c.G)/255, float32(c.B)/255
		}
		var buf bytes.Buffer
		png.Encode(&buf, img)
		emb, _ := net.Forward(x)
		best, bestV := 0, float32(-1e30)
		for o := 0; o < 3; o++ {
			v := head.B[o]
			for j := 0; j < 32; j++ {
				v += head.W[o*32+j] * emb[j]
			}
			if v > bestV {
				best, bestV = o, v
			}
		}
		label := best
		if i%2 == 1 {
			label = (best + 1) % 3
		}
		b.Field(0).(*array.BinaryBuilder).Append(buf.Bytes())
		b.Field(1).(*array.Uint16Builder).Append(uint16(label))
	}
	rec := b.NewRecord()
	defer rec.Release()
	rr, _ := array.NewRecordReader(s, []arrow.Record{rec})
	defer rr.Release()
	data := filepath.Join(dir, "data.parquet")
	if _, err := arrowio.WriteParquet(data, rr); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"eval", "--model", model, "--data", data, "--batch-size", "7", "--classes", "3"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res runner.EvalResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err, out.String())
	}
	if res.N != n || res.Correct != n/2 || res.Accuracy != 0.5 {
		t.Fatalf("got n=%d correct=%d accuracy=%v, want %d, %d, 0.5", res.N, res.Correct, res.Accuracy, n, n/2)
	}
	encPath := filepath.Join(dir, "encoder.onnx")
	if err := net.Model().Save(encPath); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a Parquet file as model", []string{"--model", data}, 2, "data.parquet"},
		{"an encoder as model", []string{"--model", encPath}, 2, "encoder.onnx gives 32 values per image, but there are 2 classes (the test labels' largest + 1): not a classifier of these classes"},
		{"more classes declared than the head has", []string{"--model", model, "--classes", "5"}, 2, "clf.onnx gives 3 values per image, but there are 5 classes (declared)"},
		{"the head's classes declared", []string{"--model", model, "--classes", "3"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"eval", "--data", data}, tc.args...), &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d (%s), want %d and %q", code, errb.String(), tc.code, tc.want)
			}
		})
	}
}
