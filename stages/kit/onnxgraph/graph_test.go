package onnxgraph_test

import (
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

func TestRenameInput(t *testing.T) {
	build := func() *onnxgraph.Model {
		b := onnxgraph.NewBuilder("input.1", []int64{-1, 3, 4, 4}, 13)
		r := b.Op("Relu", "relu", []string{"input.1"})
		b.Op("Flatten", "embedding", []string{b.Op("GlobalAveragePool", "", []string{r})}, onnxgraph.IntAttr("axis", 1))
		b.Output("embedding", 2)
		return b.Model()
	}
	for _, tc := range []struct {
		name, from, to string
		want           string // error text, "" for none
	}{
		{"to image", "input.1", "image", ""},
		{"to a taken name", "input.1", "relu", `the name is taken`},
		{"no such input", "pixels", "image", `no input "pixels"`},
		{"same name", "input.1", "input.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := build()
			err := g.RenameInput(tc.from, tc.to)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if err != nil {
				return
			}
			in, err := g.ImageInput()
			if err != nil || in.Name != tc.to {
				t.Fatalf("image input %+v (%v), want %q", in, err, tc.to)
			}
			if g.P.Graph.Node[0].Input[0] != tc.to {
				t.Fatalf("the first node reads %q, want %q", g.P.Graph.Node[0].Input[0], tc.to)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	build := func(input string, opset int64, scale float32) *onnxgraph.Model {
		b := onnxgraph.NewBuilder(input, []int64{-1, 3, 4, 4}, opset)
		w := b.Const([]int64{1}, []float32{scale})
		r := b.Op("Mul", "scaled", []string{input, w})
		b.Op("Flatten", "embedding", []string{b.Op("GlobalAveragePool", "", []string{r})}, onnxgraph.IntAttr("axis", 1))
		b.Output("embedding", 2)
		return b.Model()
	}
	for _, tc := range []struct {
		name   string
		other  *onnxgraph.Model
		want   string // error text, "" for none
		shared bool   // the weight is shared
	}{
		{"same weights", build("image", 13, 2), "", true},
		{"other weights", build("image", 13, 3), "", false},
		{"other opset", build("image", 17, 2), "different opsets", false},
		{"other input", build("pixels", 13, 2), `reads input "pixels"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := build("image", 13, 2)
			nodes, inits := len(m.P.Graph.Node), len(m.P.Graph.Initializer)
			name, err := m.Merge(tc.other, "b/")
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if err != nil {
				return
			}
			if got := name("embedding"); got != "b/embedding" || !m.HasTensor(got) {
				t.Fatalf("the merged embedding is %q", got)
			}
			if name("image") != "image" {
				t.Fatalf("the input became %q", name("image"))
			}
			if len(m.P.Graph.Node) != 2*nodes {
				t.Fatalf("%d nodes, want %d", len(m.P.Graph.Node), 2*nodes)
			}
			wantInits := 2 * inits
			if tc.shared {
				wantInits = inits
			}
			if len(m.P.Graph.Initializer) != wantInits {
				t.Fatalf("%d initializers, want %d", len(m.P.Graph.Initializer), wantInits)
			}
			if err := m.SetOutputs("embedding", name("embedding")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
