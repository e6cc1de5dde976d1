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
