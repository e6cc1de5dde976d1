package arrowio

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/klauspost/compress/zstd"
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

// Parquet pages are decompressed by codecs that trust the sizes a page's
// frames declare: klauspost's zstd decoder accepts up to 64 GiB by
// default. tcore's readers register a zstd codec whose decoder refuses
// more than maxPage bytes of output (Arrow's pages are about 1 MiB;
// tcore writes zstd), so a mutated page cannot ask for gigabytes. The
// codec registry is Arrow's, for the whole process.
const maxPage = 256 << 20

func init() {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxPage), zstd.WithDecoderConcurrency(1))
	if err != nil {
		panic(err)
	}
	orig, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		return
	}
	compress.RegisterCodec(compress.Codecs.Zstd, boundedZstd{Codec: orig, dec: dec})
}

// boundedZstd is Arrow's zstd codec with a decoder bounded by maxPage.
type boundedZstd struct {
	compress.Codec
	dec *zstd.Decoder
}

// Decode decompresses src into dst; an error panics, as Arrow's codecs
// do, and the readers' guard turns it into an error naming the file.
func (c boundedZstd) Decode(dst, src []byte) []byte {
	out, err := c.dec.DecodeAll(src, dst[:0])
	if err != nil {
		panic(fmt.Errorf("zstd page: %w", err))
	}
	return out
}
