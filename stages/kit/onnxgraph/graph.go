// Package onnxgraph reads, edits and writes ONNX models (the ModelProto of
// onnx.proto): expose intermediate tensors, pool them per channel inside the
// graph, insert per-channel masks, and compose an encoder with an MLP head
// into one classifier. It edits protobuf messages; it never hand-encodes
// protobuf.
package onnxgraph

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// ErrModel is wrapped by errors about a model file or its graph.
var ErrModel = errors.New("bad ONNX model")

// Model is an ONNX model being edited.
type Model struct {
	P      *onnx.ModelProto
	source string
	uniq   int
}

// Load reads an ONNX model file.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("onnxgraph: %w", err)
	}
	m, err := Parse(b, path)
	if err != nil {
		return nil, err
	}
	if err := m.inlineExternal(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return m, nil
}

// maxInline bounds the tensor bytes read from external data files: a
// model is handed to ONNX Runtime as one protobuf, which cannot pass 2 GiB.
const maxInline = 1800 << 20

// inlineExternal reads the initializers kept in external data files
// (location relative to dir) into the model, so that every session and
// export made from it stands alone, whatever the working directory and
// wherever an export is written.
func (m *Model) inlineExternal(dir string) error {
	total := 0
	for _, t := range m.P.Graph.Initializer {
		if t.DataLocation != onnx.TensorProto_EXTERNAL {
			continue
		}
		var loc string
		var off, n int64 = 0, -1
		for _, kv := range t.ExternalData {
			var err error
			switch kv.Key {
			case "location":
				loc = kv.Value
			case "offset":
				off, err = strconv.ParseInt(kv.Value, 10, 64)
			case "length":
				n, err = strconv.ParseInt(kv.Value, 10, 64)
			}
			if err != nil || off < 0 {
				return fmt.Errorf("onnxgraph: %s: %w: tensor %q: external data %s=%q", m.source, ErrModel, t.Name, kv.Key, kv.Value)
			}
		}
		if loc == "" || filepath.IsAbs(loc) || strings.Contains(filepath.ToSlash(loc), "../") {
			return fmt.Errorf("onnxgraph: %s: %w: tensor %q: external data location %q (want a file beside the model)", m.source, ErrModel, t.Name, loc)
		}
		f, err := os.Open(filepath.Join(dir, loc))
		if err != nil {
			return fmt.Errorf("onnxgraph: %s: tensor %q: %w", m.source, t.Name, err)
		}
		st, err := f.Stat()
		if err == nil && n < 0 {
			n = st.Size() - off
		}
		if err == nil && (off+n > st.Size() || n < 0) {
			err = fmt.Errorf("bytes %d-%d of a %d-byte file", off, off+n, st.Size())
		}
		if err == nil && total+int(n) > maxInline {
			err = fmt.Errorf("more than %d MiB of external data: too large for one ONNX Runtime session", maxInline>>20)
		}
		var b []byte
		if err == nil {
			b = make([]byte, n)
			_, err = f.ReadAt(b, off)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("onnxgraph: %s: tensor %q: external data %s: %v", m.source, t.Name, loc, err)
		}
		total += int(n)
		t.RawData, t.ExternalData, t.DataLocation = b, nil, onnx.TensorProto_DEFAULT
	}
	return nil
}

// Parse decodes an ONNX model; source names it in errors.
func Parse(b []byte, source string) (*Model, error) {
	var p onnx.ModelProto
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("onnxgraph: %s: %w: not an ONNX model (%v)", source, ErrModel, err)
	}
	if p.Graph == nil || len(p.Graph.Node) == 0 {
		return nil, fmt.Errorf("onnxgraph: %s: %w: no graph", source, ErrModel)
	}
	return &Model{P: &p, source: source}, nil
}

// Source returns the file the model came from.
func (m *Model) Source() string { return m.source }

// Clone returns a deep copy.
func (m *Model) Clone() *Model {
	return &Model{P: proto.Clone(m.P).(*onnx.ModelProto), source: m.source, uniq: m.uniq}
}

// Bytes encodes the model.
func (m *Model) Bytes() ([]byte, error) { return proto.Marshal(m.P) }

