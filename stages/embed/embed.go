// Package embed is the stage that runs an image encoder: images/v1 in,
// features/v1 out (the embedding and, per probed layer, the per-channel mean
// activation as layer.<name>). Decoding and resizing run on all cores and
// overlap with inference; an optional channels/v1 input switches channels
// off inside the graph.
package embed

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Stage is the embed stage.
type Stage struct{}

// New returns the embed stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "embed",
		Version: "0.1.0",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "images to embed"},
			{Name: "channels", Kind: arrowio.KindChannels, Optional: true, Doc: "channels with keep=false are switched off (set to 0) inside the encoder"},
		},
		Outputs: []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embedding and layer.<name> per-channel means"}},
		Params: []plugin.ParamSpec{
			{Name: "encoder", Default: json.RawMessage(`""`), Doc: "the encoder (ONNX file); tcore run sets it from --encoder"},
			{Name: "layers", Default: json.RawMessage(`["auto"]`), Doc: `layers to probe: ["auto"], [] or names`},
			{Name: "embedding", Default: json.RawMessage(`""`), Doc: "embedding output (default: 'embedding' or the only rank-2 output)"},
			{Name: "batch_size", Default: json.RawMessage(`256`), Doc: "images per inference batch"},
			{Name: "device", Default: json.RawMessage(`"cpu"`), Doc: "cpu, cuda or cuda:N"},
			{Name: "threads", Default: json.RawMessage(`0`), Doc: "ONNX Runtime intra-op threads (0: one per core)"},
			{Name: "size", Default: json.RawMessage(`null`), Doc: "[height, width] to resize to (default: the model's input size)"},
			{Name: "mean", Default: json.RawMessage(`null`), Doc: "per-channel mean subtracted after scaling to [0,1] (default: none, the graph normalises)"},
			{Name: "std", Default: json.RawMessage(`null`), Doc: "per-channel std divided by (with mean)"},
			{Name: "channel_order", Default: json.RawMessage(`"rgb"`), Doc: "rgb or bgr"},
			{Name: "gray", Default: json.RawMessage(`"convert"`), Doc: "convert (repeat the grey plane) or reject grey images for a colour model"},
		},
	}
}

// Params are the embed stage's parameters.
type Params struct {
	Encoder      string    `json:"encoder"`
	Layers       []string  `json:"layers"`
	Embedding    string    `json:"embedding"`
	BatchSize    int       `json:"batch_size"`
	Device       string    `json:"device"`
	Threads      int       `json:"threads"`
	Size         []int     `json:"size"`
	Mean         []float32 `json:"mean"`
	Std          []float32 `json:"std"`
	ChannelOrder string    `json:"channel_order"`
	Gray         string    `json:"gray"`
}

// Check implements plugin.Checker: it validates the parameters.
func (p *Params) Check() error {
	switch {
	case p.Encoder == "":
		return plugin.BadInputf("parameter \"encoder\": no encoder given (tcore run --encoder E.onnx)")
	case p.BatchSize <= 0:
		return plugin.BadInputf("parameter \"batch_size\": %d, want > 0", p.BatchSize)
	case p.Size != nil && (len(p.Size) != 2 || p.Size[0] <= 0 || p.Size[1] <= 0):
		return plugin.BadInputf("parameter \"size\": %v, want [height, width]", p.Size)
	case (p.Mean == nil) != (p.Std == nil):
		return plugin.BadInputf("parameters \"mean\" and \"std\" go together")
	case p.ChannelOrder != "rgb" && p.ChannelOrder != "bgr":
		return plugin.BadInputf("parameter \"channel_order\": %q, want rgb or bgr", p.ChannelOrder)
	case p.Gray != "convert" && p.Gray != "reject":
		return plugin.BadInputf("parameter \"gray\": %q, want convert or reject", p.Gray)
	}
	return ort.CheckDevice(p.Device)
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	if err := ort.Init(""); err != nil {
		return nil, err
	}
	masks, err := encoder.MasksFromChannels(in, "channels")
	if err != nil {
		return nil, err
	}
	enc, err := encoder.Open(p.Encoder, encoder.Config{Layers: p.Layers, Embedding: p.Embedding, Masks: masks,
		ORT: ort.Options{Device: p.Device, Threads: p.Threads}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	pre := encoder.ForEncoder(enc)
	if p.Size != nil {
		if p.Size[0] != enc.H || p.Size[1] != enc.W {
			return nil, plugin.BadInputf("parameter \"size\": %v, but the encoder takes %dx%d images", p.Size, enc.H, enc.W)
		}
	}
	pre.Mean, pre.Std, pre.BGR, pre.RejectGray = p.Mean, p.Std, p.ChannelOrder == "bgr", p.Gray == "reject"
	if err := pre.Check(); err != nil {
		return nil, plugin.BadInput(err)
	}
	layers := make([]arrowio.Layer, len(enc.Layers))
	names := make([]string, len(enc.Layers))
	for i, l := range enc.Layers {
		layers[i] = arrowio.Layer{Name: l.Name, Channels: l.Channels}
		names[i] = l.Name
	}
	schema := arrowio.FeaturesSchema(enc.Dim, layers)
	zerolog.Ctx(ctx).Info().Str("encoder", p.Encoder).Int("dim", enc.Dim).Strs("layers", names).
		Int("height", enc.H).Int("width", enc.W).Msg("encoder opened")

	r, err := in.Open("images")
	if err != nil {
		return nil, err
	}
	defer r.Release()
	w, err := out.Create("features", schema)
	if err != nil {
		return nil, err
	}
	st := &runState{p: p, pre: pre, enc: enc, schema: schema}
	start := time.Now()
	if err := st.run(ctx, r, w, progress); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	secs := time.Since(start).Seconds()
	return plugin.Metrics{"rows": st.rows, "dim": enc.Dim, "layers": names, "height": enc.H, "width": enc.W,
		"masked_channels": maskedCount(masks), "seconds": secs, "images_per_s": float64(st.rows) / secs,
		"device": p.Device, "infer_seconds": st.infer.Seconds()}, nil
}

func maskedCount(ms []encoder.Mask) int {
	n := 0
	for _, m := range ms {
		for _, k := range m.Keep {
			if !k {
				n++
			}
		}
	}
	return n
}

// runState holds one run's pipeline: a producer decodes batches on every
// core into one of two buffers while the consumer runs inference on the
// other.
type runState struct {
	p      Params
	pre    encoder.Preprocess
	enc    *encoder.Encoder
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
	bs := st.p.BatchSize
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
	bs := st.p.BatchSize
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
