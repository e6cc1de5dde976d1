package arrowio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/thrift/lib/go/thrift"
)

// Parquet's page reader (Arrow v17) peeks past the end of a column chunk:
// when a chunk declares more values than its pages hold, it reads page
// headers out of stale buffer bytes, each an empty data page, for ever
// (found by FuzzOpenDataset: a 2 KiB file kept a reader busy, its memory
// growing, until killed). walkPages reads the chunk's page headers first:
// each page must lie inside the chunk, and the data pages must hold the
// values the chunk declares before the chunk ends.

// The fields of parquet.thrift's PageHeader that the walk reads.
const (
	pageType, pageCompressed                   = 1, 3
	pageData, pageDict, pageDataV2             = 5, 7, 8
	pageTypeData, pageTypeDict, pageTypeDataV2 = 0, 2, 3
	numValuesField                             = 1
	maxPageHeader                              = 16 << 20
)

// walkPages checks the pages of the chunk of n bytes at start in r, which
// declares values values.
func walkPages(r io.ReaderAt, start, n, values int64) error {
	chunk := make([]byte, n)
	if _, err := r.ReadAt(chunk, start); err != nil {
		return err
	}
	var seen int64
	for pos := int64(0); pos < n && seen < values; {
		buf := bytes.NewBuffer(chunk[pos:])
		h, err := readPageHeader(thrift.NewTCompactProtocolConf(&thrift.TMemoryBuffer{Buffer: buf}, &thrift.TConfiguration{MaxMessageSize: maxPageHeader}))
		if err != nil {
			return fmt.Errorf("page header at offset %d: %v", start+pos, err)
		}
		head := int64(len(chunk[pos:]) - buf.Len())
		if h.compressed < 0 || int64(h.compressed) > n-pos-head {
			return fmt.Errorf("page at offset %d: %d bytes in a chunk with %d left", start+pos, h.compressed, n-pos-head)
		}
		pos += head + int64(h.compressed)
		if h.typ == pageTypeData || h.typ == pageTypeDataV2 {
			if h.values < 0 {
				return fmt.Errorf("page at offset %d: %d values", start+pos, h.values)
			}
			seen += int64(h.values)
		}
	}
	if seen < values {
		return fmt.Errorf("chunk at offset %d declares %d values, its pages hold %d", start, values, seen)
	}
	return nil
}

type pageHeader struct {
	typ, compressed, values int32
}

// readPageHeader reads the fields of a PageHeader the walk needs,
// skipping the rest.
func readPageHeader(p *thrift.TCompactProtocol) (pageHeader, error) {
	ctx := context.Background()
	h := pageHeader{typ: -1, compressed: -1}
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return h, err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return h, err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case (id == pageType || id == pageCompressed) && t == thrift.I32:
			v, err := p.ReadI32(ctx)
			if err != nil {
				return h, err
			}
			if id == pageType {
				h.typ = v
			} else {
				h.compressed = v
			}
		case (id == pageData || id == pageDict || id == pageDataV2) && t == thrift.STRUCT:
			v, err := readNumValues(ctx, p)
			if err != nil {
				return h, err
			}
			if id != pageDict {
				h.values = v
			}
		default:
			if err := p.Skip(ctx, t); err != nil {
				return h, err
			}
		}
		if err := p.ReadFieldEnd(ctx); err != nil {
			return h, err
		}
	}
	if h.typ < 0 || h.compressed < 0 {
		return h, errors.New("no page type or size")
	}
	return h, p.ReadStructEnd(ctx)
}

// readNumValues reads a page-kind header struct, returning its
// num_values (field 1 in each of them).
func readNumValues(ctx context.Context, p *thrift.TCompactProtocol) (int32, error) {
	var n int32
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return 0, err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return 0, err
		}
		if t == thrift.STOP {
			break
		}
		if id == numValuesField && t == thrift.I32 {
			if n, err = p.ReadI32(ctx); err != nil {
				return 0, err
			}
		} else if err := p.Skip(ctx, t); err != nil {
			return 0, err
		}
		if err := p.ReadFieldEnd(ctx); err != nil {
			return 0, err
		}
	}
	return n, p.ReadStructEnd(ctx)
}
