// Package tabletest makes small deterministic tables of every tcore kind,
// and images, for tests across the module.
package tabletest

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"sync"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
)

// encoderPool lets every PNG share its deflate state: png.Encode makes a
// new one each call, about 1.2 MB to allocate and zero, which for thousands
// of tiny test images cost 6.6 GB and, under the race detector, minutes.
// A plain free list, not a sync.Pool: the race detector drops a share of
// what a sync.Pool is given.
type encoderPool struct {
	mu   sync.Mutex
	free []*png.EncoderBuffer
}

func (e *encoderPool) Get() *png.EncoderBuffer {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.free) == 0 {
		return nil
	}
	b := e.free[len(e.free)-1]
	e.free = e.free[:len(e.free)-1]
	return b
}

func (e *encoderPool) Put(b *png.EncoderBuffer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.free = append(e.free, b)
}

var encoder = png.Encoder{BufferPool: &encoderPool{}}

// encode returns img's PNG bytes.
func encode(img image.Image) []byte {
	var b bytes.Buffer
	if err := encoder.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// PNG returns the bytes of a w x h RGB PNG filled with seeded noise.
func PNG(w, h int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255
	}
	return encode(img)
}

// GrayPNG returns the bytes of a w x h grey PNG.
func GrayPNG(w, h int, v uint8) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	img.Set(0, 0, color.Gray{Y: 255 - v})
	return encode(img)
}

// Schema returns the schema Make uses for kind.
func Schema(kind arrowio.Kind, dim int) *arrow.Schema {
	switch kind {
	case arrowio.KindImages:
		return arrowio.ImagesSchema()
	case arrowio.KindFeatures:
		return arrowio.FeaturesSchema(dim, []arrowio.Layer{{Name: "stage1", Channels: 8}, {Name: "stage2", Channels: 16}})
	case arrowio.KindScores:
		s, err := arrowio.ScoresSchema(
			arrow.Field{Name: "sift.invariance", Type: arrow.PrimitiveTypes.Float32},
			arrow.Field{Name: "expand.round", Type: arrow.PrimitiveTypes.Int32},
			arrow.Field{Name: "bootstrap.kept", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		)
		if err != nil {
			panic(err)
		}
		return s
	case arrowio.KindChannels:
		return arrowio.ChannelsSchema()
	case arrowio.KindTruth:
		return arrowio.TruthSchema()
	}
	panic(fmt.Sprintf("tabletest: unknown kind %s", kind))
}

// Make returns rows rows of kind in batches of at most batch rows (at least
// one, possibly empty, batch), with seeded values; features have dim
// values per embedding. The caller releases the records.
func Make(mem memory.Allocator, kind arrowio.Kind, rows, batch, dim int, seed uint64) (*arrow.Schema, []arrow.Record) {
	rng := rand.New(rand.NewPCG(seed, 1))
	s := Schema(kind, dim)
	var recs []arrow.Record
	for start := 0; start < rows || len(recs) == 0; start += batch {
		n := min(batch, rows-start)
		b := array.NewRecordBuilder(mem, s)
		for i := 0; i < n; i++ {
			id := uint64(start + i)
			switch kind {
			case arrowio.KindImages:
				b.Field(0).(*array.Uint64Builder).Append(id)
				b.Field(1).(*array.Int32Builder).Append(int32(rng.IntN(10)))
				b.Field(2).(*array.BinaryBuilder).Append(PNG(4, 4, id+seed))
			case arrowio.KindFeatures:
				b.Field(0).(*array.Uint64Builder).Append(id)
				b.Field(1).(*array.Int32Builder).Append(int32(rng.IntN(10)))
				for c := 2; c < s.NumFields(); c++ {
					lb := b.Field(c).(*array.FixedSizeListBuilder)
					lb.Append(true)
					vb := lb.ValueBuilder().(*array.Float32Builder)
					d := int(s.Field(c).Type.(*arrow.FixedSizeListType).Len())
					for j := 0; j < d; j++ {
						vb.Append(rng.Float32())
					}
				}
			case arrowio.KindScores:
				b.Field(0).(*array.Uint64Builder).Append(id)
				b.Field(1).(*array.Float32Builder).Append(rng.Float32())
				b.Field(2).(*array.Int32Builder).Append(int32(rng.IntN(4)))
				if i%7 == 3 {
					b.Field(3).AppendNull()
				} else {
					b.Field(3).(*array.BooleanBuilder).Append(rng.IntN(2) == 1)
				}
			case arrowio.KindChannels:
				b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("stage%d", 1+int(id)%4))
				b.Field(1).(*array.Int32Builder).Append(int32(id))
				b.Field(2).(*array.BooleanBuilder).Append(rng.IntN(5) > 0)
				b.Field(3).(*array.Float32Builder).Append(rng.Float32() * 10)
				b.Field(4).(*array.StringBuilder).Append([]string{"tac", "uclc", "probe"}[rng.IntN(3)])
			case arrowio.KindTruth:
				b.Field(0).(*array.Uint64Builder).Append(id)
				b.Field(1).(*array.BooleanBuilder).Append(rng.IntN(10) == 0)
				b.Field(2).(*array.Int32Builder).Append(int32(rng.IntN(10)))
			}
		}
		recs = append(recs, b.NewRecord())
		b.Release()
		if n <= 0 {
			break
		}
	}
	return s, recs
}
