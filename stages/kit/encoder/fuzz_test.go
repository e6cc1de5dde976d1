package encoder_test

import (
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// FuzzLoad: whatever bytes a user passes as --encoder, the loader and its
// analysis return a model or an error, never a panic or an unbounded
// allocation (no ONNX Runtime session is made).
func FuzzLoad(f *testing.F) {
	for _, n := range []*testenc.Net{testenc.Clean(1), testenc.Trojan(2), testenc.BlendCollapse(3)} {
		b, err := n.Model().Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{0x08, 0x07})
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := onnxgraph.Parse(data, "fuzz.onnx")
		if err != nil {
			return
		}
		m, err := encoder.FromGraph(g, "")
		if err != nil {
			return
		}
		if m.C <= 0 || m.H <= 0 || m.W <= 0 || int64(m.H)*int64(m.W) > encoder.MaxImagePixels() {
			t.Fatalf("accepted an input of %dx%dx%d", m.C, m.H, m.W)
		}
	})
}
