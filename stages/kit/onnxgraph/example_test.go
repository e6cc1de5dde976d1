package onnxgraph_test

import (
	"fmt"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// An encoder becomes a classifier: a head appended to its embedding, the
// logits its only output; a channel mask is baked into the graph.
func ExampleModel_AppendHead() {
	m := testenc.Clean(1).Model()
	in, _ := m.ImageInput()
	keep := make([]bool, 8)
	for i := range keep {
		keep[i] = i != 3
	}
	if err := m.InsertMask("stage1", 4, keep, nil); err != nil {
		fmt.Println(err)
		return
	}
	head := []onnxgraph.Dense{{In: 32, Out: 10, W: make([]float32, 320), B: make([]float32, 10)}}
	if err := m.AppendHead("embedding", head, "logits"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(in.Name, in.Shape, m.OutputNames())
	// Output: image [-1 3 16 16] [logits]
}

// Channel masks read at run time: the graph gains one input per masked
// tensor, a keep value per sample and channel.
func ExampleModel_InsertMaskInput() {
	m := testenc.Clean(1).Model()
	if _, err := m.InsertMaskInput("stage1", 4, make([]float32, 8), "keep_stage1"); err != nil {
		fmt.Println(err)
		return
	}
	for _, in := range m.Inputs() {
		fmt.Println(in.Name, in.Shape)
	}
	// Output:
	// image [-1 3 16 16]
	// keep_stage1 [-1 8 1 1]
}

// The network after a layer: the layer's tensor becomes the only input.
func ExampleModel_CutAt() {
	m := testenc.Clean(1).Model()
	if err := m.CutAt("stage2", []int64{16, 8, 8}, 0); err != nil {
		fmt.Println(err)
		return
	}
	for _, in := range m.Inputs() {
		fmt.Println(in.Name, in.Shape)
	}
	// A tensor the cut removed is gone, and so is the output it was.
	fmt.Println(m.HasTensor("stage1"), m.OutputNames())
	// Output:
	// stage2 [-1 16 8 8]
	// false [embedding stage2 stage3]
}
