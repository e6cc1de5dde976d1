package encoder

import (
	"context"
	"fmt"
	"math"
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
	// Spread is how much the embeddings vary across images: the mean
	// per-dimension standard deviation over the root mean square of all
	// values (0: every image gets the same embedding). NonFinite counts
	// NaN and infinite values.
	Spread    float64
	NonFinite int64
}

// DegenerateSpread is the Spread under which embeddings hardly depend on
// the image: an untrained or broken encoder, or preprocessing that wipes
// the images out.
const DegenerateSpread = 1e-3

// Warnings says what looks wrong with the embeddings, if anything.
func (s StreamStats) Warnings() []string {
	var w []string
	if s.NonFinite > 0 {
		w = append(w, fmt.Sprintf("%d embedding values are NaN or infinite: the encoder or its preprocessing is broken", s.NonFinite))
	}
	if s.Rows > 1 && s.Spread < DegenerateSpread {
		w = append(w, fmt.Sprintf("the embeddings hardly vary across images (spread %.2g < %.0g): an untrained or broken encoder, or preprocessing (mean/std, size) that wipes the images out", s.Spread, DegenerateSpread))
	}
	return w
}

// moments accumulates per-dimension sums of an embedding stream.
type moments struct {
	sum, sq   []float64
	n         int64
	nonFinite int64
}

func (m *moments) add(emb []float32, dim int) {
	if m.sum == nil {
		m.sum, m.sq = make([]float64, dim), make([]float64, dim)
	}
	for i := 0; i+dim <= len(emb); i += dim {
		for d, v := range emb[i : i+dim] {
			x := float64(v)
			if math.IsNaN(x) || math.IsInf(x, 0) {
				m.nonFinite++
				continue
			}
			m.sum[d] += x
			m.sq[d] += x * x
		}
		m.n++
	}
}

// spread is the mean per-dimension standard deviation over the root mean
// square of the values.
func (m *moments) spread() float64 {
	if m.n == 0 || len(m.sum) == 0 {
		return 0
	}
	var std, ms float64
	n := float64(m.n)
	for d := range m.sum {
		mean := m.sum[d] / n
		v := math.Max(0, m.sq[d]/n-mean*mean)
		std += math.Sqrt(v)
		ms += m.sq[d] / n
	}
	rms := math.Sqrt(ms / float64(len(m.sum)))
	if rms == 0 {
		return 0
	}
	return std / float64(len(m.sum)) / rms
}

// Stream embeds every image of r (images/v1) and writes features/v1
// records (FeaturesSchema) to w: a producer decodes batches of batchSize
// on every core into one of two buffers while inference runs on the other.
// Undecodable images are bad input naming the row and sample_id.
func (e *Encoder) Stream(ctx context.Context, r array.RecordReader, w plugin.RecordWriter, pre Preprocess, batchSize int, progress plugin.Progress) (StreamStats, error) {
	st := &runState{bs: batchSize, pre: pre, enc: e, schema: e.FeaturesSchema()}
	err := st.run(ctx, r, w, progress)
	return StreamStats{Rows: st.rows, Infer: st.infer, Spread: st.mom.spread(), NonFinite: st.mom.nonFinite}, err
}

// runState holds one Stream.
type runState struct {
	bs     int
	pre    Preprocess
	enc    *Encoder
	schema *arrow.Schema
	rows   int64
	infer  time.Duration
	mom    moments
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
	st.mom.add(emb[:b.n*st.enc.Dim], st.enc.Dim)
	cols := append([][]float32{emb}, layers...)
	rec := arrowio.NewFeaturesRecord(st.schema, b.ids[:b.n], b.labels[:b.n], cols)
	defer rec.Release()
	return w.Write(rec)
}
