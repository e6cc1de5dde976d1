package arrowio

import (
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// Held is a whole table held in memory as its record batches, for a stage
// that reads an input more than once (a port can be opened once).
type Held struct {
	Schema  *arrow.Schema
	Records []arrow.Record
}

// Hold reads every batch of r (which it does not release) and retains
// them; Release drops them.
func Hold(r array.RecordReader) (*Held, error) {
	h := &Held{Schema: r.Schema()}
	for r.Next() {
		rec := r.Record()
		rec.Retain()
		h.Records = append(h.Records, rec)
	}
	if err := r.Err(); err != nil {
		h.Release()
		return nil, err
	}
	return h, nil
}

// Reader reads the held records; the caller releases it.
func (h *Held) Reader() (array.RecordReader, error) {
	return array.NewRecordReader(h.Schema, h.Records)
}

// Rows returns the number of rows held.
func (h *Held) Rows() int64 {
	var n int64
	for _, r := range h.Records {
		n += r.NumRows()
	}
	return n
}

// Release drops the held records.
func (h *Held) Release() {
	for _, r := range h.Records {
		r.Release()
	}
	h.Records = nil
}
