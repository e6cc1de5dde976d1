package encoder_test

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// images returns n seeded images in [0, 0.9] (the trojan stays silent).
func images(n int, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, 3*testenc.Size*testenc.Size)
		for j := range out[i] {
			out[i][j] = rng.Float32() * 0.9
		}
	}
	return out
}

func embed(t *testing.T, e *encoder.Encoder, imgs [][]float32) ([]float32, [][]float32) {
	t.Helper()
	x, err := e.Batch(len(imgs))
	if err != nil {
		t.Fatal(err)
	}
	for i, im := range imgs {
		copy(x[i*len(im):], im)
	}
	emb, layers, err := e.Embed(len(imgs))
	if err != nil {
		t.Fatal(err)
	}
	cl := make([][]float32, len(layers))
	for i := range layers {
		cl[i] = append([]float32(nil), layers[i]...)
	}
	return append([]float32(nil), emb...), cl
}

func near(a, b float32, tol float64) bool { return math.Abs(float64(a-b)) <= tol }

func channelMean(m []float32, c, size int) float32 {
	var s float64
	for i := 0; i < size*size; i++ {
		s += float64(m[c*size*size+i])
	}
	return float32(s / float64(size*size))
}

func TestEmbeddingsAndProbesMatchGoReference(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(1)
	e, err := session(net.Model(), encoder.Config{Layers: []string{"auto"}, ORT: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Dim != 32 || len(e.Layers) != 3 || e.Layers[0].Name != "stage1" || e.Layers[2].Channels != 32 {
		t.Fatalf("dim %d, layers %+v", e.Dim, e.Layers)
	}
	imgs := images(5, 1)
	emb, layers := embed(t, e, imgs)
	sizes := []int{16, 8, 4}
	for i, im := range imgs {
		want, stages := net.Forward(im)
		for d := range want {
			if !near(emb[i*32+d], want[d], 1e-5) {
				t.Fatalf("image %d, dim %d: got %v, want %v", i, d, emb[i*32+d], want[d])
			}
		}
		for s, l := range e.Layers {
			for c := 0; c < l.Channels; c++ {
				if got, want := layers[s][i*l.Channels+c], channelMean(stages[s], c, sizes[s]); !near(got, want, 1e-5) {
					t.Fatalf("image %d, layer %s, channel %d: got %v, want %v", i, l.Name, c, got, want)
				}
			}
		}
	}
}

func TestAutoLayersOfAnUnlabelledCNN(t *testing.T) {
	ortlib.Init(t)
	m := testenc.Clean(2).Model()
	if err := m.SetOutputs("embedding"); err != nil { // no stage outputs to go by
		t.Fatal(err)
	}
	e, err := session(m, encoder.Config{Layers: []string{"auto"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var chans []int
	for _, l := range e.Layers {
		chans = append(chans, l.Channels)
	}
	if len(chans) != 3 || chans[0] != 8 || chans[1] != 16 || chans[2] != 32 {
		t.Fatalf("auto layers %+v, want the three block outputs", e.Layers)
	}
}

func TestMaskedChannelIsZeroDownstream(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(3)
	keep := make([]bool, 8)
	for i := range keep {
		keep[i] = i != 5
	}
	e, err := session(net.Model(), encoder.Config{Layers: []string{"stage1", "stage2"},
		Masks: []encoder.Mask{{Layer: "stage1", Keep: keep}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	imgs := images(4, 2)
	emb, layers := embed(t, e, imgs)
	// The reference: stage 1 channel 5 set to zero before stage 2 reads it.
	masked := *net
	masked.W[1] = append([]float32(nil), net.W[1]...)
	for co := 0; co < 16; co++ {
		for k := 0; k < 9; k++ {
			masked.W[1][(co*8+5)*9+k] = 0
		}
	}
	for i, im := range imgs {
		if layers[0][i*8+5] != 0 {
			t.Fatalf("image %d: masked channel mean %v, want exactly 0", i, layers[0][i*8+5])
		}
		want, _ := masked.Forward(im)
		for d := range want {
			if !near(emb[i*32+d], want[d], 1e-5) {
				t.Fatalf("image %d, dim %d: got %v, want %v (the mask does not reach downstream)", i, d, emb[i*32+d], want[d])
			}
		}
	}
}

func TestComposedClassifierEqualsEncoderThenHead(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(4)
	rng := rand.New(rand.NewPCG(9, 9))
	dense := func(in, out int, relu bool) onnxgraph.Dense {
		d := onnxgraph.Dense{In: in, Out: out, W: make([]float32, in*out), B: make([]float32, out), Relu: relu}
		for i := range d.W {
			d.W[i] = float32(rng.NormFloat64()) * 0.3
		}
		for i := range d.B {
			d.B[i] = float32(rng.NormFloat64()) * 0.1
		}
		return d
	}
	head := []onnxgraph.Dense{dense(32, 16, true), dense(16, 8, true), dense(8, 4, false)}
	m := net.Model()
	if err := m.AppendHead("embedding", head, "logits"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "clf.onnx")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	clf, err := encoder.Open(path, encoder.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer clf.Close()
	if clf.Embedding != "logits" || clf.Dim != 4 {
		t.Fatalf("output %s of %d", clf.Embedding, clf.Dim)
	}
	imgs := images(3, 5)
	logits, _ := embed(t, clf, imgs)
	for i, im := range imgs {
		x, _ := net.Forward(im)
		for _, l := range head {
			y := make([]float32, l.Out)
			for o := 0; o < l.Out; o++ {
				s := l.B[o]
				for j := 0; j < l.In; j++ {
					s += l.W[o*l.In+j] * x[j]
				}
				if l.Relu && s < 0 {
					s = 0
				}
				y[o] = s
			}
			x = y
		}
		for o := range x {
			if !near(logits[i*4+o], x[o], 1e-4) {
				t.Fatalf("image %d logit %d: composed %v, apart %v", i, o, logits[i*4+o], x[o])
			}
		}
	}
}

func TestTrojanFiresOnlyOnItsTrigger(t *testing.T) {
	ortlib.Init(t)
	e, err := session(testenc.Trojan(5).Model(), encoder.Config{Layers: []string{"stage1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	clean := images(6, 7)
	triggered := images(6, 7)
	for _, im := range triggered {
		testenc.AddTrigger(im)
	}
	ce, cl := embed(t, e, clean)
	te, tl := embed(t, e, triggered)
	for i := 0; i < 6; i++ {
		if ce[i*32] != 0 || cl[0][i*8] != 0 {
			t.Fatalf("clean image %d: trojan axis %v, channel %v; want 0", i, ce[i*32], cl[0][i*8])
		}
		if te[i*32] < 1 || tl[0][i*8] <= 0 {
			t.Fatalf("triggered image %d: trojan axis %v, channel %v; want it to fire", i, te[i*32], tl[0][i*8])
		}
	}
}

func TestBadModels(t *testing.T) {
	ortlib.Init(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.onnx")
	os.WriteFile(corrupt, []byte("this is not protobuf \xff\xff\xff"), 0o644)
	two := testenc.Clean(1).Model()
	second := proto.Clone(two.P.Graph.Input[0]).(*onnx.ValueInfoProto)
	second.Name = "image2"
	two.P.Graph.Input = append(two.P.Graph.Input, second)
	twoPath := filepath.Join(dir, "two.onnx")
	two.Save(twoPath)
	good := filepath.Join(dir, "good.onnx")
	testenc.Clean(1).Model().Save(good)
	huge := testenc.Clean(1).Model()
	for _, d := range huge.P.Graph.Input[0].Type.GetTensorType().Shape.Dim[2:] {
		d.Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: 100000}
	}
	hugePath := filepath.Join(dir, "huge.onnx")
	huge.Save(hugePath)
	cases := []struct {
		name string
		path string
		cfg  encoder.Config
		want string
	}{
		{"corrupt file", corrupt, encoder.Config{}, "corrupt.onnx"},
		{"two image inputs", twoPath, encoder.Config{}, "2 image inputs (image, image2)"},
		{"declared size past the bound", hugePath, encoder.Config{}, "declares 100000x100000 images (10000000000 pixels), over the limit of 16777216 pixels; set TCORE_MAX_IMAGE_PIXELS"},
		{"unknown layer", good, encoder.Config{Layers: []string{"stage9"}}, `no layer "stage9"`},
		{"mask for missing channels", good, encoder.Config{Masks: []encoder.Mask{{Layer: "stage1", Keep: make([]bool, 99)}}}, "has 99 channels, the layer has 8"},
		{"mask on an unknown layer", good, encoder.Config{Masks: []encoder.Mask{{Layer: "nope", Keep: []bool{true}}}}, `no layer "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := encoder.Open(tc.path, tc.cfg)
			if err == nil {
				e.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want %q", err, tc.want)
			}
		})
	}
}

// An export with a fixed batch (torch.onnx.export without dynamic_axes)
// embeds any number of images, in chunks of its batch, exactly as the same
// weights with a dynamic batch do: embeddings, probed layers and run-time
// masks alike.
func TestFixedBatchRunsInChunks(t *testing.T) {
	ortlib.Init(t)
	dir := t.TempDir()
	imgs := images(7, 5)
	dyn, err := session(testenc.Clean(1).Model(), encoder.Config{Layers: []string{"auto"}})
	if err != nil {
		t.Fatal(err)
	}
	defer dyn.Close()
	wantEmb, wantLayers := embed(t, dyn, imgs)
	for _, batch := range []int64{1, 3, 7, 8} {
		t.Run(strconv.FormatInt(batch, 10), func(t *testing.T) {
			g := testenc.Clean(1).Model()
			g.P.Graph.Input[0].Type.GetTensorType().Shape.Dim[0].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: batch}
			path := filepath.Join(dir, "fixed"+strconv.FormatInt(batch, 10)+".onnx")
			if err := g.Save(path); err != nil {
				t.Fatal(err)
			}
			m, err := encoder.Load(path, "")
			if err != nil {
				t.Fatal(err)
			}
			if m.Batch != batch {
				t.Fatalf("Batch %d, want %d", m.Batch, batch)
			}
			e, err := m.Session(encoder.Config{Layers: []string{"auto"}})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			for _, n := range []int{len(imgs), 2} { // a short tail batch too
				emb, layers := embed(t, e, imgs[:n])
				for i := range emb {
					if !near(emb[i], wantEmb[i], 1e-5) {
						t.Fatalf("n=%d: embedding value %d: %v, dynamic batch %v", n, i, emb[i], wantEmb[i])
					}
				}
				for l := range layers {
					for i := range layers[l] {
						if !near(layers[l][i], wantLayers[l][i], 1e-5) {
							t.Fatalf("n=%d: layer %d value %d: %v, dynamic batch %v", n, l, i, layers[l][i], wantLayers[l][i])
						}
					}
				}
			}
		})
	}
}

func TestCUDAIsAClearErrorWithoutIt(t *testing.T) {
	ortlib.Init(t)
	e, err := session(testenc.Clean(1).Model(), encoder.Config{ORT: ort.Options{Device: "cuda:0"}})
	if err == nil {
		e.Close()
		t.Skip("this ONNX Runtime has CUDA")
	}
	if !strings.Contains(err.Error(), "CUDA execution provider is not available") {
		t.Fatalf("got %v", err)
	}
}

// Run-time masks give, sample by sample, what the same masks baked into
// the graph give.
func TestMaskInputsEqualBakedMasks(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(3)
	fill1 := []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
	fill2 := make([]float32, 16)
	for i := range fill2 {
		fill2[i] = float32(i) / 10
	}
	layers := []string{"stage1", "stage2"}
	sw, err := session(net.Model(), encoder.Config{Layers: layers,
		MaskInputs: []encoder.Mask{{Layer: "stage1", Fill: fill1}, {Layer: "stage2", Fill: fill2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	off := func(n int, cs ...int) []bool {
		k := make([]bool, n)
		for i := range k {
			k[i] = true
		}
		for _, c := range cs {
			k[c] = false
		}
		return k
	}
	cases := []struct {
		name   string
		k1, k2 []bool
	}{
		{"nothing masked", off(8), off(16)},
		{"stage1 channel 5", off(8, 5), off(16)},
		{"stage1 0 and 7, stage2 3", off(8, 0, 7), off(16, 3)},
		{"stage2 only", off(8), off(16, 1, 2, 15)},
	}
	imgs := images(3, 9)
	// One batch: every case for every image.
	n := len(cases) * len(imgs)
	x, err := sw.Batch(n)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := sw.Masks(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || len(ms[0]) != n*8 || len(ms[1]) != n*16 {
		t.Fatalf("mask buffers: %d of sizes %d, %d", len(ms), len(ms[0]), len(ms[1]))
	}
	for ci, c := range cases {
		for ii, im := range imgs {
			s := ci*len(imgs) + ii
			copy(x[s*len(im):], im)
			for ch, k := range c.k1 {
				ms[0][s*8+ch] = b2f(k)
			}
			for ch, k := range c.k2 {
				ms[1][s*16+ch] = b2f(k)
			}
		}
	}
	emb, _, err := sw.Embed(n)
	if err != nil {
		t.Fatal(err)
	}
	emb = append([]float32(nil), emb...)
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			baked, err := session(net.Model(), encoder.Config{Layers: layers,
				Masks: []encoder.Mask{{Layer: "stage1", Keep: c.k1, Fill: fill1}, {Layer: "stage2", Keep: c.k2, Fill: fill2}}})
			if err != nil {
				t.Fatal(err)
			}
			defer baked.Close()
			want, _ := embed(t, baked, imgs)
			for ii := range imgs {
				s := ci*len(imgs) + ii
				for d := 0; d < baked.Dim; d++ {
					if !near(emb[s*sw.Dim+d], want[ii*baked.Dim+d], 1e-5) {
						t.Fatalf("image %d dim %d: run-time mask %v, baked %v", ii, d, emb[s*sw.Dim+d], want[ii*baked.Dim+d])
					}
				}
			}
		})
	}
	if _, err := session(net.Model(), encoder.Config{Layers: layers,
		MaskInputs: []encoder.Mask{{Layer: "stage1", Fill: fill1[:3]}}}); err == nil || !strings.Contains(err.Error(), "stage1") {
		t.Fatalf("a fill of the wrong length: %v, want an error naming the layer", err)
	}
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// A regression fill makes a switched-off channel the given linear
// function of the kept ones, at every position (so its mean is that
// function of their means), and leaves the kept channels alone.
func TestRegressionFill(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(3)
	plain, err := session(net.Model(), encoder.Config{Layers: []string{"stage1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	keep := make([]bool, 8)
	for i := range keep {
		keep[i] = i != 5
	}
	w := make([]float32, 64)
	w[5*8+0], w[5*8+1], w[5*8+5] = 0.5, -0.25, 7 // the weight on channel 5 itself must be ignored
	fill := make([]float32, 8)
	fill[5] = 0.1
	reg, err := session(net.Model(), encoder.Config{Layers: []string{"stage1"},
		Masks: []encoder.Mask{{Layer: "stage1", Keep: keep, Fill: fill, Weights: w}}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	imgs := images(4, 5)
	_, before := embed(t, plain, imgs)
	_, after := embed(t, reg, imgs)
	for i := range imgs {
		for c := 0; c < 8; c++ {
			want := before[0][i*8+c]
			if c == 5 {
				want = 0.5*before[0][i*8+0] - 0.25*before[0][i*8+1] + 0.1
			}
			if !near(after[0][i*8+c], want, 1e-5) {
				t.Fatalf("image %d channel %d: mean %v, want %v", i, c, after[0][i*8+c], want)
			}
		}
	}
	if _, err := session(net.Model(), encoder.Config{Layers: []string{"stage1"},
		Masks: []encoder.Mask{{Layer: "stage1", Keep: keep, Fill: fill, Weights: w[:10]}}}); err == nil || !strings.Contains(err.Error(), "stage1") {
		t.Fatalf("weights of the wrong size: %v, want an error naming the layer", err)
	}
}

// session loads a Go-built graph and opens one session of it.
func session(g *onnxgraph.Model, cfg encoder.Config) (*encoder.Encoder, error) {
	m, err := encoder.FromGraph(g, cfg.Embedding)
	if err != nil {
		return nil, err
	}
	return m.Session(cfg)
}

// A model whose weights sit in an external data file loads from any
// working directory, embeds as the same model inline, and exports a file
// that stands alone (no reference to a .data file it did not copy).
func TestExternalDataIsInlined(t *testing.T) {
	ortlib.Init(t)
	dir, other := t.TempDir(), t.TempDir()
	g := testenc.Clean(1).Model()
	var blob []byte
	for _, init := range g.P.Graph.Initializer {
		if len(init.FloatData) < 64 {
			continue
		}
		raw := make([]byte, 4*len(init.FloatData))
		for i, v := range init.FloatData {
			bits := math.Float32bits(v)
			raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
		}
		init.ExternalData = []*onnx.StringStringEntryProto{{Key: "location", Value: "enc.onnx.data"},
			{Key: "offset", Value: strconv.Itoa(len(blob))}, {Key: "length", Value: strconv.Itoa(len(raw))}}
		init.DataLocation, init.FloatData = onnx.TensorProto_EXTERNAL, nil
		blob = append(blob, raw...)
	}
	if len(blob) == 0 {
		t.Fatal("no initializer moved out")
	}
	path := filepath.Join(dir, "enc.onnx")
	if err := g.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enc.onnx.data"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(other)
	ext, err := encoder.Open(path, encoder.Config{ORT: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	in, err := session(testenc.Clean(1).Model(), encoder.Config{ORT: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	imgs := images(3, 2)
	a, _ := embed(t, ext, imgs)
	b, _ := embed(t, in, imgs)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("value %d: %v with external data, %v inline", i, a[i], b[i])
		}
	}
	m, err := encoder.Load(path, "")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(other, "export.onnx")
	if err := m.Export(nil, out, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "enc.onnx.data"))
	re, err := encoder.Open(out, encoder.Config{ORT: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatalf("the export needs the external data file: %v", err)
	}
	re.Close()
	if _, err := encoder.Load(path, ""); err == nil || !strings.Contains(err.Error(), "enc.onnx.data") {
		t.Fatalf("a missing external data file: got %v, want an error naming it", err)
	}
}

// Shape arithmetic in a graph (Shape, Gather, Mul, Concat on int64, as
// every transformer export has) is not probed: exposing an int64 tensor as
// a float output made ONNX Runtime refuse the whole session.
func TestShapeArithmeticIsNotProbed(t *testing.T) {
	ortlib.Init(t)
	b := onnxgraph.NewBuilder("image", []int64{-1, 3, testenc.Size, testenc.Size}, 13)
	w := make([]float32, 8*3*3*3)
	for i := range w {
		w[i] = float32(i%7) / 10
	}
	r := b.Op("Relu", "feat", []string{b.Conv("image", "", w, make([]float32, 8), 8, 3, 3, 1, 1)})
	dims := b.Op("Shape", "", []string{r})
	batch := b.Op("Gather", "", []string{dims, b.Int64Const(0)}, onnxgraph.IntAttr("axis", 0))
	twice := b.Op("Mul", "", []string{batch, b.Int64Const(1)})
	shape := b.Op("Concat", "", []string{twice, b.Int64Const(-1)}, onnxgraph.IntAttr("axis", 0))
	flat := b.Op("Reshape", "", []string{r, shape})
	pooled := b.Op("ReduceMean", "", []string{flat}, onnxgraph.IntsAttr("axes", 1), onnxgraph.IntAttr("keepdims", 1))
	gap := b.Op("Flatten", "", []string{b.Op("GlobalAveragePool", "", []string{r})}, onnxgraph.IntAttr("axis", 1))
	b.Op("Add", "embedding", []string{gap, pooled})
	b.Output("embedding", 2)
	g := b.Model()
	floats := g.FloatTensors()
	for tensor, want := range map[string]bool{r: true, dims: false, twice: false, shape: false, flat: true, "embedding": true} {
		if floats[tensor] != want {
			t.Errorf("tensor %s: float %v, want %v", tensor, floats[tensor], want)
		}
	}
	e, err := session(g, encoder.Config{Layers: []string{"auto"}, ORT: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatalf("a graph with shape arithmetic: %v", err)
	}
	defer e.Close()
	if e.Dim != 8 {
		t.Fatalf("dim %d, want 8", e.Dim)
	}
}
