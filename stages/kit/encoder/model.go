package encoder

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Model is an encoder loaded and analysed once: its image input, its
// embedding, the shape of every tensor that can be probed and the candidate
// probe layers. Sessions for every variant a stage needs (probed layers,
// masks, run-time masks, raw feature maps) and exported graphs come from it
// without parsing or probing the file again. A Model is safe for concurrent
// use; it never changes after Load.
type Model struct {
	Input     onnxgraph.Input
	C, H, W   int
	NHWC      bool
	Embedding string
	Dim       int
	// Batch is the input's fixed batch size (an export without a dynamic
	// batch axis), or 0. Sessions of such a model run any number of images
	// in chunks of Batch (see ort.Options.Batch).
	Batch int64
	// Candidates are the probe layers found automatically (see Layers).
	Candidates []Layer

	src    *onnxgraph.Model
	mu     sync.Mutex
	shapes map[string][]int64 // every probe-able tensor; named tensors added on demand
}

// MaxPixelsEnv is the environment variable that raises the largest
// image an encoder may declare (height x width, default 4096 x 4096): a
// declared size is allocated per image and batch before anything runs.
// The same bound holds for the images a dataset carries.
const MaxPixelsEnv = arrowio.MaxPixelsEnv

// MaxImagePixels returns the largest height x width an encoder may
// declare: MaxPixelsEnv when it holds a positive integer, else 4096 x 4096.
func MaxImagePixels() int64 { return arrowio.MaxImagePixels() }

// Load reads the encoder at path and analyses it. embedding names the
// embedding output ("": the output called "embedding", else the only
// rank-2 output).
func Load(path, embedding string) (*Model, error) {
	g, err := onnxgraph.Load(path)
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	return FromGraph(g, embedding)
}

// FromGraph is Load for a parsed graph, which it does not change.
func FromGraph(g *onnxgraph.Model, embedding string) (*Model, error) {
	in, err := g.ImageInput()
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	m := &Model{Input: in, src: g}
	s := in.Shape
	switch {
	case s[1] == 3 || s[1] == 1:
		m.C, m.H, m.W = int(s[1]), int(s[2]), int(s[3])
	case s[3] == 3 || s[3] == 1:
		m.C, m.H, m.W, m.NHWC = int(s[3]), int(s[1]), int(s[2]), true
	default:
		return nil, plugin.BadInputf("encoder %s: input %q has shape %v: cannot tell the channel axis (want 1 or 3 channels)", g.Source(), in.Name, s)
	}
	if s[0] > 0 {
		// ONNX Runtime refuses every batch size but this one: sessions
		// run chunks of it (a dynamic batch axis runs faster).
		m.Batch = s[0]
	}
	if m.H <= 0 || m.W <= 0 {
		return nil, plugin.BadInputf("encoder %s: input %q has symbolic height or width %v; export it with a fixed size", g.Source(), in.Name, s)
	}
	if limit := MaxImagePixels(); int64(m.H)*int64(m.W) > limit {
		return nil, plugin.BadInputf("encoder %s: input %q declares %dx%d images (%d pixels), over the limit of %d pixels; set %s to raise it",
			g.Source(), in.Name, m.H, m.W, int64(m.H)*int64(m.W), limit, MaxPixelsEnv)
	}
	if err := m.findEmbedding(embedding); err != nil {
		return nil, err
	}
	if err := m.probeShapes(); err != nil {
		return nil, err
	}
	m.Candidates = candidates(g, m.shapes, m.Embedding)
	return m, nil
}

// Source names where the model came from (its file).
func (m *Model) Source() string { return m.src.Source() }

// Graph returns the loaded graph. Callers must not change it (Clone it).
func (m *Model) Graph() *onnxgraph.Model { return m.src }

// ImageSize is the number of float32 values of one preprocessed image.
func (m *Model) ImageSize() int { return m.C * m.H * m.W }

// Preprocess returns the preprocessing the model's input shape implies.
func (m *Model) Preprocess() Preprocess {
	return Preprocess{C: m.C, H: m.H, W: m.W, NHWC: m.NHWC}
}

