package arrowio_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
)

// rebatch cuts the rows of recs into records of n rows, as a stage that
// batches by n (embed) writes them.
func rebatch(t *testing.T, recs []arrow.Record, n int) []arrow.Record {
	t.Helper()
	cols := make([]arrow.Array, recs[0].NumCols())
	var rows int64
	for c := range cols {
		var parts []arrow.Array
		for _, r := range recs {
			parts = append(parts, r.Column(c))
		}
		a, err := array.Concatenate(parts, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Release()
		cols[c] = a
		rows = int64(a.Len())
	}
	one := array.NewRecord(recs[0].Schema(), cols, rows)
	defer one.Release()
	var out []arrow.Record
	for lo := int64(0); lo < rows; lo += int64(n) {
		out = append(out, one.NewSlice(lo, min(rows, lo+int64(n))))
	}
	return out
}

func writeRecords(t *testing.T, path string, schema *arrow.Schema, recs []arrow.Record) {
	t.Helper()
	rr, err := array.NewRecordReader(schema, recs)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Release()
	if _, err := arrowio.WriteIPCFile(path, rr); err != nil {
		t.Fatal(err)
	}
}

// Sharding a table into n shares of blocks and concatenating the shares
// gives back the file written unsharded, byte for byte, for share counts
// that divide the blocks evenly, unevenly, and exceed them.
func TestShardsConcatToTheWhole(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	const rows, unit = 103, 10 // 11 blocks, the last of 3 rows
	schema, in := tabletest.Make(mem, arrowio.KindFeatures, rows, 17, 4, 1)
	defer func() {
		for _, r := range in {
			r.Release()
		}
	}()
	dir := t.TempDir()
	whole := rebatch(t, in, unit)
	writeRecords(t, filepath.Join(dir, "whole.arrow"), schema, whole)
	for _, r := range whole {
		r.Release()
	}
	want, _ := os.ReadFile(filepath.Join(dir, "whole.arrow"))
	for _, n := range []int{1, 2, 3, 4, 11, 13} {
		var parts []string
		total := 0
		for i := 0; i < n; i++ {
			rr, err := array.NewRecordReader(schema, in)
			if err != nil {
				t.Fatal(err)
			}
			sh := arrowio.Shard{I: i, N: n, Unit: unit}
			sr := sh.Rows(rr)
			var got []arrow.Record
			for sr.Next() {
				r := sr.Record()
				r.Retain()
				got = append(got, r)
				total += int(r.NumRows())
			}
			sr.Release()
			var share []arrow.Record
			if len(got) > 0 {
				share = rebatch(t, got, unit)
			}
			for _, r := range got {
				r.Release()
			}
			p := filepath.Join(dir, "part.arrow")
			p = strings.Replace(p, "part", "part-"+string(rune('a'+n))+string(rune('a'+i)), 1)
			writeRecords(t, p, sh.Mark(schema), share)
			for _, r := range share {
				r.Release()
			}
			parts = append(parts, p)
		}
		if total != rows {
			t.Fatalf("n=%d: the shares hold %d rows, want %d", n, total, rows)
		}
		dst := filepath.Join(dir, "cat.arrow")
		res, err := arrowio.Concat(context.Background(), parts, dst)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		got, _ := os.ReadFile(dst)
		if res.Rows != rows || string(got) != string(want) {
			t.Fatalf("n=%d: concat wrote %d rows, %d bytes; the whole is %d rows, %d bytes, and they differ", n, res.Rows, len(got), rows, len(want))
		}
		if n == 3 {
			// Out of order, a share missing, a share of another split:
			// refused, and nothing written.
			for name, bad := range map[string][]string{
				"swapped":     {parts[1], parts[0], parts[2]},
				"missing":     {parts[0], parts[1]},
				"not a share": {parts[0], parts[1], filepath.Join(dir, "whole.arrow")},
			} {
				out := filepath.Join(dir, "bad.arrow")
				if _, err := arrowio.Concat(context.Background(), bad, out); err == nil {
					t.Errorf("%s: concat accepted %v", name, bad)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("%s: a refused concat left %s", name, out)
				}
			}
		}
	}
}