// Save writes the model to path.
func (m *Model) Save(path string) error {
	b, err := m.Bytes()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Opset returns the version of the default ("" or "ai.onnx") domain.
func (m *Model) Opset() int64 {
	for _, o := range m.P.OpsetImport {
		if o.Domain == "" || o.Domain == "ai.onnx" {
			return o.Version
		}
	}
	return 0
}

func (m *Model) fresh(prefix string) string {
	for {
		m.uniq++
		name := fmt.Sprintf("tcore/%s_%d", prefix, m.uniq)
		if !m.HasTensor(name) && !m.hasNode(name) {
			return name
		}
	}
}

// hasNode reports whether a node is called name (names made here for
// tensors and nodes share one counter, and a model saved by tcore and
// loaded again starts it afresh).
func (m *Model) hasNode(name string) bool {
	for _, n := range m.P.Graph.Node {
		if n.Name == name {
			return true
		}
	}
	return false
}

// HasTensor reports whether name is a graph input, an initializer or the
// output of a node.
func (m *Model) HasTensor(name string) bool {
	g := m.P.Graph
	for _, i := range g.Input {
		if i.Name == name {
			return true
		}
	}
	for _, t := range g.Initializer {
		if t.Name == name {
			return true
		}
	}
	for _, n := range g.Node {
		for _, o := range n.Output {
			if o == name {
				return true
			}
		}
	}
	return false
}

// Dim is one dimension of a declared shape: a size, or -1 when symbolic.
type Dim = int64

// Input is a graph input that is not an initializer.
type Input struct {
	Name  string
	Elem  int32 // onnx.TensorProto_DataType
	Shape []Dim
}

func shapeOf(t *onnx.TypeProto) (int32, []Dim) {
	tt := t.GetTensorType()
	if tt == nil {
		return 0, nil
	}
	var dims []Dim
	for _, d := range tt.GetShape().GetDim() {
		if v, ok := d.Value.(*onnx.TensorShapeProto_Dimension_DimValue); ok {
			dims = append(dims, v.DimValue)
		} else {
			dims = append(dims, -1)
		}
	}
	return tt.ElemType, dims
}

// Inputs returns the graph inputs that are not initializers.
func (m *Model) Inputs() []Input {
	inits := map[string]bool{}
	for _, t := range m.P.Graph.Initializer {
		inits[t.Name] = true
	}
	var out []Input
	for _, i := range m.P.Graph.Input {
		if inits[i.Name] {
			continue
		}
		e, s := shapeOf(i.Type)
		out = append(out, Input{Name: i.Name, Elem: e, Shape: s})
	}
	return out
}

// ImageInput returns the model's one image input: float32, rank 4 (NCHW or
// NHWC). A model with no such input or with several is an error.
func (m *Model) ImageInput() (Input, error) {
	var imgs []Input
	for _, in := range m.Inputs() {
		if in.Elem == int32(onnx.TensorProto_FLOAT) && len(in.Shape) == 4 {
			imgs = append(imgs, in)
		}
	}
	switch len(imgs) {
	case 1:
		if len(m.Inputs()) != 1 {
			return Input{}, fmt.Errorf("onnxgraph: %s: %w: %d inputs; an encoder takes one image input", m.source, ErrModel, len(m.Inputs()))
		}
		return imgs[0], nil
	case 0:
		return Input{}, fmt.Errorf("onnxgraph: %s: %w: no float32 rank-4 image input", m.source, ErrModel)
	}
	names := make([]string, len(imgs))
	for i, in := range imgs {
		names[i] = in.Name
	}
	return Input{}, fmt.Errorf("onnxgraph: %s: %w: %d image inputs (%s); an encoder takes one", m.source, ErrModel, len(imgs), strings.Join(names, ", "))
}

// OutputNames returns the graph's output names.
func (m *Model) OutputNames() []string {
	var out []string
	for _, o := range m.P.Graph.Output {
		out = append(out, o.Name)
	}
	return out
}

// OutputShape returns the declared element type and shape of a graph
// output.
func (m *Model) OutputShape(name string) (int32, []Dim, bool) {
	for _, o := range m.P.Graph.Output {
		if o.Name == name {
			e, s := shapeOf(o.Type)
			return e, s, true
		}
	}
	return 0, nil, false
}

func floatValueInfo(name string, rank int) *onnx.ValueInfoProto {
	shape := &onnx.TensorShapeProto{}
	for i := 0; i < rank; i++ {
		shape.Dim = append(shape.Dim, &onnx.TensorShapeProto_Dimension{})
	}
	tt := &onnx.TypeProto_Tensor{ElemType: int32(onnx.TensorProto_FLOAT)}
	if rank > 0 {
		tt.Shape = shape
	}
	return &onnx.ValueInfoProto{Name: name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: tt}}}
}