func (m *Model) findEmbedding(name string) error {
	g := m.src
	outs := g.OutputNames()
	if name == "" {
		for _, o := range outs {
			if o == "embedding" {
				name = o
			}
		}
	}
	if name == "" {
		var rank2 []string
		for _, o := range outs {
			if _, s, _ := g.OutputShape(o); len(s) == 2 {
				rank2 = append(rank2, o)
			}
		}
		if len(rank2) != 1 {
			return plugin.BadInputf("encoder %s: cannot tell the embedding among outputs %v (name it with the embedding parameter)", g.Source(), outs)
		}
		name = rank2[0]
	}
	if !g.HasTensor(name) {
		return plugin.BadInputf("encoder %s: no embedding tensor %q (outputs: %v)", g.Source(), name, outs)
	}
	m.Embedding = name
	return nil
}

// probeOps are the node types whose outputs can be block outputs.
var probeOps = map[string]bool{"Relu": true, "Add": true, "Gelu": true, "LayerNormalization": true, "Clip": true, "Sigmoid": true, "Mul": true, "Concat": true, "MaxPool": true}

// probeShapes runs the model once on a zero image with every output and
// every tensor a probe-able node writes exposed, and keeps their shapes.
func (m *Model) probeShapes() error {
	names := []string{m.Embedding}
	seen := map[string]bool{m.Embedding: true}
	for _, o := range m.src.OutputNames() {
		if !seen[o] {
			names, seen[o] = append(names, o), true
		}
	}
	floats := m.src.FloatTensors()
	for _, t := range m.src.NodeOutputs() {
		if probeOps[t.Op] && floats[t.Tensor] && !seen[t.Tensor] {
			names, seen[t.Tensor] = append(names, t.Tensor), true
		}
	}
	out, err := m.run(names)
	if err != nil {
		return plugin.BadInputf("encoder %s: %v", m.src.Source(), err)
	}
	es := out[m.Embedding]
	if len(es) != 2 {
		return plugin.BadInputf("encoder %s: embedding %q has shape %v, want [N, D]", m.src.Source(), m.Embedding, es)
	}
	m.Dim = int(es[1])
	m.shapes = out
	return nil
}

// run runs a copy of the graph whose outputs are names once on a zero
// image, on the CPU, and returns each output's shape.
func (m *Model) run(names []string) (map[string][]int64, error) {
	g := m.src.Clone()
	if err := g.SetOutputs(names...); err != nil {
		return nil, err
	}
	b, err := g.Bytes()
	if err != nil {
		return nil, err
	}
	s, err := ort.NewSession(b, []string{m.Input.Name}, names, nil, ort.Options{Threads: 1})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n := max(m.Batch, 1)
	shape := []int64{n, int64(m.C), int64(m.H), int64(m.W)}
	if m.NHWC {
		shape = []int64{n, int64(m.H), int64(m.W), int64(m.C)}
	}
	_, shapes, err := s.RunAlloc(make([]float32, int(n)*m.ImageSize()), shape)
	if err != nil {
		return nil, err
	}
	out := map[string][]int64{}
	for i, n := range names {
		out[n] = shapes[i]
	}
	return out, nil
}

func readable(tensor string) string {
	s := strings.TrimPrefix(tensor, "/")
	s = strings.TrimSuffix(s, "_output_0")
	s = strings.ReplaceAll(s, "/", ".")
	if s == "" {
		return tensor
	}
	return s
}

func layerOf(name, tensor string, shape []int64) (Layer, bool) {
	switch len(shape) {
	case 4:
		return Layer{Name: name, Tensor: tensor, Rank: 4, Channels: int(shape[1]), Dims: shape[1:]}, true
	case 3:
		return Layer{Name: name, Tensor: tensor, Rank: 3, Channels: int(shape[2]), Dims: shape[1:]}, true
	}
	return Layer{}, false
}

