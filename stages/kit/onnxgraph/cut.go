package onnxgraph

import (
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// CutAt makes tensor the graph's only input: the nodes that compute it,
// and every other node that reads the graph's inputs without passing
// through tensor, are removed; what tensor reaches stays, with the
// constants it reads. shape is tensor's shape without the batch axis,
// batch its batch size (0: dynamic). The rest of the graph then runs from
// values of tensor computed elsewhere: a session of the tail of a network.
// Graph outputs computed before the cut are dropped.
//
// A cut is refused (the graph unchanged) when a node that tensor reaches
// also reads another value computed from the graph's inputs (a skip
// connection around tensor, or a shape computed from the image): the tail
// would need that value too.
func (m *Model) CutAt(tensor string, shape []int64, batch int64) error {
	g := m.P.Graph
	if !m.HasTensor(tensor) {
		return fmt.Errorf("onnxgraph: %s: %w: no tensor %q to cut at", m.source, ErrModel, tensor)
	}
	inits := map[string]bool{}
	for _, t := range g.Initializer {
		inits[t.Name] = true
	}
	// fed: computed from a graph input; reach: computed from tensor.
	fed, reach := map[string]bool{}, map[string]bool{tensor: true}
	for _, in := range g.Input {
		if !inits[in.Name] {
			fed[in.Name] = true
		}
	}
	tail := make([]bool, len(g.Node))
	for i, n := range g.Node {
		var f, r bool
		for _, in := range n.Input {
			f = f || fed[in]
			r = r || reach[in]
		}
		for _, o := range n.Output {
			if o == tensor {
				r = false // tensor's own producer stays upstream
			}
		}
		tail[i] = r
		for _, o := range n.Output {
			fed[o] = fed[o] || f
			reach[o] = reach[o] || r
		}
	}
	for i, n := range g.Node {
		if !tail[i] {
			continue
		}
		for _, a := range n.Attribute {
			if a.G != nil || len(a.Graphs) > 0 {
				return fmt.Errorf("onnxgraph: %s: cannot cut at %q: node %s (%s) holds a subgraph", m.source, tensor, n.Name, n.OpType)
			}
		}
		for _, in := range n.Input {
			if in != "" && fed[in] && !reach[in] {
				return fmt.Errorf("onnxgraph: %s: cannot cut at %q: node %s (%s) also reads %q, computed from the input around it", m.source, tensor, n.Name, n.OpType, in)
			}
		}
	}
	var nodes []*onnx.NodeProto
	for i, n := range g.Node {
		// A node stays when tensor reaches it or when it computes
		// constants only (Prune drops those nothing reads).
		computes := false
		for _, o := range n.Output {
			computes = computes || fed[o]
		}
		if tail[i] || !computes {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	vi := floatValueInfo(tensor, len(shape)+1)
	dims := vi.Type.GetTensorType().Shape.Dim
	if batch > 0 {
		dims[0].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: batch}
	} else {
		dims[0].Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
	}
	for i, d := range shape {
		dims[i+1].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}
	}
	var inputs []*onnx.ValueInfoProto
	for _, in := range g.Input {
		if inits[in.Name] {
			inputs = append(inputs, in)
		}
	}
	g.Input = append(inputs, vi)
	var infos []*onnx.ValueInfoProto
	for _, v := range g.ValueInfo {
		if v.Name != tensor {
			infos = append(infos, v)
		}
	}
	g.ValueInfo = infos
	// Outputs computed before the cut are no longer the graph's.
	var outs []*onnx.ValueInfoProto
	for _, o := range g.Output {
		if m.HasTensor(o.Name) {
			outs = append(outs, o)
		}
	}
	g.Output = outs
	return nil
}
