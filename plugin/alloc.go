package plugin

import (
	"math/bits"
	"sync"

	"github.com/apache/arrow/go/v17/arrow/memory"
)

// recycler is the allocator of the IPC readers on both sides of the wire.
// Arrow's IPC reader fills every byte it allocates (message bodies, then each
// buffer), so the memory need not be zeroed: large allocations come from
// per-size-class pools of released buffers, which spares the clearing and
// most of the garbage collection that 4 MiB batches otherwise cost. Small
// allocations go to the Go allocator.
type recycler struct {
	pools [64]sync.Pool
}

var readAlloc memory.Allocator = &recycler{}

const recycleMin = 64 << 10

func class(size int) int { return bits.Len(uint(size - 1)) }

func (r *recycler) Allocate(size int) []byte {
	if size < recycleMin {
		return make([]byte, size)
	}
	c := class(size)
	if b, ok := r.pools[c].Get().(*[]byte); ok {
		return (*b)[:size]
	}
	return make([]byte, size, 1<<c)
}

func (r *recycler) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		return b[:size]
	}
	nb := r.Allocate(size)
	copy(nb, b)
	r.Free(b)
	return nb
}

func (r *recycler) Free(b []byte) {
	c := cap(b)
	if c < recycleMin || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	r.pools[class(c)].Put(&b)
}
