package arrowio

import (
	"io"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// OpenIPC opens an Arrow IPC file or stream that tcore wrote (a run's node
// output, a plugin's output port) for a reader that checks the rows itself:
// unlike OpenDataset, it converts nothing and leaves the row checks
// (Validator) to the caller. Malformed data is still an error naming the
// file, never a panic. The caller must Release the reader.
func OpenIPC(path string, alloc memory.Allocator) (array.RecordReader, error) {
	format, err := DetectFormat(path)
	if err != nil {
		return nil, err
	}
	if format != FormatIPCFile && format != FormatIPCStream {
		return nil, dataErr(path, "", -1, "not an Arrow IPC file or stream (%s)", format)
	}
	src, closer, err := openIPC(path, format, ReadOptions{Alloc: alloc}.withDefaults())
	if err != nil {
		return nil, err
	}
	return &closing{RecordReader: src, c: closer, refs: 1}, nil
}

// closing closes its file when released for the last time.
type closing struct {
	array.RecordReader
	c    io.Closer
	refs int64
}

func (r *closing) Retain() { atomic.AddInt64(&r.refs, 1) }
func (r *closing) Release() {
	if atomic.AddInt64(&r.refs, -1) == 0 {
		r.RecordReader.Release()
		r.c.Close()
	}
}

var _ array.RecordReader = (*closing)(nil)
