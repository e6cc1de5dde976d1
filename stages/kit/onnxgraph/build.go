package onnxgraph

import (
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Builder assembles a small model node by node (used for the project's own
// test encoders). Methods return the name of the tensor they write.
type Builder struct {
	m *Model
}

// NewBuilder starts a model with one float32 input of the given shape (-1:
// symbolic batch) at the given opset.
func NewBuilder(input string, shape []int64, opset int64) *Builder {
	in := floatValueInfo(input, len(shape))
	for i, d := range shape {
		if d >= 0 {
			in.Type.GetTensorType().Shape.Dim[i].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}
		} else {
			in.Type.GetTensorType().Shape.Dim[i].Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
		}
	}
	p := &onnx.ModelProto{
		IrVersion:    8,
		ProducerName: "tcore",
		OpsetImport:  []*onnx.OperatorSetIdProto{{Domain: "", Version: opset}},
		Graph:        &onnx.GraphProto{Name: "tcore", Input: []*onnx.ValueInfoProto{in}},
	}
	return &Builder{m: &Model{P: p, source: "built"}}
}

// Const adds an initializer and returns its name.
func (b *Builder) Const(dims []int64, data []float32) string { return b.m.AddConst(dims, data) }

// Op adds a node of op type with the given inputs and attributes; out
// names its output ("" for a fresh name).
func (b *Builder) Op(op string, out string, inputs []string, attrs ...*onnx.AttributeProto) string {
	if out == "" {
		out = b.m.fresh(op)
	}
	b.m.addNode(op, inputs, []string{out}, attrs...)
	return out
}

// Conv adds a 2-D convolution: w is [cout][cin][k][k] flattened, bias has
// cout values.
func (b *Builder) Conv(x, out string, w []float32, bias []float32, cout, cin, k, stride, pad int) string {
	if len(w) != cout*cin*k*k || len(bias) != cout {
		panic(fmt.Sprintf("onnxgraph: Conv: len(w)=%d len(bias)=%d for %dx%dx%dx%d", len(w), len(bias), cout, cin, k, k))
	}
	wn := b.Const([]int64{int64(cout), int64(cin), int64(k), int64(k)}, w)
	bn := b.Const([]int64{int64(cout)}, bias)
	p := int64(pad)
	return b.Op("Conv", out, []string{x, wn, bn},
		intsAttr("kernel_shape", int64(k), int64(k)), intsAttr("strides", int64(stride), int64(stride)),
		intsAttr("pads", p, p, p, p))
}

// Output declares tensor a graph output of the given rank.
func (b *Builder) Output(tensor string, rank int) {
	b.m.P.Graph.Output = append(b.m.P.Graph.Output, floatValueInfo(tensor, rank))
}

// Model returns the built model.
func (b *Builder) Model() *Model { return b.m }

// IntsAttr makes an integer-list attribute (a Transpose's perm).
func IntsAttr(name string, v ...int64) *onnx.AttributeProto { return intsAttr(name, v...) }

// IntAttr returns an integer attribute.
func IntAttr(name string, v int64) *onnx.AttributeProto { return intAttr(name, v) }

// Int64Const adds an int64 initializer and returns its name.
func (b *Builder) Int64Const(data ...int64) string {
	name := b.m.fresh("const")
	b.m.addInt64Init(name, data)
	return name
}

// Outputs adds a node with several outputs (named outs).
func (b *Builder) Outputs(op string, outs []string, inputs []string, attrs ...*onnx.AttributeProto) {
	b.m.addNode(op, inputs, outs, attrs...)
}

// AddInput declares another float32 input of the given shape (-1:
// symbolic).
func (b *Builder) AddInput(name string, shape []int64) {
	in := floatValueInfo(name, len(shape))
	for i, d := range shape {
		if d >= 0 {
			in.Type.GetTensorType().Shape.Dim[i].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}
		} else {
			in.Type.GetTensorType().Shape.Dim[i].Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: fmt.Sprintf("d%d", i)}
		}
	}
	b.m.P.Graph.Input = append(b.m.P.Graph.Input, in)
}

// OutputOf declares tensor a graph output of the given element type (an
// onnx.TensorProto_DataType) and rank.
func (b *Builder) OutputOf(tensor string, elem onnx.TensorProto_DataType, rank int) {
	vi := floatValueInfo(tensor, rank)
	vi.Type.GetTensorType().ElemType = int32(elem)
	b.m.P.Graph.Output = append(b.m.P.Graph.Output, vi)
}