// SetOutputs makes names the graph's outputs, in order; each must be a
// tensor of the graph. Declared types of kept outputs are kept.
func (m *Model) SetOutputs(names ...string) error {
	old := map[string]*onnx.ValueInfoProto{}
	for _, o := range m.P.Graph.Output {
		old[o.Name] = o
	}
	var outs []*onnx.ValueInfoProto
	for _, n := range names {
		if !m.HasTensor(n) {
			return fmt.Errorf("onnxgraph: %s: %w: no tensor %q", m.source, ErrModel, n)
		}
		if o, ok := old[n]; ok {
			outs = append(outs, o)
		} else {
			outs = append(outs, floatValueInfo(n, 0))
		}
	}
	m.P.Graph.Output = outs
	return nil
}

// NodeOutputs lists the outputs of the graph's nodes with their op types,
// in graph order.
func (m *Model) NodeOutputs() []TensorOp {
	consts := map[string]bool{}
	for _, in := range m.P.Graph.Initializer {
		consts[in.Name] = true
	}
	var out []TensorOp
	for _, n := range m.P.Graph.Node {
		if n.OpType == "Constant" {
			for _, o := range n.Output {
				consts[o] = true
			}
		}
		computed := 0
		for _, in := range n.Input {
			if in != "" && !consts[in] {
				computed++
			}
		}
		for _, o := range n.Output {
			out = append(out, TensorOp{Tensor: o, Op: n.OpType, Inputs: n.Input, ComputedInputs: computed})
		}
	}
	return out
}

// TensorOp is a tensor, the type of the node that writes it and that
// node's inputs.
type TensorOp struct {
	Tensor, Op string
	Inputs     []string
	// ComputedInputs counts the inputs that are neither initializers nor
	// Constant outputs: a residual addition has two, a bias addition one.
	ComputedInputs int
}

func (m *Model) addNode(op string, inputs []string, outputs []string, attrs ...*onnx.AttributeProto) {
	m.P.Graph.Node = append(m.P.Graph.Node, &onnx.NodeProto{
		OpType: op, Name: m.fresh(strings.ToLower(op)), Input: inputs, Output: outputs, Attribute: attrs})
}

func (m *Model) addInit(name string, dims []int64, data []float32) {
	m.P.Graph.Initializer = append(m.P.Graph.Initializer, &onnx.TensorProto{
		Name: name, Dims: dims, DataType: int32(onnx.TensorProto_FLOAT), FloatData: data})
}

func (m *Model) addInt64Init(name string, data []int64) {
	m.P.Graph.Initializer = append(m.P.Graph.Initializer, &onnx.TensorProto{
		Name: name, Dims: []int64{int64(len(data))}, DataType: int32(onnx.TensorProto_INT64), Int64Data: data})
}

func intAttr(name string, v int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INT, I: v}
}

func intsAttr(name string, v ...int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INTS, Ints: v}
}

// AddChannelMean adds, inside the graph, the per-channel mean of tensor
// (rank 4 NCHW: over height and width; rank 3 [N, tokens, C]: over tokens)
// and returns the name of the new [N, C] tensor. It does not make it an
// output.
func (m *Model) AddChannelMean(tensor string, rank int) (string, error) {
	if !m.HasTensor(tensor) {
		return "", fmt.Errorf("onnxgraph: %s: %w: no tensor %q", m.source, ErrModel, tensor)
	}
	out := m.fresh("mean")
	switch rank {
	case 4:
		gap := m.fresh("gap")
		m.addNode("GlobalAveragePool", []string{tensor}, []string{gap})
		m.addNode("Flatten", []string{gap}, []string{out}, intAttr("axis", 1))
	case 3:
		if m.Opset() >= 18 {
			axes := m.fresh("axes")
			m.addInt64Init(axes, []int64{1})
			m.addNode("ReduceMean", []string{tensor, axes}, []string{out}, intAttr("keepdims", 0))
		} else {
			m.addNode("ReduceMean", []string{tensor}, []string{out}, intsAttr("axes", 1), intAttr("keepdims", 0))
		}
	case 2:
		return tensor, nil
	default:
		return "", fmt.Errorf("onnxgraph: %s: tensor %q has rank %d; per-channel means need rank 3 or 4", m.source, tensor, rank)
	}
	return out, nil
}