// candidates lists probe-able layers: the graph's named feature-map
// outputs first (an encoder that exports its stages names them), then the
// block outputs of a CNN: the last rank-4 tensor before each change of
// spatial resolution; for a token model (rank 3), the residual additions.
func candidates(m *onnxgraph.Model, shapes map[string][]int64, embedding string) []Layer {
	var out []Layer
	seen := map[string]bool{}
	for _, o := range m.OutputNames() {
		if o == embedding {
			continue
		}
		if l, ok := layerOf(o, o, shapes[o]); ok {
			out, seen[o] = append(out, l), true
		}
	}
	if len(out) > 0 {
		return out
	}
	type t4 struct {
		tensor string
		hw     [2]int64
	}
	var maps []t4
	var tokens []string
	for _, t := range m.NodeOutputs() {
		s := shapes[t.Tensor]
		if t.Op != "Relu" && t.Op != "Add" {
			continue
		}
		switch len(s) {
		case 4:
			if s[2] == 1 && s[3] == 1 {
				// A squeeze-and-excitation branch's pooled tensor (or a
				// head after global pooling): no feature map, and it
				// would break the block sequence into false stages.
				continue
			}
			maps = append(maps, t4{t.Tensor, [2]int64{s[2], s[3]}})
		case 3:
			// The residual stream of a token model: additions of two
			// computed tensors of the same shape. A bias (fc2's), a
			// position embedding or a LayerNorm's beta adds a constant.
			if t.Op == "Add" && t.ComputedInputs == 2 && len(t.Inputs) == 2 && sameShape(shapes[t.Inputs[0]], shapes[t.Inputs[1]]) {
				tokens = append(tokens, t.Tensor)
			}
		}
	}
	for i, t := range maps {
		if i+1 == len(maps) || maps[i+1].hw != t.hw {
			if l, ok := layerOf(readable(t.tensor), t.tensor, shapes[t.tensor]); ok && !seen[t.tensor] {
				out, seen[t.tensor] = append(out, l), true
			}
		}
	}
	if len(out) == 0 && len(tokens) > 0 {
		// Four evenly spaced residual streams of a token model.
		for k := 1; k <= 4; k++ {
			t := tokens[k*len(tokens)/4-1]
			if l, ok := layerOf(readable(t), t, shapes[t]); ok && !seen[t] {
				out, seen[t] = append(out, l), true
			}
		}
	}
	return out
}

// sameShape reports whether two shapes may be equal: an unknown shape,
// or a dynamic dimension (0 or -1), matches anything.
func sameShape(a, b []int64) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] > 0 && b[i] > 0 && a[i] != b[i] {
			return false
		}
	}
	return true
}

