package arrowio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
)

// Shard is one share of a sharded stage's rows: of the blocks of Unit
// rows a table is cut into, the ones numbered I, I+N, I+2N, ... (0-based).
// Interleaving the blocks keeps every share's blocks aligned with the
// batches an unsharded run would make, without knowing the row count up
// front; Concat puts the shares' outputs back in order.
type Shard struct {
	I, N, Unit int
}

// ShardKey is the schema metadata key under which a share's table says
// which share it is ("i/n of blocks of u"); Concat checks it and drops it.
const ShardKey = "tcore.shard"

// Mark returns schema marked as the shard's share.
func (s Shard) Mark(schema *arrow.Schema) *arrow.Schema {
	return WithMeta(schema, ShardKey, fmt.Sprintf("%d/%d of blocks of %d", s.I, s.N, s.Unit))
}

// ParseShard reads "i/n" (0 <= i < n).
func ParseShard(s string) (i, n int, err error) {
	if _, err := fmt.Sscanf(s, "%d/%d", &i, &n); err != nil || fmt.Sprintf("%d/%d", i, n) != s {
		return 0, 0, fmt.Errorf("shard %q: want i/n, e.g. 0/4", s)
	}
	if n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("shard %q: want 0 <= i < n", s)
	}
	return i, n, nil
}

// Check says whether the shard is well formed.
func (s Shard) Check() error {
	if s.N < 1 || s.I < 0 || s.I >= s.N || s.Unit < 1 {
		return fmt.Errorf("shard %d/%d of blocks of %d rows: want 0 <= i < n and blocks of at least a row", s.I, s.N, s.Unit)
	}
	return nil
}

// Rows returns a reader of the rows of r in the shard's blocks, as slices
// of r's records. It takes over the caller's reference to r: releasing the
// result releases r.
func (s Shard) Rows(r array.RecordReader) array.RecordReader {
	return &shardReader{src: r, s: s, refs: 1}
}

type shardReader struct {
	src   array.RecordReader
	s     Shard
	row   int64          // rows of src consumed
	queue []arrow.Record // slices of the current source record still to hand out
	cur   arrow.Record
	refs  int64
}

func (r *shardReader) Schema() *arrow.Schema { return r.src.Schema() }
func (r *shardReader) Record() arrow.Record  { return r.cur }
func (r *shardReader) Err() error            { return r.src.Err() }
func (r *shardReader) Retain()               { atomic.AddInt64(&r.refs, 1) }

func (r *shardReader) Release() {
	if atomic.AddInt64(&r.refs, -1) != 0 {
		return
	}
	r.drop()
	for _, q := range r.queue {
		q.Release()
	}
	r.queue = nil
	r.src.Release()
}

func (r *shardReader) drop() {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
}

func (r *shardReader) Next() bool {
	r.drop()
	for len(r.queue) == 0 {
		if !r.src.Next() {
			return false
		}
		rec := r.src.Record()
		n, unit := rec.NumRows(), int64(r.s.Unit)
		for lo := int64(0); lo < n; {
			abs := r.row + lo
			block := abs / unit
			end := min(n, (block+1)*unit-r.row)
			if int(block%int64(r.s.N)) == r.s.I {
				r.queue = append(r.queue, rec.NewSlice(lo, end))
			}
			lo = end
		}
		r.row += n
	}
	r.cur, r.queue = r.queue[0], r.queue[1:]
	return true
}