// rewire makes every consumer of from (and a graph output named from) use
// to instead, except the nodes listed in skip.
func (m *Model) rewire(from, to string, skip map[*onnx.NodeProto]bool) {
	for _, n := range m.P.Graph.Node {
		if skip[n] {
			continue
		}
		for i, in := range n.Input {
			if in == from {
				n.Input[i] = to
			}
		}
	}
}

// InsertMask switches channels of tensor off inside the graph: channel c
// becomes x*keep[c] + (1-keep[c])*fill[c] (fill nil: zero). The mask is
// baked in as constants; rank is the tensor's rank (4: NCHW, 3: [N, T, C],
// 2: [N, C]). Consumers of tensor read the masked tensor; a graph output
// named tensor keeps its name and is masked too.
func (m *Model) InsertMask(tensor string, rank int, keep []bool, fill []float32) error {
	if !m.HasTensor(tensor) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to mask", m.source, ErrModel, tensor)
	}
	c := len(keep)
	if fill != nil && len(fill) != c {
		panic(fmt.Sprintf("onnxgraph: InsertMask: len(fill)=%d, want %d", len(fill), c))
	}
	dims, err := maskDims(rank, c)
	if err != nil {
		return fmt.Errorf("onnxgraph: %s: tensor %q: %w", m.source, tensor, err)
	}
	mul := make([]float32, c)
	add := make([]float32, c)
	for i, k := range keep {
		if k {
			mul[i] = 1
		} else if fill != nil {
			add[i] = fill[i]
		}
	}
	mName, aName := m.fresh("mask"), m.fresh("fill")
	m.addInit(mName, dims, mul)
	m.addInit(aName, dims, add)
	raw := m.detach(tensor)
	prod := m.fresh("prod")
	m.addNode("Mul", []string{raw.from, mName}, []string{prod})
	m.addNode("Add", []string{prod, aName}, []string{raw.to})
	return m.sort()
}

// InsertClamp caps each channel of tensor from above inside the graph:
// channel c becomes min(x, hi[c]) (rank as for InsertMask). Consumers of
// tensor read the capped tensor.
func (m *Model) InsertClamp(tensor string, rank int, hi []float32) error {
	if !m.HasTensor(tensor) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to clamp", m.source, ErrModel, tensor)
	}
	dims, err := maskDims(rank, len(hi))
	if err != nil {
		return fmt.Errorf("onnxgraph: %s: tensor %q: %w", m.source, tensor, err)
	}
	cName := m.fresh("cap")
	m.addInit(cName, dims, hi)
	raw := m.detach(tensor)
	m.addNode("Min", []string{raw.from, cName}, []string{raw.to})
	return m.sort()
}

// InsertChannelMap replaces the c channels of tensor by a linear map of
// them: channel o becomes sum_i w[o*c+i]*x_i + b[o], the same at every
// position (a 1x1 convolution for rank 4, a MatMul over the last axis for
// ranks 3 and 2). A masked channel filled by a regression on the kept
// ones is one such map; the identity rows leave kept channels unchanged.
func (m *Model) InsertChannelMap(tensor string, rank int, w, b []float32) error {
	if !m.HasTensor(tensor) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to map", m.source, ErrModel, tensor)
	}
	c := len(b)
	if len(w) != c*c {
		panic(fmt.Sprintf("onnxgraph: InsertChannelMap: len(w)=%d, want %d", len(w), c*c))
	}
	if _, err := maskDims(rank, c); err != nil {
		return fmt.Errorf("onnxgraph: %s: tensor %q: %w", m.source, tensor, err)
	}
	raw := m.detach(tensor)
	wName, bName := m.fresh("mapw"), m.fresh("mapb")
	m.addInit(bName, []int64{int64(c)}, b)
	if rank == 4 {
		m.addInit(wName, []int64{int64(c), int64(c), 1, 1}, w)
		m.addNode("Conv", []string{raw.from, wName, bName}, []string{raw.to}, intsAttr("kernel_shape", 1, 1))
		return m.sort()
	}
	// x [.., c] times w transposed [c_in, c_out].
	wt := make([]float32, c*c)
	for o := 0; o < c; o++ {
		for i := 0; i < c; i++ {
			wt[i*c+o] = w[o*c+i]
		}
	}
	m.addInit(wName, []int64{int64(c), int64(c)}, wt)
	prod := m.fresh("mapped")
	m.addNode("MatMul", []string{raw.from, wName}, []string{prod})
	m.addNode("Add", []string{prod, bName}, []string{raw.to})
	return m.sort()
}

