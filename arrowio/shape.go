package arrowio

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// checkShape checks that every column of rec has the buffers its length
// needs: Arrow's IPC and Parquet readers take a batch's declared lengths
// on trust, so a few bytes could declare 10^12 rows and send every loop
// over them on a walk of hours (found by FuzzOpenDataset). Bounding the
// lengths by the bytes that back them bounds every later loop by the
// file's size.
func checkShape(rec arrow.Record) error {
	for c, col := range rec.Columns() {
		if int64(col.Len()) != rec.NumRows() {
			return fmt.Errorf("column %d holds %d rows in a batch of %d", c, col.Len(), rec.NumRows())
		}
		if err := checkData(col.Data(), 0); err != nil {
			return fmt.Errorf("column %q: %w", rec.ColumnName(c), err)
		}
	}
	return nil
}

func checkData(d arrow.ArrayData, depth int) error {
	if depth > 64 {
		return fmt.Errorf("nested deeper than 64 levels")
	}
	if d.Offset() < 0 || d.Len() < 0 {
		return fmt.Errorf("offset %d, length %d", d.Offset(), d.Len())
	}
	n := int64(d.Offset()) + int64(d.Len())
	bufs := d.Buffers()
	size := func(i int) int64 {
		if i >= len(bufs) || bufs[i] == nil {
			return 0
		}
		return int64(bufs[i].Len())
	}
	need := func(i int, bytes int64, what string) error {
		if n > 0 && size(i) < bytes {
			return fmt.Errorf("%d rows need %d bytes of %s, the batch has %d", n, bytes, what, size(i))
		}
		return nil
	}
	if d.DataType().ID() == arrow.NULL {
		return nil
	}
	if len(bufs) > 0 && bufs[0] != nil {
		if err := need(0, (n+7)/8, "validity bitmap"); err != nil {
			return err
		}
	} else if ad, ok := d.(*array.Data); ok && ad.NullN() > 0 {
		return fmt.Errorf("%d nulls declared without a validity bitmap", ad.NullN())
	}
	var err error
	switch dt := d.DataType().(type) {
	case *arrow.BinaryType, *arrow.StringType:
		err = need(1, 4*(n+1), "offsets")
	case *arrow.LargeBinaryType, *arrow.LargeStringType:
		err = need(1, 8*(n+1), "offsets")
	case *arrow.ListType:
		err = need(1, 4*(n+1), "offsets")
	case *arrow.LargeListType:
		err = need(1, 8*(n+1), "offsets")
	case *arrow.FixedSizeListType:
		if ch := d.Children(); len(ch) == 1 && int64(ch[0].Len()) < n*int64(dt.Len()) {
			err = fmt.Errorf("%d lists of %d need %d child values, the batch has %d", n, dt.Len(), n*int64(dt.Len()), ch[0].Len())
		}
	case *arrow.StructType:
		for i, ch := range d.Children() {
			if int64(ch.Offset()+ch.Len()) < n {
				err = fmt.Errorf("field %d holds %d rows of %d", i, ch.Offset()+ch.Len(), n)
			}
		}
	case arrow.FixedWidthDataType:
		err = need(1, (n*int64(dt.BitWidth())+7)/8, "values")
	}
	if err != nil {
		return err
	}
	for _, ch := range d.Children() {
		if err := checkData(ch, depth+1); err != nil {
			return err
		}
	}
	return nil
}
