package encoder

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// FeaturesSchema returns the features/v1 schema of the encoder's output:
// the embedding and one column per probed layer.
func (e *Encoder) FeaturesSchema() *arrow.Schema {
	layers := make([]arrowio.Layer, len(e.Layers))
	for i, l := range e.Layers {
		layers[i] = arrowio.Layer{Name: l.Name, Channels: l.Channels}
	}
	s := arrowio.FeaturesSchema(e.Dim, layers)
	if n := e.Model.src.Meta(arrowio.PreprocessKey); n != "" {
		// The features say how the images were normalised: every stage
		// that runs the encoder on them does the same.
		s = arrowio.WithMeta(s, arrowio.PreprocessKey, n)
	}
	return s
}

// StreamStats says what a Stream did.
type StreamStats struct {
	Rows  int64         // images embedded
	Infer time.Duration // time spent in inference
}

// Stream embeds every image of r (images/v1) and writes features/v1
// records (FeaturesSchema) to w: a producer decodes batches of batchSize
// on every core into one of two buffers while inference runs on the other.
// Undecodable images are bad input naming the row and sample_id.
func (e *Encoder) Stream(ctx context.Context, r array.RecordReader, w plugin.RecordWriter, pre Preprocess, batchSize int, progress plugin.Progress) (StreamStats, error) {
	st := &runState{bs: batchSize, pre: pre, enc: e, schema: e.FeaturesSchema()}
	err := st.run(ctx, r, w, progress)
	return StreamStats{Rows: st.rows, Infer: st.infer}, err
}

// runState holds one Stream.
type runState struct {
	bs     int
	pre    Preprocess
	enc    *Encoder
	schema *arrow.Schema
	rows   int64
	infer  time.Duration
}

type batch struct {
	ids    []uint64
	labels []int32
	x      []float32
	n      int
	err    error
}

func (st *runState) run(ctx context.Context, r array.RecordReader, w plugin.RecordWriter, progress plugin.Progress) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs := st.bs
	size := st.enc.ImageSize()
	free := make(chan *batch, 2)
	for i := 0; i < 2; i++ {
		free <- &batch{ids: make([]uint64, bs), labels: make([]int32, bs), x: make([]float32, bs*size)}
	}
	full := make(chan *batch, 1)
	go st.produce(ctx, r, free, full)
	for b := range full {
		if b.err != nil {
			return b.err
		}
		if err := st.consume(b, w); err != nil {
			return err
		}
		st.rows += int64(b.n)
		progress.Report(plugin.Event{Done: st.rows, Unit: "images"})
		free <- b
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// produce fills batches from the reader's records.
func (st *runState) produce(ctx context.Context, r array.RecordReader, free, full chan *batch) {
	defer close(full)
	bs := st.bs
	var cur *batch
	var row int64
	send := func() bool {
		if cur == nil || cur.n == 0 {
			return true
		}
		select {
		case full <- cur:
			cur = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		labels := rec.Column(1).(*array.Int32)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < int(rec.NumRows()); {
			if cur == nil {
				select {
				case cur = <-free:
					cur.n = 0
				case <-ctx.Done():
					return
				}
			}
			k := min(bs-cur.n, int(rec.NumRows())-i)
			if err := st.decode(cur, cur.n, ids, imgs, i, k, row); err != nil {
				cur.err = plugin.PortError("images", err)
				full <- cur
				return
			}
			for j := 0; j < k; j++ {
				cur.ids[cur.n+j] = ids.Value(i + j)
				cur.labels[cur.n+j] = labels.Value(i + j)
			}
			cur.n += k
			i += k
			row += int64(k)
			if cur.n == bs && !send() {
				return
			}
		}
	}
	if err := r.Err(); err != nil {
		if cur == nil {
			cur = <-free
		}
		cur.err = err
		full <- cur
		return
	}
	send()
}

// decode preprocesses k images of imgs from index i into b at slot off,
// on every core.
func (st *runState) decode(b *batch, off int, ids *array.Uint64, imgs *array.Binary, i, k int, row int64) error {
	size := st.enc.ImageSize()
	workers := min(runtime.NumCPU(), k)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for wk := 0; wk < workers; wk++ {
		wg.Add(1)
		go func(wk int) {
			defer wg.Done()
			var scratch []float32
			for j := wk; j < k; j += workers {
				dst := b.x[(off+j)*size : (off+j+1)*size]
				if err := st.pre.Image(imgs.Value(i+j), dst, &scratch); err != nil {
					errs[wk] = &arrowio.DataError{File: "input port images", Column: "image", Row: row + int64(j),
						Msg: fmt.Sprintf("sample_id %d: %v", ids.Value(i+j), err)}
					return
				}
			}
		}(wk)
	}
	wg.Wait()
	var first *arrowio.DataError
	for _, e := range errs {
		if de, ok := e.(*arrowio.DataError); ok && (first == nil || de.Row < first.Row) {
			first = de
		}
	}
	if first != nil {
		return plugin.BadInput(first)
	}
	return nil
}

func (st *runState) consume(b *batch, w plugin.RecordWriter) error {
	size := st.enc.ImageSize()
	x, err := st.enc.Batch(b.n)
	if err != nil {
		return err
	}
	copy(x, b.x[:b.n*size])
	t := time.Now()
	emb, layers, err := st.enc.Embed(b.n)
	st.infer += time.Since(t)
	if err != nil {
		return err
	}
	cols := append([][]float32{emb}, layers...)
	rec := arrowio.NewFeaturesRecord(st.schema, b.ids[:b.n], b.labels[:b.n], cols)
	defer rec.Release()
	return w.Write(rec)
}