// maskDims is the shape of a per-channel mask of a rank-r tensor with c
// channels: [1, c, 1, 1] (NCHW), [1, 1, c] ([N, T, C]) or [1, c].
func maskDims(rank, c int) ([]int64, error) {
	switch rank {
	case 4:
		return []int64{1, int64(c), 1, 1}, nil
	case 3:
		return []int64{1, 1, int64(c)}, nil
	case 2:
		return []int64{1, int64(c)}, nil
	}
	return nil, fmt.Errorf("cannot mask a tensor of rank %d", rank)
}

type detached struct{ from, to string }

// InsertDirectionCap caps a rank-2 tensor ([N, D]) along directions from
// above: with u the k orthonormal directions (each D values) and hi their
// caps, x becomes x - sum_j max(0, x.u_j - hi_j) u_j. Consumers of tensor
// read the capped tensor. An input whose part along a direction is at or
// under its cap passes unchanged.
func (m *Model) InsertDirectionCap(tensor string, u [][]float32, hi []float32) error {
	if !m.HasTensor(tensor) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to cap", m.source, ErrModel, tensor)
	}
	k := len(u)
	if k == 0 || len(hi) != k {
		panic(fmt.Sprintf("onnxgraph: InsertDirectionCap: %d directions, %d caps", k, len(hi)))
	}
	d := len(u[0])
	ud, ut := make([]float32, d*k), make([]float32, k*d)
	for j, v := range u {
		if len(v) != d {
			panic(fmt.Sprintf("onnxgraph: InsertDirectionCap: direction %d has %d values, want %d", j, len(v), d))
		}
		for i, x := range v {
			ud[i*k+j] = x
			ut[j*d+i] = x
		}
	}
	uName, tName, hName := m.fresh("capdir"), m.fresh("capdirt"), m.fresh("caphi")
	m.addInit(uName, []int64{int64(d), int64(k)}, ud)
	m.addInit(tName, []int64{int64(k), int64(d)}, ut)
	m.addInit(hName, []int64{int64(k)}, hi)
	raw := m.detach(tensor)
	along, over, excess, back := m.fresh("along"), m.fresh("over"), m.fresh("excess"), m.fresh("back")
	m.addNode("MatMul", []string{raw.from, uName}, []string{along})
	m.addNode("Sub", []string{along, hName}, []string{over})
	m.addNode("Relu", []string{over}, []string{excess})
	m.addNode("MatMul", []string{excess, tName}, []string{back})
	m.addNode("Sub", []string{raw.from, back}, []string{raw.to})
	return m.sort()
}

// detach renames tensor's producer output (or, for a graph input, rewires
// its consumers) so that a node inserted from .from to .to sits between
// the producer and every consumer and graph output of tensor.
func (m *Model) detach(tensor string) detached {
	raw := m.fresh("unmasked")
	renamed := false
	for _, n := range m.P.Graph.Node {
		for i, o := range n.Output {
			if o == tensor {
				n.Output[i] = raw
				renamed = true
			}
		}
	}
	if !renamed {
		// A graph input: consumers read the masked copy.
		masked := m.fresh("masked")
		m.rewire(tensor, masked, nil)
		return detached{from: tensor, to: masked}
	}
	return detached{from: raw, to: tensor}
}

// InsertMaskInput is InsertMask with the keep flags read at run time: it
// adds the graph input named input, one value per sample and channel
// (shape [N, C, 1, 1], [N, 1, C] or [N, C] for tensors of rank 4, 3 and
// 2), and channel c of sample i becomes x*k + (1-k)*fill[c] for that
// input's value k. One session then scores many masks, a different one
// per sample of a batch if need be. It returns the name of the tensor
// the mask reads: tensor's values before the mask.
func (m *Model) InsertMaskInput(tensor string, rank int, fill []float32, input string) (string, error) {
	if !m.HasTensor(tensor) {
		return "", fmt.Errorf("onnxgraph: %s: %w: no tensor %q to mask", m.source, ErrModel, tensor)
	}
	if m.HasTensor(input) {
		return "", fmt.Errorf("onnxgraph: %s: %w: the mask input %q is already a tensor of the graph", m.source, ErrModel, input)
	}
	dims, err := maskDims(rank, len(fill))
	if err != nil {
		return "", fmt.Errorf("onnxgraph: %s: tensor %q: %w", m.source, tensor, err)
	}
	vi := floatValueInfo(input, rank)
	shape := vi.Type.GetTensorType().Shape
	shape.Dim[0].Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
	for i := 1; i < rank; i++ {
		shape.Dim[i].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: dims[i]}
	}
	m.P.Graph.Input = append(m.P.Graph.Input, vi)
	fName := m.fresh("fill")
	m.addInit(fName, dims, fill)
	raw := m.detach(tensor)
	one, off, rest, prod := m.fresh("one"), m.fresh("off"), m.fresh("rest"), m.fresh("prod")
	m.addInit(one, []int64{1}, []float32{1})
	// x*k + (1-k)*fill: two passes over the feature map (Mul, Add), the
	// second term one value per sample and channel.
	m.addNode("Sub", []string{one, input}, []string{off})
	m.addNode("Mul", []string{off, fName}, []string{rest})
	m.addNode("Mul", []string{raw.from, input}, []string{prod})
	m.addNode("Add", []string{prod, rest}, []string{raw.to})
	return raw.from, m.sort()
}

