package arrowio

import (
	"encoding/json"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// fslKey records, in a Parquet file's schema metadata, which list columns
// were fixed-size lists and their size. Arrow's Parquet reader (Go, v17)
// loses the values of fixed_size_list columns, so WriteParquet stores them
// as plain lists and the reader turns them back.
const fslKey = "tcore.fixed_size_lists"

// listSchema returns s with fixed-size-list columns turned into lists, and
// whether any was.
func listSchema(s *arrow.Schema) (*arrow.Schema, bool) {
	sizes := map[string]int32{}
	fields := make([]arrow.Field, s.NumFields())
	for i, f := range s.Fields() {
		if t, ok := f.Type.(*arrow.FixedSizeListType); ok {
			sizes[f.Name] = t.Len()
			f.Type = arrow.ListOfField(t.ElemField())
		}
		fields[i] = f
	}
	if len(sizes) == 0 {
		return s, false
	}
	b, _ := json.Marshal(sizes)
	keys, vals := append([]string{}, s.Metadata().Keys()...), append([]string{}, s.Metadata().Values()...)
	keys, vals = append(keys, fslKey), append(vals, string(b))
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md), true
}

// toLists re-expresses rec under the list schema ls. The caller releases
// the result. Null fixed-size lists are not supported.
func toLists(rec arrow.Record, ls *arrow.Schema) (arrow.Record, error) {
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, c := range rec.Columns() {
		fsl, ok := c.(*array.FixedSizeList)
		if !ok {
			c.Retain()
			cols[i] = c
			continue
		}
		if fsl.NullN() > 0 {
			return nil, dataErr("", ls.Field(i).Name, -1, "null lists cannot be written to Parquet")
		}
		n := int(fsl.DataType().(*arrow.FixedSizeListType).Len())
		offsets := make([]int32, fsl.Len()+1)
		for j := range offsets {
			offsets[j] = int32((fsl.Offset() + j) * n)
		}
		lt := ls.Field(i).Type.(*arrow.ListType)
		data := array.NewData(lt, fsl.Len(),
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets))},
			[]arrow.ArrayData{fsl.ListValues().Data()}, 0, 0)
		cols[i] = array.MakeFromData(data)
		data.Release()
	}
	return array.NewRecord(ls, cols, rec.NumRows()), nil
}

// fromLists turns the list columns named in s's fslKey metadata back into
// fixed-size lists; it returns the restored schema, or nil when s has none.
func restoredSchema(s *arrow.Schema) (*arrow.Schema, map[int]int32, error) {
	v, ok := s.Metadata().GetValue(fslKey)
	if !ok {
		return nil, nil, nil
	}
	var sizes map[string]int32
	if err := json.Unmarshal([]byte(v), &sizes); err != nil {
		return nil, nil, fmt.Errorf("metadata %s: %v", fslKey, err)
	}
	idx := map[int]int32{}
	fields := make([]arrow.Field, s.NumFields())
	for i, f := range s.Fields() {
		if n, ok := sizes[f.Name]; ok {
			lt, ok := f.Type.(*arrow.ListType)
			if !ok {
				return nil, nil, fmt.Errorf("column %q: type %s, want a list", f.Name, f.Type)
			}
			f.Type = arrow.FixedSizeListOfField(n, lt.ElemField())
			idx[i] = n
		}
		fields[i] = f
	}
	var keys, vals []string
	for i, k := range s.Metadata().Keys() {
		if k != fslKey {
			keys, vals = append(keys, k), append(vals, s.Metadata().Values()[i])
		}
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md), idx, nil
}

// fromLists re-expresses rec (list columns) under the fixed-size schema fs.
// The caller releases the result.
func fromLists(rec arrow.Record, fs *arrow.Schema, idx map[int]int32, file string, startRow int64) (arrow.Record, error) {
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, c := range rec.Columns() {
		n, ok := idx[i]
		if !ok {
			c.Retain()
			cols[i] = c
			continue
		}
		l := c.(*array.List)
		if l.NullN() > 0 {
			return nil, dataErr(file, fs.Field(i).Name, startRow, "null list in a fixed-size column")
		}
		offs := l.Offsets()
		for j := 0; j < l.Len(); j++ {
			if offs[j+1]-offs[j] != n {
				return nil, dataErr(file, fs.Field(i).Name, startRow+int64(j), "list of %d values, want %d", offs[j+1]-offs[j], n)
			}
		}
		var vals arrow.Array
		if l.Len() > 0 {
			vals = array.NewSlice(l.ListValues(), int64(offs[0]), int64(offs[l.Len()]))
		} else {
			vals = array.NewSlice(l.ListValues(), 0, 0)
		}
		data := array.NewData(fs.Field(i).Type, l.Len(), []*memory.Buffer{nil},
			[]arrow.ArrayData{vals.Data()}, 0, 0)
		vals.Release()
		cols[i] = array.MakeFromData(data)
		data.Release()
	}
	return array.NewRecord(fs, cols, rec.NumRows()), nil
}
