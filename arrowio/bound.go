package arrowio

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/memory"
)

// A malformed file can declare a buffer of terabytes, and Arrow's readers
// allocate what a batch declares before they read its bytes: a 3 KiB Arrow
// IPC file asked for 24 TiB and the process died of "out of memory" (found
// by FuzzOpenDataset). No single buffer decoded from a file may exceed
// allocSlack plus allocFactor times the file's size; compression and
// dictionary encoding stay well inside that on real files.
const (
	allocSlack  = 32 << 20
	allocFactor = 1024
)

// allocLimit is the largest single allocation a file of size bytes may ask
// for.
func allocLimit(size int64) int {
	const maxInt = int(^uint(0) >> 1)
	if size > int64(maxInt-allocSlack)/allocFactor {
		return maxInt
	}
	return allocSlack + allocFactor*int(size)
}

// tooLarge is the panic value of a refused allocation; guard turns it into
// the reader's error.
type tooLarge struct{ size, limit int }

func (e *tooLarge) Error() string {
	return fmt.Sprintf("it declares a buffer of %d bytes, more than a file of its size can hold (at most %d bytes)", e.size, e.limit)
}

// boundedAlloc refuses any single allocation above limit.
type boundedAlloc struct {
	memory.Allocator
	limit int
}

func (a boundedAlloc) check(size int) {
	if size > a.limit || size < 0 {
		panic(&tooLarge{size, a.limit})
	}
}

func (a boundedAlloc) Allocate(size int) []byte {
	a.check(size)
	return a.Allocator.Allocate(size)
}

func (a boundedAlloc) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.Allocator.Reallocate(size, b)
}
