package encoder

import (
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// In a token model, only the residual stream counts as a probe layer: an
// addition of two computed tensors. The MLP's bias addition (fc2), the
// position embedding and a LayerNorm's beta add a constant and are not
// candidates, nor is an addition that broadcasts a smaller tensor.
func TestTokenLayersAreTheResidualStream(t *testing.T) {
	add := func(a, b, out string) *onnx.NodeProto {
		return &onnx.NodeProto{OpType: "Add", Input: []string{a, b}, Output: []string{out}}
	}
	g := &onnx.GraphProto{
		Initializer: []*onnx.TensorProto{{Name: "pos"}, {Name: "fc2.bias"}, {Name: "w"}},
		Node: []*onnx.NodeProto{
			{OpType: "Constant", Output: []string{"beta"}},
			add("x", "pos", "x0"), // position embedding
			{OpType: "MatMul", Input: []string{"x0", "w"}, Output: []string{"h"}},
			add("h", "fc2.bias", "h1"), // fc2's bias
			add("x0", "h1", "r1"),      // residual
			add("r1", "beta", "n1"),    // LayerNorm's beta
			add("r1", "n1", "r2"),      // residual
			add("r2", "cls", "b1"),     // broadcast of a [N, 1, C] tensor
			add("r2", "r1", "r3"),      // residual
			add("r3", "r2", "r4"),      // residual
		},
	}
	m := &onnxgraph.Model{P: &onnx.ModelProto{Graph: g}}
	shapes := map[string][]int64{}
	for _, n := range []string{"x", "x0", "h", "h1", "r1", "n1", "r2", "b1", "r3", "r4"} {
		shapes[n] = []int64{-1, 5, 8}
	}
	shapes["cls"] = []int64{-1, 1, 8}
	var got []string
	for _, l := range candidates(m, shapes, "") {
		got = append(got, l.Tensor)
	}
	want := []string{"r1", "r2", "r3", "r4"}
	if len(got) != len(want) {
		t.Fatalf("token layers %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("token layers %v, want %v", got, want)
		}
	}
}

// In a CNN with squeeze-and-excitation blocks (MobileNetV3), the SE
// branch's pooled 1x1 tensors are no stage outputs: the probe layers are
// the last block output at each resolution.
func TestSqueezeExcitationIsNoStage(t *testing.T) {
	g := &onnx.GraphProto{
		Node: []*onnx.NodeProto{
			{OpType: "Relu", Input: []string{"x"}, Output: []string{"a1"}},
			{OpType: "Relu", Input: []string{"p"}, Output: []string{"se"}}, // SE fc1's ReLU, 1x1
			{OpType: "Add", Input: []string{"a1", "m"}, Output: []string{"a2"}},
			{OpType: "Relu", Input: []string{"a2"}, Output: []string{"b1"}},
			{OpType: "Relu", Input: []string{"q"}, Output: []string{"se2"}},
			{OpType: "Add", Input: []string{"b1", "n"}, Output: []string{"b2"}},
		},
	}
	m := &onnxgraph.Model{P: &onnx.ModelProto{Graph: g}}
	shapes := map[string][]int64{
		"a1": {-1, 16, 8, 8}, "se": {-1, 4, 1, 1}, "a2": {-1, 16, 8, 8},
		"b1": {-1, 32, 4, 4}, "se2": {-1, 8, 1, 1}, "b2": {-1, 32, 4, 4},
	}
	var got []string
	for _, l := range candidates(m, shapes, "") {
		got = append(got, l.Tensor)
	}
	if len(got) != 2 || got[0] != "a2" || got[1] != "b2" {
		t.Fatalf("probe layers %v, want [a2 b2]", got)
	}
}