// Layer resolves one layer: a candidate's readable or tensor name, or any
// tensor of the graph with a feature-map shape.
func (m *Model) Layer(name string) (Layer, error) {
	for _, l := range m.Candidates {
		if l.Name == name || l.Tensor == name {
			return l, nil
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shapes[name]
	if !ok && m.src.HasTensor(name) {
		got, err := m.run([]string{name})
		if err != nil {
			return Layer{}, plugin.BadInputf("encoder %s: layer %q: %v", m.src.Source(), name, err)
		}
		s, ok = got[name], true
		m.shapes[name] = s
	}
	if ok {
		if l, ok := layerOf(readable(name), name, s); ok {
			return l, nil
		}
	}
	names := make([]string, len(m.Candidates))
	for i, l := range m.Candidates {
		names[i] = l.Name
	}
	sort.Strings(names)
	return Layer{}, plugin.BadInputf("encoder has no layer %q (candidates: %s; any Relu/Add/Conv tensor name also works)", name, strings.Join(names, ", "))
}

// Layers resolves the layers to probe: ["auto"] for the candidates, else
// each name by Layer (nil or empty: none).
func (m *Model) Layers(want []string) ([]Layer, error) {
	if len(want) == 1 && want[0] == "auto" {
		return append([]Layer(nil), m.Candidates...), nil
	}
	var out []Layer
	seen := map[string]bool{}
	for _, w := range want {
		l, err := m.Layer(w)
		if err != nil {
			return nil, err
		}
		if seen[l.Tensor] {
			return nil, plugin.BadInputf("layer %q listed twice", w)
		}
		seen[l.Tensor] = true
		out = append(out, l)
	}
	return out, nil
}

// Edit returns a copy of the graph with masks built in and the embedding
// as its only output, for export (a head appended by the caller, say).
func (m *Model) Edit(masks []Mask) (*onnxgraph.Model, error) {
	g := m.src.Clone()
	if err := m.applyMasks(g, masks); err != nil {
		return nil, err
	}
	if err := g.SetOutputs(m.Embedding); err != nil {
		return nil, err
	}
	g.Prune()
	return g, nil
}

// Export writes the encoder with masks built in to dst atomically, after
// edit (nil: none) changed the graph (append a head, say; it gets the
// embedding tensor's name).
func (m *Model) Export(masks []Mask, dst string, edit func(g *onnxgraph.Model, embedding string) error) error {
	g, err := m.Edit(masks)
	if err != nil {
		return err
	}
	if edit != nil {
		if err := edit(g, m.Embedding); err != nil {
			return err
		}
	}
	b, err := g.Bytes()
	if err != nil {
		return err
	}
	return arrowio.WriteFileAtomic(dst, b)
}

// Session prepares an ONNX Runtime session of one variant of the encoder:
// the embedding and the probed layers of cfg (their per-channel means, or
// with RawLayers their feature maps), masks built in, run-time masks as
// extra inputs.
func (m *Model) Session(cfg Config) (*Encoder, error) {
	layers, err := m.Layers(cfg.Layers)
	if err != nil {
		return nil, err
	}
	e := &Encoder{Model: m, Layers: layers, Input: m.Input, C: m.C, H: m.H, W: m.W, NHWC: m.NHWC, Embedding: m.Embedding, Dim: m.Dim}
	g := m.src.Clone()
	if cfg.From != "" {
		if e.From, err = m.Layer(cfg.From); err != nil {
			return nil, err
		}
		if err := g.CutAt(e.From.Tensor, e.From.Dims, m.Batch); err != nil {
			return nil, plugin.BadInput(err)
		}
		batch := int64(-1) // symbolic, as onnxgraph.Input says
		if m.Batch > 0 {
			batch = m.Batch
		}
		e.Input = onnxgraph.Input{Name: e.From.Tensor, Elem: m.Input.Elem, Shape: append([]int64{batch}, e.From.Dims...)}
	}
	masks := cfg.Masks
	if cfg.From != "" {
		masks = nil
		for _, mk := range cfg.Masks {
			if l, err := m.Layer(mk.Layer); err == nil && g.HasTensor(l.Tensor) {
				masks = append(masks, mk)
			}
		}
	}
	if err := m.applyMasks(g, masks); err != nil {
		return nil, err
	}
	inputs := []string{e.Input.Name}
	var pre []string // each run-time mask's input values
	for i, mk := range cfg.MaskInputs {
		l, err := m.Layer(mk.Layer)
		if err != nil {
			return nil, err
		}
		if !g.HasTensor(l.Tensor) {
			continue // before From
		}
		if len(mk.Fill) != l.Channels {
			return nil, plugin.BadInputf("mask input for layer %q has %d fill values, the layer has %d channels", mk.Layer, len(mk.Fill), l.Channels)
		}
		if mk.Cap != nil {
			if len(mk.Cap) != l.Channels {
				return nil, plugin.BadInputf("cap for layer %q has %d values, the layer has %d channels", mk.Layer, len(mk.Cap), l.Channels)
			}
			// From's input comes capped (PreMask's values).
			if l.Tensor != e.From.Tensor {
				if err := g.InsertClamp(l.Tensor, l.Rank, mk.Cap); err != nil {
					return nil, err
				}
			}
		}
		name := fmt.Sprintf("tcore_keep_%d", i)
		raw, err := g.InsertMaskInput(l.Tensor, l.Rank, mk.Fill, name)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, name)
		pre = append(pre, raw)
		e.Switchable = append(e.Switchable, l)
	}
	outs := []string{m.Embedding}
	dims := [][]int64{{int64(m.Dim)}}
	for _, l := range layers {
		if cfg.RawLayers {
			outs = append(outs, l.Tensor)
			dims = append(dims, l.Dims)
			continue
		}
		name, err := g.AddChannelMean(l.Tensor, l.Rank)
		if err != nil {
			return nil, plugin.BadInput(err)
		}
		outs = append(outs, name)
		dims = append(dims, []int64{int64(l.Channels)})
	}
	if cfg.PreMask {
		for i, raw := range pre {
			outs = append(outs, raw)
			dims = append(dims, e.Switchable[i].Dims)
		}
	}
	if err := g.SetOutputs(outs...); err != nil {
		return nil, err
	}
	g.Prune()
	b, err := g.Bytes()
	if err != nil {
		return nil, err
	}
	opt := cfg.ORT
	opt.Batch = m.Batch
	if e.sess, err = ort.NewSession(b, inputs, outs, dims, opt); err != nil {
		return nil, err
	}
	return e, nil
}

// applyMasks builds masks into g: each switched-off channel becomes its
// fill, or with Weights a regression on the kept channels.
func (m *Model) applyMasks(g *onnxgraph.Model, masks []Mask) error {
	for _, mk := range masks {
		l, err := m.Layer(mk.Layer)
		if err != nil {
			return err
		}
		if len(mk.Keep) > l.Channels || (mk.Fill != nil && len(mk.Fill) != len(mk.Keep)) {
			return plugin.BadInputf("mask for layer %q has %d channels, the layer has %d", mk.Layer, len(mk.Keep), l.Channels)
		}
		keep := make([]bool, l.Channels)
		var fill []float32
		if mk.Fill != nil {
			fill = make([]float32, l.Channels)
			copy(fill, mk.Fill)
		}
		for c := range keep {
			keep[c] = c >= len(mk.Keep) || mk.Keep[c]
		}
		if mk.Cap != nil {
			if len(mk.Cap) != l.Channels {
				return plugin.BadInputf("cap for layer %q has %d values, the layer has %d channels", mk.Layer, len(mk.Cap), l.Channels)
			}
			if err := g.InsertClamp(l.Tensor, l.Rank, mk.Cap); err != nil {
				return err
			}
		}
		if mk.Weights != nil {
			if err := insertRegression(g, l, keep, fill, mk.Weights); err != nil {
				return err
			}
			continue
		}
		all := true
		for _, k := range keep {
			all = all && k
		}
		if all {
			continue // a cap alone
		}
		if err := g.InsertMask(l.Tensor, l.Rank, keep, fill); err != nil {
			return err
		}
	}
	return nil
}

// insertRegression fills l's switched-off channels by the regression
// weights on its kept channels: one linear channel map, identity rows for
// the kept channels.
func insertRegression(g *onnxgraph.Model, l Layer, keep []bool, fill, weights []float32) error {
	c := l.Channels
	if len(weights) != c*c {
		return plugin.BadInputf("mask for layer %q: %d regression weights, want %d x %d", l.Name, len(weights), c, c)
	}
	w := make([]float32, c*c)
	b := make([]float32, c)
	for o := 0; o < c; o++ {
		if keep[o] {
			w[o*c+o] = 1
			continue
		}
		if fill != nil {
			b[o] = fill[o]
		}
		for i := 0; i < c; i++ {
			if keep[i] {
				w[o*c+i] = weights[o*c+i]
			}
		}
	}
	return g.InsertChannelMap(l.Tensor, l.Rank, w, b)
}

// WithCaps adds per-layer caps (nil: none) to masks, and a mask that only
// caps for a capped layer that masks nothing; in layer-name order.
func WithCaps(masks []Mask, caps map[string][]float32) []Mask {
	if caps == nil {
		return masks
	}
	out := append([]Mask(nil), masks...)
	have := map[string]bool{}
	for i := range out {
		out[i].Cap = caps[out[i].Layer]
		have[out[i].Layer] = true
	}
	for name, c := range caps {
		if !have[name] {
			out = append(out, Mask{Layer: name, Cap: c})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Layer < out[b].Layer })
	return out
}

// MasksOf turns per-layer keep flags, fill values and regression weights
// (nil: constant fills) into masks (only the layers with a channel
// switched off), in layer-name order.
func MasksOf(keep map[string][]bool, fill, weights map[string][]float32) []Mask {
	var out []Mask
	for name, k := range keep {
		all := true
		for _, v := range k {
			all = all && v
		}
		if !all {
			out = append(out, Mask{Layer: name, Keep: k, Fill: fill[name], Weights: weights[name]})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Layer < out[b].Layer })
	return out
}

// Norm is an input normalisation given to the encoder from outside its
// graph (the embed stage's mean, std and channel_order): per channel
// (x - Mean) / Std on RGB values in [0, 1], channels reversed first when
// BGR.
type Norm struct {
	Mean []float32 `json:"mean,omitempty"`
	Std  []float32 `json:"std,omitempty"`
	BGR  bool      `json:"bgr,omitempty"`
}

// IsZero reports whether n changes nothing.
func (n Norm) IsZero() bool { return len(n.Mean) == 0 && !n.BGR }

// ParseNorm reads a Norm recorded under arrowio.PreprocessKey ("": none).
func ParseNorm(s string) (Norm, error) {
	var n Norm
	if s == "" {
		return n, nil
	}
	if err := json.Unmarshal([]byte(s), &n); err != nil {
		return n, fmt.Errorf("%s %q: %w", arrowio.PreprocessKey, s, err)
	}
	return n, nil
}

// Norm returns the normalisation the model's graph applies to its input
// because tcore put it there (zero when none).
func (m *Model) Norm() Norm {
	n, _ := ParseNorm(m.src.Meta(arrowio.PreprocessKey))
	return n
}

// Normalise puts n inside the model's graph, so that every session and
// export made from m afterwards takes images in [0, 1], RGB, and records
// it in the graph's metadata (which exports keep). A model that already
// carries n is left alone; one that carries another normalisation is an
// error (normalising twice would be silently wrong). Call it before
// making sessions.
func (m *Model) Normalise(n Norm) error {
	if n.IsZero() {
		return nil
	}
	if len(n.Mean) != len(n.Std) || (len(n.Mean) != 0 && len(n.Mean) != m.C) {
		return plugin.BadInputf("encoder %s: mean and std need %d values each, got %d and %d", m.Source(), m.C, len(n.Mean), len(n.Std))
	}
	for _, s := range n.Std {
		if s == 0 {
			return plugin.BadInputf("encoder %s: a std of 0", m.Source())
		}
	}
	if n.BGR && m.C != 3 {
		return plugin.BadInputf("encoder %s: channel order bgr for a %d-channel input", m.Source(), m.C)
	}
	b, _ := json.Marshal(n)
	if cur := m.src.Meta(arrowio.PreprocessKey); cur != "" {
		if cur == string(b) {
			return nil
		}
		return plugin.BadInputf("encoder %s: its graph already normalises its input (%s); another normalisation (%s) would apply twice", m.Source(), cur, b)
	}
	if err := m.src.InsertInputNorm(m.NHWC, n.Mean, n.Std, n.BGR); err != nil {
		return plugin.BadInputf("encoder %s: %v", m.Source(), err)
	}
	m.src.SetMeta(arrowio.PreprocessKey, string(b))
	return nil
}

// Smoothed returns a copy of m whose graph blurs its input first: a
// Gaussian of standard deviation sigma input pixels, each channel on its
// own (onnxgraph.InsertInputBlur, recorded in the metadata). Its layers,
// embedding and shapes are m's; every session and export made from it
// blurs. m itself does not change.
func (m *Model) Smoothed(sigma float64) (*Model, error) {
	g := m.src.Clone()
	if err := g.InsertInputBlur(m.NHWC, m.C, sigma); err != nil {
		return nil, plugin.BadInputf("encoder %s: %v", m.Source(), err)
	}
	m.mu.Lock()
	shapes := make(map[string][]int64, len(m.shapes))
	for k, v := range m.shapes {
		shapes[k] = v
	}
	m.mu.Unlock()
	return &Model{Input: m.Input, C: m.C, H: m.H, W: m.W, NHWC: m.NHWC, Embedding: m.Embedding, Dim: m.Dim,
		Batch: m.Batch, Candidates: m.Candidates, src: g, shapes: shapes}, nil
}

// Smoothing is the sigma of the blur the model's graph puts in front of
// its input (Smoothed, or a file exported from a smoothed model), or 0.
func (m *Model) Smoothing() float64 {
	s := m.src.Meta(onnxgraph.SmoothMeta)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return v
}
