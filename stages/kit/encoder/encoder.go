// Package encoder runs any image encoder (ONNX) in ONNX Runtime for tcore:
// it finds the image input and the embedding, lists candidate probe layers
// of an arbitrary CNN or ViT, pools probed layers per channel inside the
// graph (full feature maps never leave ONNX Runtime), switches channels off
// with masks, and embeds batches of images.
package encoder

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Layer is a probed layer: its readable name, the graph tensor, its rank
// and its channel count.
type Layer struct {
	Name     string
	Tensor   string
	Rank     int
	Channels int
	// Dims is one sample's shape ([C, H, W] or [T, C]).
	Dims []int64
}

// Mask switches channels off: for the layer (readable name or tensor name),
// channel c becomes keep[c] ? x : fill[c] (fill nil: 0). Channels past the
// end of Keep are kept.
type Mask struct {
	Layer string
	Keep  []bool
	Fill  []float32
	// Weights, when set (channels x channels, row c for channel c), fill
	// a switched-off channel c with Fill[c] + sum_j Weights[c][j]*x_j over
	// the kept channels j (a regression on them) instead of Fill[c].
	Weights []float32
}

// Config says how to open an encoder.
type Config struct {
	// Layers to probe: names (readable or tensor names), or ["auto"].
	Layers []string
	// Embedding names the embedding output (default: the output called
	// "embedding", else the only rank-2 output).
	Embedding string
	// Masks to bake into the graph.
	Masks []Mask
	// RawLayers makes Embed return the probed layers' activations
	// themselves ([n, Dims...]) instead of their per-channel means.
	RawLayers bool
	// MaskInputs are layers whose channels are switched off at run time,
	// per sample (see Encoder.Masks): each entry's Layer and Fill are used,
	// its Keep is not.
	MaskInputs []Mask
	ORT        ort.Options
}

// Encoder is an opened encoder.
type Encoder struct {
	Input     onnxgraph.Input
	C, H, W   int
	NHWC      bool
	Embedding string
	Dim       int
	Layers    []Layer
	// Candidates are every probe-able tensor found, with shapes.
	Candidates []Layer
	// Switchable are the layers of Config.MaskInputs, in order.
	Switchable []Layer
	model      *onnxgraph.Model // the edited model the session runs
	sess       *ort.Session
}

// Open loads the encoder at path and prepares a session that outputs the
// embedding and the per-channel means of the probed layers.
func Open(path string, cfg Config) (*Encoder, error) {
	m, err := onnxgraph.Load(path)
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	return FromModel(m, cfg)
}