// sort puts the nodes in topological order (new nodes are appended at the
// end, possibly before their consumers).
func (m *Model) sort() error {
	g := m.P.Graph
	avail := map[string]bool{"": true}
	for _, i := range g.Input {
		avail[i.Name] = true
	}
	for _, t := range g.Initializer {
		avail[t.Name] = true
	}
	var out []*onnx.NodeProto
	left := g.Node
	for len(left) > 0 {
		var next []*onnx.NodeProto
		for _, n := range left {
			ready := true
			for _, in := range n.Input {
				if !avail[in] {
					ready = false
					break
				}
			}
			if ready {
				out = append(out, n)
				for _, o := range n.Output {
					avail[o] = true
				}
			} else {
				next = append(next, n)
			}
		}
		if len(next) == len(left) {
			return fmt.Errorf("onnxgraph: %s: %w: graph has a cycle or a missing input (node %s)", m.source, ErrModel, next[0].Name)
		}
		left = next
	}
	g.Node = out
	return nil
}

// Dense is one fully connected layer of a head: y = W x + B, then ReLU when
// Relu is set. W is row-major [Out][In].
type Dense struct {
	In, Out int
	W, B    []float32
	Relu    bool
}

// AppendHead appends an MLP head to the tensor feature ([N, In] of the first
// layer) and makes its result the only graph output, named output. The
// result is a classifier with the encoder's input and an output of logits.
func (m *Model) AppendHead(feature string, layers []Dense, output string) error {
	if !m.HasTensor(feature) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q for the head", m.source, ErrModel, feature)
	}
	x := feature
	for i, l := range layers {
		if len(l.W) != l.In*l.Out || len(l.B) != l.Out {
			panic(fmt.Sprintf("onnxgraph: AppendHead: layer %d: len(W)=%d len(B)=%d for %dx%d", i, len(l.W), len(l.B), l.Out, l.In))
		}
		if i > 0 && layers[i-1].Out != l.In {
			panic(fmt.Sprintf("onnxgraph: AppendHead: layer %d takes %d inputs, layer %d gives %d", i, l.In, i-1, layers[i-1].Out))
		}
		w, b := m.fresh("head_w"), m.fresh("head_b")
		m.addInit(w, []int64{int64(l.Out), int64(l.In)}, l.W)
		m.addInit(b, []int64{int64(l.Out)}, l.B)
		y := m.fresh("head")
		if i == len(layers)-1 && !l.Relu {
			y = output
		}
		m.addNode("Gemm", []string{x, w, b}, []string{y}, intAttr("transB", 1))
		if l.Relu {
			r := m.fresh("relu")
			if i == len(layers)-1 {
				r = output
			}
			m.addNode("Relu", []string{y}, []string{r})
			y = r
		}
		x = y
	}
	vi := floatValueInfo(output, 2)
	vi.Type.GetTensorType().Shape.Dim[1].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: int64(layers[len(layers)-1].Out)}
	m.P.Graph.Output = []*onnx.ValueInfoProto{vi}
	return m.Prune()
}

