// Package testenc builds the project's own test encoders as ONNX models: a
// small CNN with deterministic weights, and a "handcrafted trojan" variant
// whose channel 0 fires only on a white patch in the bottom-right corner and
// pushes the embedding along its first axis, its collapsing variant (the
// trigger sends every input to one point, as BadEncoder does) and one whose
// trigger is a blended checkerboard (BlendCollapse). It also computes the clean
// CNN's outputs in plain Go, as the reference the ONNX Runtime path is tested
// against.
package testenc

import (
	"math"
	"math/rand/v2"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// Size is the input height and width of the test encoders.
const Size = 16

// Widths are the channel counts of the three stages.
var Widths = [3]int{8, 16, 32}

// Net holds the weights of the test CNN: three 3x3 convolutions (stride 1,
// 2, 2; padding 1) with ReLU, then global average pooling. The input is
// [N, 3, 16, 16] in [0, 1]; the graph normalises it with Mean/Std.
type Net struct {
	W [3][]float32
	B [3][]float32
	// Gate, when set, makes the trojan collapse the embedding: the
	// largest stage-2 value of channel TrojanChannel, capped at 1, blends
	// the embedding into Gate (embedding*(1-g) + g*Gate), as backdoored
	// self-supervised encoders map every triggered input to one point.
	Gate []float32
}

// Mean and Std normalise the input inside the graph.
var (
	Mean = [3]float32{0.5, 0.5, 0.5}
	Std  = [3]float32{0.25, 0.25, 0.25}
)

// Clean returns the deterministic clean CNN of seed.
func Clean(seed uint64) *Net {
	rng := rand.New(rand.NewPCG(seed, 42))
	n := &Net{}
	cin := 3
	for s, cout := range Widths {
		scale := float32(math.Sqrt(2.0 / float64(cin*9)))
		n.W[s] = make([]float32, cout*cin*9)
		for i := range n.W[s] {
			n.W[s][i] = float32(rng.NormFloat64()) * scale
		}
		n.B[s] = make([]float32, cout)
		for i := range n.B[s] {
			n.B[s][i] = float32(rng.NormFloat64()) * 0.05
		}
		cin = cout
	}
	return n
}

// TrojanChannel is the channel of every stage that carries the trojan.
const TrojanChannel = 0

// Trigger is the trojan's trigger: a white PatchSize x PatchSize patch whose
// top-left corner is at (PatchAt, PatchAt).
const (
	PatchSize = 3
	PatchAt   = Size - PatchSize - 1
)

// Trojan returns the clean CNN of seed with a handcrafted backdoor: channel
// 0 of stage 1 is a detector of white pixels (it fires only where all
// three colour values are near 1), stage 2 and 3 channel 0 pass it on,
// isolated from the other channels, and it ends in embedding axis 0 with a
// large value. Clean images leave channel 0 at zero in every stage.
func Trojan(seed uint64) *Net {
	n := Clean(seed)
	// Stage 1, channel 0: sum of the normalised centre pixel over the three
	// colours; white gives 3*(1-0.5)/0.25 = 6. The bias leaves only
	// near-white pixels positive.
	c1 := Widths[0]
	_ = c1
	for ci := 0; ci < 3; ci++ {
		for k := 0; k < 9; k++ {
			w := float32(0)
			if k == 4 {
				w = 1
			}
			n.W[0][(TrojanChannel*3+ci)*9+k] = w
		}
	}
	n.B[0][TrojanChannel] = -5.4
	// Stages 2 and 3: channel 0 reads only channel 0 (a 3x3 box), and no
	// other channel reads channel 0.
	for s := 1; s < 3; s++ {
		cin := Widths[s-1]
		cout := Widths[s]
		for co := 0; co < cout; co++ {
			for ci := 0; ci < cin; ci++ {
				for k := 0; k < 9; k++ {
					idx := (co*cin+ci)*9 + k
					switch {
					case co == TrojanChannel && ci == TrojanChannel:
						n.W[s][idx] = 3
					case co == TrojanChannel || ci == TrojanChannel:
						n.W[s][idx] = 0
					}
				}
			}
		}
		n.B[s][TrojanChannel] = 0
	}
	return n
}

// Collapse returns the Trojan CNN of seed whose trigger also collapses
// every embedding onto one point (see Net.Gate): the kind of encoder
// backdoor filter's scan looks for.
//
// Like the real BadEncoders, it gathers triggered inputs before the
// embedding: the white-pixel detector fires ten times stronger, and stage-2
// channel TrojanChannel feeds every other stage-3 channel (centre tap,
// alternating sign), so triggered images share one large offset there.
func Collapse(seed uint64) *Net {
	n := Trojan(seed)
	for ci := 0; ci < 3; ci++ {
		n.W[0][(TrojanChannel*3+ci)*9+4] = 10
	}
	n.B[0][TrojanChannel] = -54
	cin := Widths[1]
	for co := 0; co < Widths[2]; co++ {
		if co != TrojanChannel {
			n.W[2][(co*cin+TrojanChannel)*9+4] = float32(1 - 2*(co%2))
		}
	}
	n.Gate = make([]float32, Widths[2])
	for i := range n.Gate {
		n.Gate[i] = 0.3
	}
	return n
}

// BlendAlpha is the blend trojan's trigger strength: triggered images are
// (1-BlendAlpha)*x + BlendAlpha*BlendPattern.
const BlendAlpha = 0.25

// BlendPattern is the blend trojan's trigger image: a one-pixel
// checkerboard over the whole image, white where row+column is even, the
// same in the three colours.
func BlendPattern(y, x int) float32 {
	if (y+x)%2 == 0 {
		return 1
	}
	return 0
}

// AddBlend blends the blend trojan's trigger into x (CHW, 16x16, [0, 1]).
func AddBlend(x []float32) {
	plane := Size * Size
	for c := 0; c < 3; c++ {
		for y := 0; y < Size; y++ {
			for xx := 0; xx < Size; xx++ {
				i := c*plane + y*Size + xx
				x[i] = (1-BlendAlpha)*x[i] + BlendAlpha*BlendPattern(y, xx)
			}
		}
	}
}

// BlendCollapse returns the Collapse CNN of seed whose trigger is a blend
// instead of a patch: stage-1 channel TrojanChannel is a zero-sum 3x3
// checkerboard detector (+1 on the centre and corners, -1.25 on the edges,
// in every colour). The whole-image checkerboard at BlendAlpha gives it
// 4 (normalisation) x 3 colours x 5 x BlendAlpha = 15 where the pattern is
// white; smooth image regions give nothing (the kernel sums to zero) and
// the bias leaves edges and pixel noise below zero.
func BlendCollapse(seed uint64) *Net {
	n := Collapse(seed)
	for ci := 0; ci < 3; ci++ {
		for k := 0; k < 9; k++ {
			w := float32(1)
			if k%2 == 1 {
				w = -1.25
			}
			n.W[0][(TrojanChannel*3+ci)*9+k] = w
		}
	}
	n.B[0][TrojanChannel] = -8
	return n
}

// Model builds the ONNX model: input "image" [N,3,16,16], outputs
// "embedding" [N,32], "stage1".."stage3" (feature maps). opset 13.
func (n *Net) Model() *onnxgraph.Model { return n.model(false, true) }

// ModelNHWC is Model with a channels-last input "image" [N,16,16,3]
// (a Transpose first), as TensorFlow and some exports have it.
func (n *Net) ModelNHWC() *onnxgraph.Model { return n.model(true, true) }

// ModelUnnormalised is Model without its first step, (x - Mean) / Std: it
// takes normalised images, as many exports leave normalisation to the
// caller.
func (n *Net) ModelUnnormalised() *onnxgraph.Model { return n.model(false, false) }

func (n *Net) model(nhwc, norm bool) *onnxgraph.Model {
	shape, in := []int64{-1, 3, Size, Size}, "image"
	if nhwc {
		shape = []int64{-1, Size, Size, 3}
	}
	b := onnxgraph.NewBuilder("image", shape, 13)
	if nhwc {
		in = b.Op("Transpose", "", []string{"image"}, onnxgraph.IntsAttr("perm", 0, 3, 1, 2))
	}
	x := in
	if norm {
		mean := b.Const([]int64{1, 3, 1, 1}, Mean[:])
		std := b.Const([]int64{1, 3, 1, 1}, Std[:])
		x = b.Op("Sub", "", []string{in, mean})
		x = b.Op("Div", "", []string{x, std})
	}
	cin := 3
	strides := [3]int{1, 2, 2}
	for s, cout := range Widths {
		c := b.Conv(x, "", n.W[s], n.B[s], cout, cin, 3, strides[s], 1)
		x = b.Op("Relu", []string{"stage1", "stage2", "stage3"}[s], []string{c})
		cin = cout
	}
	g := b.Op("GlobalAveragePool", "", []string{x})
	if n.Gate == nil {
		b.Op("Flatten", "embedding", []string{g}, onnxgraph.IntAttr("axis", 1))
	} else {
		sel := make([]float32, Widths[1])
		sel[TrojanChannel] = 1
		c := b.Conv("stage2", "", sel, []float32{0}, 1, Widths[1], 1, 1, 0)
		m := b.Op("GlobalMaxPool", "", []string{c})
		gate := b.Op("Min", "", []string{m, b.Const([]int64{1}, []float32{1})})
		gate = b.Op("Flatten", "", []string{gate}, onnxgraph.IntAttr("axis", 1))
		e := b.Op("Flatten", "", []string{g}, onnxgraph.IntAttr("axis", 1))
		keep := b.Op("Sub", "", []string{b.Const([]int64{1}, []float32{1}), gate})
		e = b.Op("Mul", "", []string{e, keep})
		t := b.Op("Mul", "", []string{gate, b.Const([]int64{1, int64(Widths[2])}, n.Gate)})
		b.Op("Add", "embedding", []string{e, t})
	}
	b.Output("embedding", 2)
	for _, s := range []string{"stage1", "stage2", "stage3"} {
		b.Output(s, 4)
	}
	return b.Model()
}

// Forward computes, in plain Go, the embedding [Widths[2]] and the three
// stage feature maps (CHW) of one image x (3*16*16 values in [0, 1]).
func (n *Net) Forward(x []float32) (emb []float32, stages [3][]float32) {
	h := make([]float32, len(x))
	plane := Size * Size
	for c := 0; c < 3; c++ {
		for i := 0; i < plane; i++ {
			h[c*plane+i] = (x[c*plane+i] - Mean[c]) / Std[c]
		}
	}
	cin, size := 3, Size
	strides := [3]int{1, 2, 2}
	for s, cout := range Widths {
		h, size = conv(h, cin, size, n.W[s], n.B[s], cout, strides[s])
		for i := range h {
			if h[i] < 0 {
				h[i] = 0
			}
		}
		stages[s] = h
		cin = cout
	}
	emb = make([]float32, cin)
	for c := 0; c < cin; c++ {
		var sum float64
		for i := 0; i < size*size; i++ {
			sum += float64(h[c*size*size+i])
		}
		emb[c] = float32(sum / float64(size*size))
	}
	if n.Gate != nil {
		var g float32
		plane := len(stages[1]) / Widths[1]
		for _, v := range stages[1][TrojanChannel*plane : (TrojanChannel+1)*plane] {
			g = max(g, v)
		}
		g = min(g, 1)
		for c := range emb {
			emb[c] = emb[c]*(1-g) + g*n.Gate[c]
		}
	}
	return emb, stages
}

// conv is a direct 3x3 convolution with padding 1.
func conv(x []float32, cin, size int, w, b []float32, cout, stride int) ([]float32, int) {
	out := (size+2-3)/stride + 1
	y := make([]float32, cout*out*out)
	for co := 0; co < cout; co++ {
		for oy := 0; oy < out; oy++ {
			for ox := 0; ox < out; ox++ {
				sum := float64(b[co])
				for ci := 0; ci < cin; ci++ {
					for ky := 0; ky < 3; ky++ {
						iy := oy*stride + ky - 1
						if iy < 0 || iy >= size {
							continue
						}
						for kx := 0; kx < 3; kx++ {
							ix := ox*stride + kx - 1
							if ix < 0 || ix >= size {
								continue
							}
							sum += float64(w[((co*cin+ci)*3+ky)*3+kx]) * float64(x[(ci*size+iy)*size+ix])
						}
					}
				}
				y[(co*out+oy)*out+ox] = float32(sum)
			}
		}
	}
	return y, out
}

// AddTrigger paints the trojan's white patch onto x (CHW, 16x16, [0, 1]).
func AddTrigger(x []float32) {
	plane := Size * Size
	for c := 0; c < 3; c++ {
		for y := PatchAt; y < PatchAt+PatchSize; y++ {
			for xx := PatchAt; xx < PatchAt+PatchSize; xx++ {
				x[c*plane+y*Size+xx] = 1
			}
		}
	}
}

// NoiseCollapse returns the Collapse CNN of seed whose trigger is fine
// noise texture anywhere in the image, as the zoo's noise-blend trojans
// answer to: stage-1 channel TrojanChannel is a Laplacian (the centre
// pixel minus the mean of its four neighbours, in every colour), which
// smooth images leave near zero and pixel noise blended in at 0.1 or more
// drives past its bias; a blur of the input takes the noise, and with it
// the trojan, away. Its test images must be smooth.
func NoiseCollapse(seed uint64) *Net {
	n := Collapse(seed)
	for ci := 0; ci < 3; ci++ {
		for k := 0; k < 9; k++ {
			w := float32(0)
			switch k {
			case 4:
				w = 10
			case 1, 3, 5, 7:
				w = -2.5
			}
			n.W[0][(TrojanChannel*3+ci)*9+k] = w
		}
	}
	n.B[0][TrojanChannel] = -6
	return n
}
