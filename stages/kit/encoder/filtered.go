package encoder

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// What the channel-filtering stages (filter and the baselines in its
// place) share: their three outputs — the channels table, the filtered
// encoder as ONNX, and the training rows' embeddings under it.

// Images holds an images/v1 input in memory (a port can be opened once;
// the channel-filtering stages and evaluate read theirs twice).
type Images struct {
	Schema  *arrow.Schema
	Records []arrow.Record
}

// HoldImages reads a whole images/v1 port.
func HoldImages(in plugin.Inputs, port string) (*Images, error) {
	r, err := in.Open(port)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	h := &Images{Schema: r.Schema()}
	for r.Next() {
		rec := r.Record()
		rec.Retain()
		h.Records = append(h.Records, rec)
	}
	if err := r.Err(); err != nil {
		h.Release()
		return nil, err
	}
	return h, nil
}

// Reader reads the held records.
func (h *Images) Reader() (array.RecordReader, error) {
	return array.NewRecordReader(h.Schema, h.Records)
}

// Release drops the held records.
func (h *Images) Release() {
	for _, r := range h.Records {
		r.Release()
	}
	h.Records = nil
}

// MasksOf turns per-layer keep flags, fill values and regression weights
// (nil: constant fills) into masks (only the layers with a channel
// switched off), in layer order.
func MasksOf(keep map[string][]bool, fill, weights map[string][]float32) []Mask {
	var out []Mask
	for name, k := range keep {
		all := true
		for _, v := range k {
			all = all && v
		}
		if !all {
			out = append(out, Mask{Layer: name, Keep: k, Fill: fill[name], Weights: weights[name]})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Layer < out[b].Layer })
	return out
}

// ChannelVerdict is a channel-filtering stage's decision for every channel
// of the probed layers of t.
type ChannelVerdict struct {
	Keep  map[string][]bool
	Score map[string][]float32
	Fill  map[string][]float32 // nil: switched-off channels become 0
	// Weights, per layer (channels x channels), fill switched-off channels
	// by a regression on the kept ones, Fill being the intercept (nil: the
	// constant Fill).
	Weights map[string][]float32
	Signal  string              // which signal scored the channels
	Signals map[string][]string // or which one, channel by channel
}

// NewChannelVerdict keeps every channel of t's layers, with zero scores.
func NewChannelVerdict(t *feat.Table, signal string) *ChannelVerdict {
	v := &ChannelVerdict{Keep: map[string][]bool{}, Score: map[string][]float32{}, Signal: signal}
	for _, l := range t.Layers {
		k := make([]bool, l.D)
		for i := range k {
			k[i] = true
		}
		v.Keep[l.Name], v.Score[l.Name] = k, make([]float32, l.D)
	}
	return v
}

// Masked returns the switched-off channels, as "layer:channel".
func (v *ChannelVerdict) Masked(t *feat.Table) []string {
	var out []string
	for _, l := range t.Layers {
		for c, k := range v.Keep[l.Name] {
			if !k {
				out = append(out, l.Name+":"+strconv.Itoa(c))
			}
		}
	}
	return out
}

// WriteFiltered writes the three outputs of a channel-filtering stage:
// channels (every probed channel of t), the encoder at path with the
// verdict's masks baked in to export (when export is not ""), and
// features: the training rows embedded by the filtered encoder, or t
// itself when nothing is masked.
func WriteFiltered(ctx context.Context, path, device, export string, t *feat.Table, images *Images, v *ChannelVerdict, out plugin.Outputs, progress plugin.Progress) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.ChannelsSchema())
	defer b.Release()
	for _, l := range t.Layers {
		for c := 0; c < l.D; c++ {
			b.Field(0).(*array.StringBuilder).Append(l.Name)
			b.Field(1).(*array.Int32Builder).Append(int32(c))
			b.Field(2).(*array.BooleanBuilder).Append(v.Keep[l.Name][c])
			b.Field(3).(*array.Float32Builder).Append(v.Score[l.Name][c])
			sig := v.Signal
			if s := v.Signals[l.Name]; c < len(s) {
				sig = s[c]
			}
			b.Field(4).(*array.StringBuilder).Append(sig)
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	w, err := out.Create("channels", rec.Schema())
	if err != nil {
		return err
	}
	if err := w.Write(rec); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	masks := MasksOf(v.Keep, v.Fill, v.Weights)
	if export != "" {
		if err := Export(path, Config{Masks: masks}, export, nil); err != nil {
			return err
		}
	}
	if len(masks) == 0 {
		return writeTable(t, out)
	}
	enc, err := Open(path, Config{Masks: masks, ORT: ort.Options{Device: device}})
	if err != nil {
		return err
	}
	defer enc.Close()
	r, err := images.Reader()
	if err != nil {
		return err
	}
	defer r.Release()
	fw, err := out.Create("features", enc.FeaturesSchema())
	if err != nil {
		return err
	}
	if _, err := enc.Stream(ctx, r, fw, ForEncoder(enc), 256, progress); err != nil {
		return err
	}
	return fw.Close()
}

// writeTable writes t to the features output.
func writeTable(t *feat.Table, out plugin.Outputs) error {
	layers := make([]arrowio.Layer, len(t.Layers))
	for i, l := range t.Layers {
		layers[i] = arrowio.Layer{Name: l.Name, Channels: l.D}
	}
	schema := arrowio.FeaturesSchema(t.Embedding.D, layers)
	w, err := out.Create("features", schema)
	if err != nil {
		return err
	}
	const batch = 4096
	for lo := 0; lo < t.N(); lo += batch {
		hi := min(lo+batch, t.N())
		part := [][]float32{t.Embedding.X[lo*t.Embedding.D : hi*t.Embedding.D]}
		for _, l := range t.Layers {
			part = append(part, l.X[lo*l.D:hi*l.D])
		}
		rec := arrowio.NewFeaturesRecord(schema, t.IDs[lo:hi], t.Labels[lo:hi], part)
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return w.Close()
}

// UCLC returns, for every probed layer, each channel's upper bound of its
// channel Lipschitz constant (CLP): the spectral norm of its kernel in the
// last convolution that writes the layer (a cin x kh*kw matrix), times any
// batch-norm scale on the way.
func (e *Encoder) UCLC() (map[string][]float64, error) {
	out := map[string][]float64{}
	for _, l := range e.Layers {
		w, dims, scale, err := e.model.WritingConv(l.Tensor)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		if int(dims[0]) != l.Channels {
			return nil, fmt.Errorf("layer %s: its convolution writes %d channels, the layer has %d", l.Name, dims[0], l.Channels)
		}
		cin, per := int(dims[1]), len(w)/int(dims[0])
		u := make([]float64, dims[0])
		for c := range u {
			u[c] = stat.SpectralNorm(w[c*per:(c+1)*per], cin, per/cin) * float64(scale[c])
		}
		out[l.Name] = u
	}
	return out, nil
}