// FromModel is Open for a loaded model (which it does not change).
func FromModel(src *onnxgraph.Model, cfg Config) (*Encoder, error) {
	in, err := src.ImageInput()
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	e := &Encoder{Input: in}
	s := in.Shape
	switch {
	case s[1] == 3 || s[1] == 1:
		e.C, e.H, e.W = int(s[1]), int(s[2]), int(s[3])
	case s[3] == 3 || s[3] == 1:
		e.C, e.H, e.W, e.NHWC = int(s[3]), int(s[1]), int(s[2]), true
	default:
		return nil, plugin.BadInputf("encoder %s: input %q has shape %v: cannot tell the channel axis (want 1 or 3 channels)", src.Source(), in.Name, s)
	}
	if e.H <= 0 || e.W <= 0 {
		return nil, plugin.BadInputf("encoder %s: input %q has symbolic height or width %v; export it with a fixed size", src.Source(), in.Name, s)
	}
	if err := e.findEmbedding(src, cfg.Embedding); err != nil {
		return nil, err
	}
	shapes, err := e.probeShapes(src, cfg.ORT)
	if err != nil {
		return nil, err
	}
	e.Candidates = candidates(src, shapes, e.Embedding)
	if err := e.chooseLayers(src, cfg.Layers); err != nil {
		return nil, err
	}
	m := src.Clone()
	for _, mk := range cfg.Masks {
		l, err := e.resolve(mk.Layer, shapes)
		if err != nil {
			return nil, err
		}
		if len(mk.Keep) > l.Channels || (mk.Fill != nil && len(mk.Fill) != len(mk.Keep)) {
			return nil, plugin.BadInputf("mask for layer %q has %d channels, the layer has %d", mk.Layer, len(mk.Keep), l.Channels)
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
		if mk.Weights != nil {
			if err := insertRegression(m, l, keep, fill, mk.Weights); err != nil {
				return nil, err
			}
			continue
		}
		if err := m.InsertMask(l.Tensor, l.Rank, keep, fill); err != nil {
			return nil, err
		}
	}
	inputs := []string{in.Name}
	for i, mk := range cfg.MaskInputs {
		l, err := e.resolve(mk.Layer, shapes)
		if err != nil {
			return nil, err
		}
		if len(mk.Fill) != l.Channels {
			return nil, plugin.BadInputf("mask input for layer %q has %d fill values, the layer has %d channels", mk.Layer, len(mk.Fill), l.Channels)
		}
		name := fmt.Sprintf("tcore_keep_%d", i)
		if err := m.InsertMaskInput(l.Tensor, l.Rank, mk.Fill, name); err != nil {
			return nil, err
		}
		inputs = append(inputs, name)
		e.Switchable = append(e.Switchable, l)
	}
	outs := []string{e.Embedding}
	dims := [][]int64{{int64(e.Dim)}}
	for _, l := range e.Layers {
		if cfg.RawLayers {
			outs = append(outs, l.Tensor)
			dims = append(dims, l.Dims)
			continue
		}
		name, err := m.AddChannelMean(l.Tensor, l.Rank)
		if err != nil {
			return nil, plugin.BadInput(err)
		}
		outs = append(outs, name)
		dims = append(dims, []int64{int64(l.Channels)})
	}
	if err := m.SetOutputs(outs...); err != nil {
		return nil, err
	}
	m.Prune()
	e.model = m
	b, err := m.Bytes()
	if err != nil {
		return nil, err
	}
	e.sess, err = ort.NewSession(b, inputs, outs, dims, cfg.ORT)
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Encoder) findEmbedding(m *onnxgraph.Model, name string) error {
	outs := m.OutputNames()
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
			if _, s, _ := m.OutputShape(o); len(s) == 2 {
				rank2 = append(rank2, o)
			}
		}
		if len(rank2) != 1 {
			return plugin.BadInputf("encoder %s: cannot tell the embedding among outputs %v (name it with the embedding parameter)", m.Source(), outs)
		}
		name = rank2[0]
	}
	if !m.HasTensor(name) {
		return plugin.BadInputf("encoder %s: no embedding tensor %q (outputs: %v)", m.Source(), name, outs)
	}
	e.Embedding = name
	return nil
}

// probeShapes runs the model once on a zero image with every candidate
// tensor exposed, and returns their shapes.
func (e *Encoder) probeShapes(src *onnxgraph.Model, opt ort.Options) (map[string][]int64, error) {
	m := src.Clone()
	names := []string{e.Embedding}
	seen := map[string]bool{e.Embedding: true}
	for _, o := range src.OutputNames() {
		if !seen[o] {
			names, seen[o] = append(names, o), true
		}
	}
	for _, t := range src.NodeOutputs() {
		if probeOps[t.Op] && !seen[t.Tensor] {
			names, seen[t.Tensor] = append(names, t.Tensor), true
		}
	}
	if err := m.SetOutputs(names...); err != nil {
		return nil, err
	}
	out, err := e.probe(m, names, opt)
	if err != nil {
		return nil, plugin.BadInputf("encoder %s: %v", src.Source(), err)
	}
	es := out[e.Embedding]
	if len(es) != 2 {
		return nil, plugin.BadInputf("encoder %s: embedding %q has shape %v, want [N, D]", src.Source(), e.Embedding, es)
	}
	e.Dim = int(es[1])
	return out, nil
}

