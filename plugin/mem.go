package plugin

import (
	"fmt"
	"sort"
	"sync"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// Tables keeps whole tables in memory by port name. It serves as the Inputs
// and the Outputs of a run: handy for running a stage in process on small
// data, and in tests. Release drops every record it holds.
type Tables struct {
	mu sync.Mutex
	m  map[string]*Table
}

// Table is one port's schema and record batches.
type Table struct {
	Schema  *arrow.Schema
	Records []arrow.Record
}

// Rows returns the number of rows of the table.
func (t *Table) Rows() int64 {
	var n int64
	for _, r := range t.Records {
		n += r.NumRows()
	}
	return n
}

// NewTables returns an empty set of tables.
func NewTables() *Tables { return &Tables{m: map[string]*Table{}} }

// Put stores a table under port; it retains recs.
func (t *Tables) Put(port string, schema *arrow.Schema, recs ...arrow.Record) {
	for _, r := range recs {
		r.Retain()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.m[port]; ok {
		release(old)
	}
	t.m[port] = &Table{Schema: schema, Records: recs}
}

// Get returns the table of port, or nil. The records stay owned by t.
func (t *Tables) Get(port string) *Table {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[port]
}

// Release releases every record held.
func (t *Tables) Release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.m {
		release(v)
		delete(t.m, k)
	}
}

func release(tb *Table) {
	for _, r := range tb.Records {
		r.Release()
	}
	tb.Records = nil
}

// Open implements Inputs.
func (t *Tables) Open(port string) (array.RecordReader, error) {
	tb := t.Get(port)
	if tb == nil {
		return nil, fmt.Errorf("%w", ErrNotConnected)
	}
	return array.NewRecordReader(tb.Schema, tb.Records)
}

// Create implements Outputs: the port's table is replaced by what is
// written.
func (t *Tables) Create(port string, schema *arrow.Schema) (RecordWriter, error) {
	t.Put(port, schema)
	return &tableWriter{t: t, port: port}, nil
}

// CopyTo writes every table to out, one port after another in the order of
// their names (a stage that held its outputs until it knew they stand).
func (t *Tables) CopyTo(out Outputs) error {
	t.mu.Lock()
	ports := make([]string, 0, len(t.m))
	for k := range t.m {
		ports = append(ports, k)
	}
	t.mu.Unlock()
	sort.Strings(ports)
	for _, port := range ports {
		tb := t.Get(port)
		w, err := out.Create(port, tb.Schema)
		if err != nil {
			return err
		}
		for _, r := range tb.Records {
			if err := w.Write(r); err != nil {
				w.Close()
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

type tableWriter struct {
	t    *Tables
	port string
}

func (w *tableWriter) Write(rec arrow.Record) error {
	rec.Retain()
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	tb := w.t.m[w.port]
	tb.Records = append(tb.Records, rec)
	return nil
}

func (w *tableWriter) Close() error { return nil }
