package arrowio

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// ReadTruth reads ground truth as one truth/v1 record: a CSV file with the
// header row (or sample_id), is_poison, orig_label (the fixtures'
// truth.csv; is_poison 0/1 or false/true), or a truth/v1 Parquet or IPC
// file (what the poison stage writes). Errors name the file and row.
func ReadTruth(path string) (arrow.Record, error) {
	if strings.HasSuffix(strings.ToLower(path), ".csv") {
		return readTruthCSV(path)
	}
	r, err := OpenDataset(context.Background(), path, ReadOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Release()
	if k, _ := KindOf(r.Schema()); k != KindTruth {
		return nil, &DataError{File: path, Row: -1, Msg: fmt.Sprintf("table kind %s, want %s", k, KindTruth)}
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, TruthSchema())
	defer b.Release()
	for r.Next() {
		rec := r.Record()
		ids, ps, os := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Boolean), rec.Column(2).(*array.Int32)
		for i := 0; i < ids.Len(); i++ {
			b.Field(0).(*array.Uint64Builder).Append(ids.Value(i))
			b.Field(1).(*array.BooleanBuilder).Append(ps.Value(i))
			b.Field(2).(*array.Int32Builder).Append(os.Value(i))
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return b.NewRecord(), nil
}

func readTruthCSV(path string) (arrow.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	head, err := cr.Read()
	if err != nil {
		return nil, &DataError{File: path, Row: -1, Msg: fmt.Sprintf("no header: %v", err)}
	}
	want := [][]string{{"row", "sample_id"}, {"is_poison"}, {"orig_label"}}
	if len(head) != 3 {
		return nil, &DataError{File: path, Row: -1, Msg: fmt.Sprintf("header %v, want row,is_poison,orig_label", head)}
	}
	for i, names := range want {
		ok := false
		for _, n := range names {
			ok = ok || strings.TrimSpace(head[i]) == n
		}
		if !ok {
			return nil, &DataError{File: path, Column: head[i], Row: -1, Msg: fmt.Sprintf("header %v, want row,is_poison,orig_label", head)}
		}
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, TruthSchema())
	defer b.Release()
	seen := map[uint64]bool{}
	for row := int64(0); ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &DataError{File: path, Row: row, Msg: err.Error()}
		}
		id, err1 := strconv.ParseUint(strings.TrimSpace(rec[0]), 10, 64)
		p, err2 := strconv.ParseBool(strings.TrimSpace(rec[1]))
		o, err3 := strconv.ParseInt(strings.TrimSpace(rec[2]), 10, 32)
		for i, e := range []error{err1, err2, err3} {
			if e != nil {
				return nil, &DataError{File: path, Column: head[i], Row: row, Msg: fmt.Sprintf("%q: %v", rec[i], e)}
			}
		}
		if seen[id] {
			return nil, &DataError{File: path, Column: head[0], Row: row, Msg: fmt.Sprintf("duplicate sample_id %d", id)}
		}
		seen[id] = true
		b.Field(0).(*array.Uint64Builder).Append(id)
		b.Field(1).(*array.BooleanBuilder).Append(p)
		b.Field(2).(*array.Int32Builder).Append(int32(o))
	}
	return b.NewRecord(), nil
}
