package encoder_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// A session From a layer, fed that layer's values before its mask (what
// PreMask returns), gives the embeddings the whole network gives under the
// same run-time masks and caps: for every layer that cuts the network, on
// NCHW and NHWC graphs, with masks on the layer itself and after it.
func TestTailSessionEqualsTheWholeNetwork(t *testing.T) {
	ortlib.Init(t)
	names := []string{"stage1", "stage2", "stage3"}
	cases := []struct {
		name  string
		model *onnxgraph.Model
		from  string
		caps  bool
	}{
		{"stage1", testenc.Clean(3).Model(), "stage1", false},
		{"stage2 capped", testenc.Clean(3).Model(), "stage2", true},
		{"stage3", testenc.Clean(3).Model(), "stage3", false},
		{"NHWC stage2", testenc.Clean(4).ModelNHWC(), "stage2", true},
		{"trojan stage2 capped", testenc.Collapse(5).Model(), "stage2", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := encoder.FromGraph(c.model, "")
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, 7))
			var mi []encoder.Mask
			for s, w := range testenc.Widths {
				mk := encoder.Mask{Layer: names[s], Fill: make([]float32, w)}
				for i := range mk.Fill {
					mk.Fill[i] = rng.Float32() * 0.3
				}
				if c.caps {
					mk.Cap = make([]float32, w)
					for i := range mk.Cap {
						mk.Cap[i] = 0.2 + rng.Float32()
					}
				}
				mi = append(mi, mk)
			}
			full, err := m.Session(encoder.Config{MaskInputs: mi, PreMask: true})
			if err != nil {
				t.Fatal(err)
			}
			defer full.Close()
			tail, err := m.Session(encoder.Config{MaskInputs: mi, From: c.from})
			if err != nil {
				t.Fatal(err)
			}
			defer tail.Close()
			first := map[string]int{"stage1": 0, "stage2": 1, "stage3": 2}[c.from]
			if len(tail.Switchable) != 3-first || tail.Switchable[0].Name != c.from {
				t.Fatalf("tail's run-time masks: %v, want the layers from %s on", tail.Switchable, c.from)
			}
			imgs := images(6, 11)
			n := len(imgs)
			x, err := full.Batch(n)
			if err != nil {
				t.Fatal(err)
			}
			for i, im := range imgs {
				if c.model.Inputs()[0].Shape[3] == 3 { // NHWC
					for ch := 0; ch < 3; ch++ {
						for p := 0; p < testenc.Size*testenc.Size; p++ {
							x[i*len(im)+p*3+ch] = im[ch*testenc.Size*testenc.Size+p]
						}
					}
				} else {
					copy(x[i*len(im):], im)
				}
			}
			// masked runs the batch filled in e with image i
			// switching off channel i of every layer (some masks off,
			// each a different one).
			masked := func(e *encoder.Encoder) ([]float32, [][]float32) {
				ms, err := e.Masks(n)
				if err != nil {
					t.Fatal(err)
				}
				for li, l := range e.Switchable {
					for i := 0; i < n; i++ {
						for ch := 0; ch < l.Channels; ch++ {
							ms[li][i*l.Channels+ch] = b2f(ch != i)
						}
					}
				}
				emb, outs, err := e.Embed(n)
				if err != nil {
					t.Fatal(err)
				}
				return emb, outs
			}
			emb, outs := masked(full)
			if len(outs) != 3 {
				t.Fatalf("PreMask: %d extra outputs, want 3", len(outs))
			}
			want := append([]float32(nil), emb...)
			pre := outs[first]
			if len(pre) != n*tail.ImageSize() {
				t.Fatalf("pre-mask values of %s: %d, want %d", c.from, len(pre), n*tail.ImageSize())
			}
			tx, err := tail.Batch(n)
			if err != nil {
				t.Fatal(err)
			}
			copy(tx, pre)
			got, _ := masked(tail)
			moved := false
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("embedding value %d: tail %v, whole network %v", i, got[i], want[i])
				}
				moved = moved || got[i] != 0
			}
			if !moved {
				t.Fatal("every embedding value is zero: the comparison tests nothing")
			}
		})
	}
}

// A layer that a skip connection passes around cannot start a session:
// the error names the layer.
func TestTailSessionRefusesALayerThatDoesNotCut(t *testing.T) {
	ortlib.Init(t)
	// The collapse trojan's gate reads stage 2 beside stage 3.
	m, err := encoder.FromGraph(testenc.Collapse(5).Model(), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Session(encoder.Config{From: "stage3"})
	if err == nil || !strings.Contains(err.Error(), "cannot cut at \"stage3\"") {
		t.Fatalf("tail from stage3 around the gate: %v, want a refusal naming stage3", err)
	}
}
