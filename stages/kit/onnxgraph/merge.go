package onnxgraph

import (
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// Merge adds o's computation to m, beside m's own: every node of o, reading
// m's graph input of the same name wherever o reads its own, and o's
// initializers. The nodes and the tensors they compute are renamed with
// prefix; an initializer is shared when m has one of the same name and
// content (two variants of one encoder share their weights) and renamed
// otherwise. It returns the name each of o's tensors has in m. The two
// models must import the same opsets; o's graph outputs are not made m's
// (SetOutputs does that), and nodes with subgraphs are refused.
func (m *Model) Merge(o *Model, prefix string) (func(string) string, error) {
	if !sameOpsets(m.P.OpsetImport, o.P.OpsetImport) {
		return nil, fmt.Errorf("onnxgraph: %s: %w: cannot merge %s: they import different opsets", m.source, ErrModel, o.source)
	}
	if len(o.P.Functions) > 0 {
		return nil, fmt.Errorf("onnxgraph: %s: %w: cannot merge a model with local functions", o.source, ErrModel)
	}
	g, og := m.P.Graph, o.P.Graph
	name := map[string]string{"": ""}
	fresh := func(old string) (string, error) {
		n := prefix + old
		if m.HasTensor(n) {
			return "", fmt.Errorf("onnxgraph: %s: %w: cannot merge %s: the name %q is taken", m.source, ErrModel, o.source, n)
		}
		return n, nil
	}
	for _, in := range og.Input {
		if !m.HasTensor(in.Name) {
			return nil, fmt.Errorf("onnxgraph: %s: %w: cannot merge %s: it reads input %q, which this model lacks", m.source, ErrModel, o.source, in.Name)
		}
		name[in.Name] = in.Name
	}
	mine := map[string]*onnx.TensorProto{}
	for _, t := range g.Initializer {
		mine[t.Name] = t
	}
	var inits []*onnx.TensorProto
	for _, t := range og.Initializer {
		if same, ok := mine[t.Name]; ok && proto.Equal(same, t) {
			name[t.Name] = t.Name
			continue
		}
		n, err := fresh(t.Name)
		if err != nil {
			return nil, err
		}
		c := proto.Clone(t).(*onnx.TensorProto)
		c.Name, name[t.Name] = n, n
		inits = append(inits, c)
	}
	var nodes []*onnx.NodeProto
	for _, n := range og.Node {
		for _, a := range n.Attribute {
			if a.G != nil || len(a.Graphs) > 0 {
				return nil, fmt.Errorf("onnxgraph: %s: %w: cannot merge node %q: it has a subgraph", o.source, ErrModel, n.Name)
			}
		}
		c := proto.Clone(n).(*onnx.NodeProto)
		c.Name = prefix + n.Name
		for i, out := range n.Output {
			if out == "" {
				continue
			}
			nn, err := fresh(out)
			if err != nil {
				return nil, err
			}
			c.Output[i], name[out] = nn, nn
		}
		nodes = append(nodes, c)
	}
	for _, c := range nodes {
		for i, in := range c.Input {
			nn, ok := name[in]
			if !ok {
				return nil, fmt.Errorf("onnxgraph: %s: %w: node %q reads %q, which nothing writes", o.source, ErrModel, c.Name, in)
			}
			c.Input[i] = nn
		}
	}
	for _, vi := range og.ValueInfo {
		if nn, ok := name[vi.Name]; ok && nn != vi.Name {
			c := proto.Clone(vi).(*onnx.ValueInfoProto)
			c.Name = nn
			g.ValueInfo = append(g.ValueInfo, c)
		}
	}
	g.Initializer = append(g.Initializer, inits...)
	g.Node = append(g.Node, nodes...)
	return func(old string) string { return name[old] }, m.sort()
}

func sameOpsets(a, b []*onnx.OperatorSetIdProto) bool {
	version := func(ops []*onnx.OperatorSetIdProto) map[string]int64 {
		v := map[string]int64{}
		for _, o := range ops {
			d := o.Domain
			if d == "ai.onnx" {
				d = ""
			}
			v[d] = o.Version
		}
		return v
	}
	va, vb := version(a), version(b)
	if len(va) != len(vb) {
		return false
	}
	for d, v := range va {
		if vb[d] != v {
			return false
		}
	}
	return true
}

// AddOp appends a node of type op reading inputs and returns the name of
// its (one, new) output tensor.
func (m *Model) AddOp(op string, inputs []string, attrs ...*onnx.AttributeProto) string {
	out := m.fresh(op)
	m.addNode(op, inputs, []string{out}, attrs...)
	return out
}

// AddConst adds a float initializer of shape dims and returns its name.
func (m *Model) AddConst(dims []int64, data []float32) string {
	name := m.fresh("const")
	m.addInit(name, dims, data)
	return name
}

// AddInt64Const adds an int64 initializer holding data (shape
// [len(data)]) and returns its name.
func (m *Model) AddInt64Const(data ...int64) string {
	name := m.fresh("const")
	m.addInt64Init(name, data)
	return name
}

// AddSquaredNorm appends the squared Euclidean norm of each row of x
// ([N, D]) and returns the name of the new [N, 1] tensor.
func (m *Model) AddSquaredNorm(x string) string { return m.reduceRows("ReduceSumSquare", x) }

// AddRowMax appends the largest value of each row of x ([N, D]) and
// returns the name of the new [N, 1] tensor.
func (m *Model) AddRowMax(x string) string { return m.reduceRows("ReduceMax", x) }

// reduceRows appends the reduce op over axis 1 of x ([N, D]), keeping the
// axis, and returns the name of the new [N, 1] tensor: opset 18 takes the
// axes as an input, earlier opsets as an attribute.
func (m *Model) reduceRows(op, x string) string {
	if m.Opset() >= 18 {
		axes := m.fresh("axes")
		m.addInt64Init(axes, []int64{1})
		return m.AddOp(op, []string{x, axes}, intAttr("keepdims", 1))
	}
	return m.AddOp(op, []string{x}, intsAttr("axes", 1), intAttr("keepdims", 1))
}

// Select appends out = a where cond (a bool tensor, broadcast), b elsewhere,
// and makes out the graph's only output, declared as b is when b is an
// output. It is an error when out already names a tensor.
func (m *Model) Select(cond, a, b, out string) error {
	for _, t := range []string{cond, a, b} {
		if !m.HasTensor(t) {
			return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to select from", m.source, ErrModel, t)
		}
	}
	if m.HasTensor(out) {
		return fmt.Errorf("onnxgraph: %s: %w: cannot select into %q: the name is taken", m.source, ErrModel, out)
	}
	vi := floatValueInfo(out, 0)
	for _, o := range m.P.Graph.Output {
		if o.Name == b {
			vi = proto.Clone(o).(*onnx.ValueInfoProto)
			vi.Name = out
		}
	}
	m.addNode("Where", []string{cond, a, b}, []string{out})
	m.P.Graph.Output = []*onnx.ValueInfoProto{vi}
	return m.Prune()
}
