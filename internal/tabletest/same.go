package tabletest

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/plugin"
)

// Diff says how got differs from want (schema with its metadata, row
// count, or the first column whose values differ); nil when they hold the
// same rows, however batched. Two missing tables are the same.
func Diff(want, got *plugin.Table) error {
	switch {
	case want == nil && got == nil:
		return nil
	case got == nil:
		return fmt.Errorf("no table")
	case want == nil:
		return fmt.Errorf("a table where none was expected")
	}
	if !got.Schema.Equal(want.Schema) || !got.Schema.Metadata().Equal(want.Schema.Metadata()) {
		return fmt.Errorf("schema\n got %v\nwant %v", got.Schema, want.Schema)
	}
	wt := array.NewTableFromRecords(want.Schema, want.Records)
	defer wt.Release()
	gt := array.NewTableFromRecords(got.Schema, got.Records)
	defer gt.Release()
	if wt.NumRows() != gt.NumRows() {
		return fmt.Errorf("rows got=%d, want=%d", gt.NumRows(), wt.NumRows())
	}
	for c := 0; c < int(wt.NumCols()); c++ {
		if !chunkedEqual(wt.Column(c).Data(), gt.Column(c).Data()) {
			return fmt.Errorf("column %s differs", wt.Schema().Field(c).Name)
		}
	}
	return nil
}

func chunkedEqual(a, b *arrow.Chunked) bool {
	if a.Len() != b.Len() {
		return false
	}
	if a.Len() == 0 {
		return arrow.TypeEqual(a.DataType(), b.DataType())
	}
	ca, _ := array.Concatenate(a.Chunks(), memory.DefaultAllocator)
	cb, _ := array.Concatenate(b.Chunks(), memory.DefaultAllocator)
	defer ca.Release()
	defer cb.Release()
	return array.Equal(ca, cb)
}