// Prune removes nodes and initializers that no graph output depends on.
func (m *Model) Prune() error {
	g := m.P.Graph
	need := map[string]bool{}
	for _, o := range g.Output {
		need[o.Name] = true
	}
	keep := make([]bool, len(g.Node))
	for i := len(g.Node) - 1; i >= 0; i-- {
		n := g.Node[i]
		for _, o := range n.Output {
			if need[o] {
				keep[i] = true
			}
		}
		if keep[i] {
			for _, in := range n.Input {
				need[in] = true
			}
		}
	}
	var nodes []*onnx.NodeProto
	for i, n := range g.Node {
		if keep[i] {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	var inits []*onnx.TensorProto
	for _, t := range g.Initializer {
		if need[t.Name] {
			inits = append(inits, t)
		}
	}
	g.Initializer = inits
	return nil
}

// WritingConv finds the last convolution that writes tensor: it walks back
// through Relu, Identity, Clip, BatchNormalization and Add (the first
// input: a residual block's main branch) to a Conv, and returns that
// Conv's weights, their dims [cout, cin, kh, kw], and per output channel
// the scale of any batch normalisation passed on the way (1 when folded).
func (m *Model) WritingConv(tensor string) (w []float32, dims []int64, scale []float32, err error) {
	prod := map[string]*onnx.NodeProto{}
	for _, n := range m.P.Graph.Node {
		for _, o := range n.Output {
			prod[o] = n
		}
	}
	var bn [][]float32
	t := tensor
	for steps := 0; steps < 64; steps++ {
		n, ok := prod[t]
		if !ok {
			break
		}
		switch n.OpType {
		case "Conv":
			w, dims, err = m.initializer(n.Input[1])
			if err != nil {
				return nil, nil, nil, err
			}
			scale = make([]float32, dims[0])
			for i := range scale {
				scale[i] = 1
				for _, s := range bn {
					if i < len(s) {
						scale[i] *= s[i]
					}
				}
			}
			return w, dims, scale, nil
		case "BatchNormalization":
			gamma, _, err1 := m.initializer(n.Input[1])
			variance, _, err2 := m.initializer(n.Input[4])
			if err1 != nil || err2 != nil {
				return nil, nil, nil, fmt.Errorf("onnxgraph: batch normalisation %s: parameters not constant", n.Name)
			}
			eps := float32(1e-5)
			for _, a := range n.Attribute {
				if a.Name == "epsilon" {
					eps = a.F
				}
			}
			s := make([]float32, len(gamma))
			for i := range s {
				s[i] = float32(math.Abs(float64(gamma[i]) / math.Sqrt(float64(variance[i]+eps))))
			}
			bn = append(bn, s)
		case "Relu", "Identity", "Clip", "Add", "LeakyRelu":
		default:
			return nil, nil, nil, fmt.Errorf("onnxgraph: no convolution writes %q (reached a %s)", tensor, n.OpType)
		}
		t = n.Input[0]
	}
	return nil, nil, nil, fmt.Errorf("onnxgraph: no convolution writes %q", tensor)
}

// initializer returns a float32 initializer's values and dims.
func (m *Model) initializer(name string) ([]float32, []int64, error) {
	for _, in := range m.P.Graph.Initializer {
		if in.Name != name {
			continue
		}
		if in.DataType != int32(onnx.TensorProto_FLOAT) {
			return nil, nil, fmt.Errorf("onnxgraph: initializer %s is not float32", name)
		}
		if len(in.FloatData) > 0 {
			return in.FloatData, in.Dims, nil
		}
		raw := in.RawData
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, in.Dims, nil
	}
	return nil, nil, fmt.Errorf("onnxgraph: %s is not an initializer", name)
}

// Meta returns the model's metadata value for key ("" when absent).
func (m *Model) Meta(key string) string {
	for _, p := range m.P.MetadataProps {
		if p.Key == key {
			return p.Value
		}
	}
	return ""
}

// SetMeta sets the model's metadata value for key.
func (m *Model) SetMeta(key, value string) {
	for _, p := range m.P.MetadataProps {
		if p.Key == key {
			p.Value = value
			return
		}
	}
	m.P.MetadataProps = append(m.P.MetadataProps, &onnx.StringStringEntryProto{Key: key, Value: value})
}

// DeleteMeta removes the model's metadata value for key, if any.
func (m *Model) DeleteMeta(key string) {
	m.P.MetadataProps = slices.DeleteFunc(m.P.MetadataProps, func(p *onnx.StringStringEntryProto) bool { return p.Key == key })
}

// InsertInputNorm puts the input normalisation inside the graph: the image
// input (channels on axis 1, or on axis 3 when nhwc) has its channel order
// reversed (bgr) and becomes (x - mean) / std per channel before any node
// reads it. The model then takes images in [0, 1], RGB.
func (m *Model) InsertInputNorm(nhwc bool, mean, std []float32, bgr bool) error {
	in, err := m.ImageInput()
	if err != nil {
		return err
	}
	c := len(mean)
	if c == 0 && !bgr {
		return nil
	}
	axis, dims := int64(1), []int64{1, int64(c), 1, 1}
	if nhwc {
		axis, dims = 3, []int64{1, 1, 1, int64(c)}
	}
	d := m.detach(in.Name)
	x := d.from
	var steps [][3]string // op, a, b
	if bgr {
		idx := m.fresh("bgr")
		m.addInt64Init(idx, []int64{2, 1, 0})
		steps = append(steps, [3]string{"Gather", idx, ""})
	}
	if c > 0 {
		mn, sd := m.fresh("mean"), m.fresh("std")
		m.addInit(mn, dims, mean)
		m.addInit(sd, dims, std)
		steps = append(steps, [3]string{"Sub", mn, ""}, [3]string{"Div", sd, ""})
	}
	for i, st := range steps {
		out := m.fresh("norm")
		if i == len(steps)-1 {
			out = d.to
		}
		if st[0] == "Gather" {
			m.addNode("Gather", []string{x, st[1]}, []string{out}, intAttr("axis", axis))
		} else {
			m.addNode(st[0], []string{x, st[1]}, []string{out})
		}
		x = out
	}
	return m.sort()
}

// FloatTensors returns the tensors of the graph that hold float32 values,
// by following element types from the inputs, initializers and constants
// through the nodes. Shape arithmetic (Shape, then Gather, Mul, Concat on
// int64) and comparisons are left out: a transformer's graph is full of
// them, and exposing one as a float output fails the whole session.
func (m *Model) FloatTensors() map[string]bool {
	const float = int32(onnx.TensorProto_FLOAT)
	typ := map[string]int32{}
	for _, in := range m.P.Graph.Input {
		if tt := in.GetType().GetTensorType(); tt != nil {
			typ[in.Name] = tt.ElemType
		}
	}
	for _, t := range m.P.Graph.Initializer {
		typ[t.Name] = t.DataType
	}
	attr := func(n *onnx.NodeProto, name string) *onnx.AttributeProto {
		for _, a := range n.Attribute {
			if a.Name == name {
				return a
			}
		}
		return nil
	}
	of := func(n *onnx.NodeProto, i int) int32 {
		if i < len(n.Input) {
			if t, ok := typ[n.Input[i]]; ok {
				return t
			}
		}
		return float // unknown: assume the common case
	}
	for _, n := range m.P.Graph.Node {
		var t int32
		switch n.OpType {
		case "Shape", "Size", "NonZero", "ArgMax", "ArgMin":
			t = int32(onnx.TensorProto_INT64)
		case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf":
			t = int32(onnx.TensorProto_BOOL)
		case "Cast":
			if a := attr(n, "to"); a != nil {
				t = int32(a.I)
			}
		case "Constant", "ConstantOfShape":
			t = float
			if a := attr(n, "value"); a != nil && a.T != nil {
				t = a.T.DataType
			} else if n.OpType == "Constant" && (attr(n, "value_int") != nil || attr(n, "value_ints") != nil) {
				t = int32(onnx.TensorProto_INT64)
			}
		case "Where":
			t = of(n, 1)
		default:
			t = of(n, 0)
		}
		for i, o := range n.Output {
			typ[o] = t
			if n.OpType == "TopK" && i == 1 {
				typ[o] = int32(onnx.TensorProto_INT64)
			}
		}
	}
	out := map[string]bool{}
	for name, t := range typ {
		if t == float {
			out[name] = true
		}
	}
	return out
}

// RenameInput renames the graph input from to to, in every node that reads
// it. It is an error when to already names a tensor of the graph.
func (m *Model) RenameInput(from, to string) error {
	if from == to {
		return nil
	}
	if m.HasTensor(to) {
		return fmt.Errorf("onnxgraph: %s: %w: cannot rename input %q to %q: the name is taken", m.source, ErrModel, from, to)
	}
	found := false
	for _, in := range m.P.Graph.Input {
		if in.Name == from {
			in.Name, found = to, true
		}
	}
	if !found {
		return fmt.Errorf("onnxgraph: %s: %w: no input %q", m.source, ErrModel, from)
	}
	m.rewire(from, to, nil)
	for _, o := range m.P.Graph.Output {
		if o.Name == from {
			o.Name = to
		}
	}
	return nil
}
