package arrowio

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// NewFeaturesRecord builds a features/v1 record of schema s from plain
// slices: ids and labels of n rows, and for each vector column after label
// (embedding, then the layers, in schema order) n*width values. The slices
// are copied. It panics when the lengths do not match the schema.
func NewFeaturesRecord(s *arrow.Schema, ids []uint64, labels []int32, cols [][]float32) arrow.Record {
	n := len(ids)
	if len(labels) != n || len(cols) != s.NumFields()-2 {
		panic(fmt.Sprintf("arrowio: NewFeaturesRecord: %d ids, %d labels, %d columns for %d vector fields", n, len(labels), len(cols), s.NumFields()-2))
	}
	arrs := make([]arrow.Array, 0, s.NumFields())
	idb := memory.NewBufferBytes(arrow.Uint64Traits.CastToBytes(append([]uint64(nil), ids...)))
	arrs = append(arrs, array.NewUint64Data(array.NewData(arrow.PrimitiveTypes.Uint64, n, []*memory.Buffer{nil, idb}, nil, 0, 0)))
	lb := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(append([]int32(nil), labels...)))
	arrs = append(arrs, array.NewInt32Data(array.NewData(arrow.PrimitiveTypes.Int32, n, []*memory.Buffer{nil, lb}, nil, 0, 0)))
	for i, c := range cols {
		f := s.Field(i + 2)
		t := f.Type.(*arrow.FixedSizeListType)
		if len(c) != n*int(t.Len()) {
			panic(fmt.Sprintf("arrowio: NewFeaturesRecord: column %s has %d values, want %d", f.Name, len(c), n*int(t.Len())))
		}
		vb := memory.NewBufferBytes(arrow.Float32Traits.CastToBytes(append([]float32(nil), c...)))
		vals := array.NewData(arrow.PrimitiveTypes.Float32, len(c), []*memory.Buffer{nil, vb}, nil, 0, 0)
		ld := array.NewData(t, n, []*memory.Buffer{nil}, []arrow.ArrayData{vals}, 0, 0)
		arrs = append(arrs, array.MakeFromData(ld))
		vals.Release()
		ld.Release()
	}
	rec := array.NewRecord(s, arrs, int64(n))
	for _, a := range arrs {
		a.Release()
	}
	return rec
}