// probeOps are the node types whose outputs can be block outputs.
var probeOps = map[string]bool{"Relu": true, "Add": true, "Gelu": true, "LayerNormalization": true, "Clip": true, "Sigmoid": true, "Mul": true, "Concat": true, "MaxPool": true}

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
			maps = append(maps, t4{t.Tensor, [2]int64{s[2], s[3]}})
		case 3:
			if t.Op == "Add" {
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

func (e *Encoder) resolve(name string, shapes map[string][]int64) (Layer, error) {
	for _, l := range e.Candidates {
		if l.Name == name || l.Tensor == name {
			return l, nil
		}
	}
	if s, ok := shapes[name]; ok {
		if l, ok := layerOf(readable(name), name, s); ok {
			return l, nil
		}
	}
	names := make([]string, len(e.Candidates))
	for i, l := range e.Candidates {
		names[i] = l.Name
	}
	sort.Strings(names)
	return Layer{}, plugin.BadInputf("encoder has no layer %q (candidates: %s; any Relu/Add/Conv tensor name also works)", name, strings.Join(names, ", "))
}

func (e *Encoder) chooseLayers(m *onnxgraph.Model, want []string) error {
	if len(want) == 1 && want[0] == "auto" {
		e.Layers = e.Candidates
		return nil
	}
	shapes := map[string][]int64{}
	if len(want) > 0 {
		// Named tensors outside the candidates need their shapes.
		var err error
		if shapes, err = e.probeNamed(m, want); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, w := range want {
		l, err := e.resolve(w, shapes)
		if err != nil {
			return err
		}
		if seen[l.Tensor] {
			return plugin.BadInputf("layer %q listed twice", w)
		}
		seen[l.Tensor] = true
		e.Layers = append(e.Layers, l)
	}
	return nil
}

func (e *Encoder) probeNamed(m *onnxgraph.Model, names []string) (map[string][]int64, error) {
	var missing []string
	for _, n := range names {
		found := false
		for _, l := range e.Candidates {
			found = found || l.Name == n || l.Tensor == n
		}
		if !found {
			if !m.HasTensor(n) {
				_, err := e.resolve(n, nil)
				return nil, err
			}
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	c := m.Clone()
	if err := c.SetOutputs(missing...); err != nil {
		return nil, err
	}
	return e.probe(c, missing, ort.Options{Threads: 1})
}

// probe runs m (whose outputs are names) once on a zero image on the CPU
// and returns each output's shape.
func (e *Encoder) probe(m *onnxgraph.Model, names []string, opt ort.Options) (map[string][]int64, error) {
	b, err := m.Bytes()
	if err != nil {
		return nil, err
	}
	opt.Device = "cpu"
	s, err := ort.NewSession(b, []string{e.Input.Name}, names, nil, opt)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	shape := []int64{1, int64(e.C), int64(e.H), int64(e.W)}
	if e.NHWC {
		shape = []int64{1, int64(e.H), int64(e.W), int64(e.C)}
	}
	_, shapes, err := s.RunAlloc(make([]float32, e.C*e.H*e.W), shape)
	if err != nil {
		return nil, err
	}
	out := map[string][]int64{}
	for i, n := range names {
		out[n] = shapes[i]
	}
	return out, nil
}

// Model returns the edited model the session runs (masks baked in, pooled
// outputs added).
func (e *Encoder) Model() *onnxgraph.Model { return e.model }

// insertRegression fills l's switched-off channels by the regression
// weights on its kept channels: one linear channel map, identity rows for
// the kept channels.
func insertRegression(m *onnxgraph.Model, l Layer, keep []bool, fill, weights []float32) error {
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
	return m.InsertChannelMap(l.Tensor, l.Rank, w, b)
}

// ImageSize is the number of float32 values of one preprocessed image.
func (e *Encoder) ImageSize() int { return e.C * e.H * e.W }

func (e *Encoder) inDims() [][]int64 {
	dims := [][]int64{{int64(e.C), int64(e.H), int64(e.W)}}
	if e.NHWC {
		dims = [][]int64{{int64(e.H), int64(e.W), int64(e.C)}}
	}
	for _, l := range e.Switchable {
		c := int64(l.Channels)
		switch l.Rank {
		case 4:
			dims = append(dims, []int64{c, 1, 1})
		case 3:
			dims = append(dims, []int64{1, c})
		default:
			dims = append(dims, []int64{c})
		}
	}
	return dims
}

// Batch returns the input buffer of a batch of n images (n*ImageSize
// values, in the model's layout) to fill before Embed(n).
func (e *Encoder) Batch(n int) ([]float32, error) {
	b, err := e.sess.Buffers(int64(n), e.inDims())
	if err != nil {
		return nil, err
	}
	return b[0], nil
}

// Masks returns, for a batch of n, the run-time mask of each Switchable
// layer ([n*Channels]: 1 keeps sample i's channel c, 0 switches it to the
// layer's fill). They are reused between batches of the same n: set every
// value before each Embed(n).
func (e *Encoder) Masks(n int) ([][]float32, error) {
	b, err := e.sess.Buffers(int64(n), e.inDims())
	if err != nil {
		return nil, err
	}
	return b[1:], nil
}

// Embed runs the batch of n filled through Batch and returns the
// embeddings ([n*Dim]) and each layer's per-channel means ([n*Channels]),
// valid until the next Embed of the same n.
func (e *Encoder) Embed(n int) (emb []float32, layers [][]float32, err error) {
	outs, err := e.sess.Run(int64(n))
	if err != nil {
		return nil, nil, err
	}
	return outs[0], outs[1:], nil
}

// Close releases the session.
func (e *Encoder) Close() {
	if e.sess != nil {
		e.sess.Close()
	}
}

// ErrNoEncoder is returned when a stage needs an encoder and none is given.
var ErrNoEncoder = errors.New("no encoder given")

// MasksFromChannels reads a channels/v1 port into masks: channels with
// keep=false are switched off (zero fill: the kind carries no fill value),
// channels not listed are kept. An unconnected port gives no masks.
func MasksFromChannels(in plugin.Inputs, port string) ([]Mask, error) {
	r, err := in.Open(port)
	if errors.Is(err, plugin.ErrNotConnected) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Release()
	off := map[string][]int{}
	var order []string
	for r.Next() {
		rec := r.Record()
		ls := rec.Column(0).(*array.String)
		cs := rec.Column(1).(*array.Int32)
		ks := rec.Column(2).(*array.Boolean)
		for i := 0; i < int(rec.NumRows()); i++ {
			l := ls.Value(i)
			if _, ok := off[l]; !ok {
				order = append(order, l)
				off[l] = nil
			}
			if !ks.Value(i) {
				off[l] = append(off[l], int(cs.Value(i)))
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	var out []Mask
	for _, l := range order {
		if len(off[l]) == 0 {
			continue
		}
		n := 0
		for _, c := range off[l] {
			n = max(n, c+1)
		}
		keep := make([]bool, n)
		for i := range keep {
			keep[i] = true
		}
		for _, c := range off[l] {
			keep[c] = false
		}
		out = append(out, Mask{Layer: l, Keep: keep})
	}
	return out, nil
}

// Export opens the encoder at path with masks (and no probes), optionally
// lets edit change the graph (append a head, say), and writes the result to
// dst atomically.
func Export(path string, cfg Config, dst string, edit func(m *onnxgraph.Model, embedding string) error) error {
	cfg.Layers = nil
	enc, err := Open(path, cfg)
	if err != nil {
		return err
	}
	m := enc.Model().Clone()
	emb := enc.Embedding
	enc.Close()
	if edit != nil {
		if err := edit(m, emb); err != nil {
			return err
		}
	}
	b, err := m.Bytes()
	if err != nil {
		return err
	}
	af, err := arrowio.CreateAtomic(dst)
	if err != nil {
		return err
	}
	if _, err := af.Write(b); err != nil {
		af.Abort()
		return err
	}
	return af.Commit()
}