// Concat writes the outputs of the n shares of a sharded stage (paths, in
// share order) as one Arrow IPC file at dst, taking one batch from each
// share in turn: what the stage writes unsharded, byte for byte, when each
// of its batches is one block. The shares must have one schema, and their
// batches must interleave (every batch of the whole but the last the same
// size); otherwise nothing is written. It returns the rows written.
func Concat(ctx context.Context, paths []string, dst string) (WriteResult, error) {
	if len(paths) == 0 {
		return WriteResult{}, errors.New("concat: no shares given")
	}
	var readers []array.RecordReader
	defer func() {
		for _, r := range readers {
			r.Release()
		}
	}()
	unit := ""
	for i, p := range paths {
		r, err := OpenDataset(ctx, p, ReadOptions{})
		if err != nil {
			return WriteResult{}, err
		}
		readers = append(readers, r)
		md := r.Schema().Metadata()
		k := md.FindKey(ShardKey)
		if k < 0 {
			return WriteResult{}, dataErr(p, "", -1, "concat: not a share of a sharded stage (no %s in its schema)", ShardKey)
		}
		var si, sn int
		var su string
		if _, err := fmt.Sscanf(md.Values()[k], "%d/%d of blocks of %s", &si, &sn, &su); err != nil || si != i || sn != len(paths) || (i > 0 && su != unit) {
			return WriteResult{}, dataErr(p, "", -1, "concat: it is share %q, but comes %d of %d here (give the shares of one run, in share order)", md.Values()[k], i, len(paths))
		}
		unit = su
		if i > 0 && (!r.Schema().Equal(readers[0].Schema()) || !withoutMeta(r.Schema(), ShardKey).Metadata().Equal(withoutMeta(readers[0].Schema(), ShardKey).Metadata())) {
			return WriteResult{}, dataErr(p, "", -1, "concat: its schema differs from %s's: not a share of the same stage run", paths[0])
		}
	}
	schema := withoutMeta(readers[0].Schema(), ShardKey)
	return writeAtomic(dst, func(w io.WriteSeeker) (int64, error) {
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(schema))
		if err != nil {
			return 0, err
		}
		rows, err := interleave(ctx, paths, readers, fw.Write)
		if cerr := fw.Close(); err == nil {
			err = cerr
		}
		return rows, err
	})
}

// interleave hands write one batch of each reader in turn until one runs
// out; every reader must then be out too, and only the last batch written
// may be shorter than the first.
func interleave(ctx context.Context, paths []string, readers []array.RecordReader, write func(arrow.Record) error) (int64, error) {
	var rows, unit int64
	short := "" // the share whose short batch was written
	for {
		for i, r := range readers {
			if err := ctx.Err(); err != nil {
				return rows, err
			}
			if !r.Next() {
				if err := r.Err(); err != nil {
					return rows, err
				}
				return rows, allDone(paths, readers)
			}
			rec := r.Record()
			switch n := rec.NumRows(); {
			case short != "":
				return rows, dataErr(paths[i], "", -1, "concat: a batch follows %s's short last batch (shares of different runs, or out of order)", short)
			case unit == 0:
				unit = n
			case n > unit:
				return rows, dataErr(paths[i], "", -1, "concat: a batch of %d rows after batches of %d (not interleaved shares)", n, unit)
			case n < unit:
				short = paths[i]
			}
			if err := write(rec); err != nil {
				return rows, err
			}
			rows += rec.NumRows()
		}
	}
}

// allDone checks that no reader has a batch left once one ran out.
func allDone(paths []string, readers []array.RecordReader) error {
	for i, r := range readers {
		if r.Next() {
			return dataErr(paths[i], "", -1, "concat: has a batch left after another share ran out (not interleaved shares, or out of order)")
		}
		if err := r.Err(); err != nil {
			return err
		}
	}
	return nil
}

// withoutMeta returns s without the metadata key.
func withoutMeta(s *arrow.Schema, key string) *arrow.Schema {
	md := s.Metadata()
	i := md.FindKey(key)
	if i < 0 {
		return s
	}
	keys := append(append([]string(nil), md.Keys()[:i]...), md.Keys()[i+1:]...)
	vals := append(append([]string(nil), md.Values()[:i]...), md.Values()[i+1:]...)
	if len(keys) == 0 {
		return arrow.NewSchema(s.Fields(), nil)
	}
	m := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(s.Fields(), &m)
}
