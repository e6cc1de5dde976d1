// Package chanfilter is what the channel-filtering stages (filter and the
// baselines in its place: clp, fineprune) share: a verdict on every probed
// channel, their three outputs (the channels table, the filtered encoder as
// ONNX, the training rows' embeddings under it), reading a channels/v1 port
// back into masks, and the data-free UCLC score. The graph edits
// themselves are the encoder package's (Mask, Model.Session, Model.Export).
package chanfilter

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

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
	// Caps, per layer, cap each channel from above (nil: no caps).
	Caps    map[string][]float32
	Signal  string              // which signal scored the channels
	Signals map[string][]string // or which one, channel by channel
	// Smooth, when above 0, blurs the encoder's input first (a Gaussian of
	// that many input pixels; encoder.Model.Smoothed): the filtered
	// encoder is then the smoothed one, masked.
	Smooth float64
}

// Encoder returns the encoder the verdict's masks apply to: m, or with
// Smooth a copy of m that blurs its input first.
func (v *ChannelVerdict) Encoder(m *encoder.Model) (*encoder.Model, error) {
	if v.Smooth > 0 {
		return m.Smoothed(v.Smooth)
	}
	return m, nil
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

// Masks returns the verdict's masks: the layers with a channel switched off
// or capped.
func (v *ChannelVerdict) Masks() []encoder.Mask {
	return encoder.WithCaps(encoder.MasksOf(v.Keep, v.Fill, v.Weights), v.Caps)
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
// channels (every probed channel of t), the model with the verdict's masks
// built in to export (when export is not ""), and features: the training
// rows (images) embedded by the filtered encoder on device, or t itself
// when nothing is masked. It returns how far the filter moved each row's
// embedding (rows in t's order; nil when nothing is masked).
func WriteFiltered(ctx context.Context, m *encoder.Model, device, export string, t *feat.Table, images *arrowio.Held, v *ChannelVerdict, out plugin.Outputs, progress plugin.Progress) (*Moves, error) {
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
		return nil, err
	}
	if err := w.Write(rec); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	masks := v.Masks()
	m, err = v.Encoder(m)
	if err != nil {
		return nil, err
	}
	if export != "" {
		if err := m.Export(masks, export, nil); err != nil {
			return nil, err
		}
	}
	if len(masks) == 0 && v.Smooth == 0 {
		return nil, writeTable(t, out)
	}
	enc, err := m.Session(encoder.Config{Masks: masks, ORT: ort.Options{Device: device}}) // the embedding only
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	r, err := images.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Release()
	fw, err := out.Create("features", enc.FeaturesSchema())
	if err != nil {
		return nil, err
	}
	mm := newMoveMeter(t, fw)
	if _, err := enc.Stream(ctx, r, mm, m.Preprocess(), 256, progress); err != nil {
		return nil, err
	}
	if err := mm.err(); err != nil {
		return nil, err
	}
	return &Moves{Length: mm.moved, Vec: mm.vec, D: t.Embedding.D}, fw.Close()
}

// moveMeter passes the filtered features on to w and measures how far each
// row's embedding moved from its row of t (matched by sample id).
type moveMeter struct {
	w     plugin.RecordWriter
	t     *feat.Table
	row   map[uint64]int
	moved []float32
	vec   []float32 // the moves, N x D
	seen  int
}

func newMoveMeter(t *feat.Table, w plugin.RecordWriter) *moveMeter {
	row := make(map[uint64]int, t.N())
	for i, id := range t.IDs {
		row[id] = i
	}
	return &moveMeter{w: w, t: t, row: row, moved: make([]float32, t.N()), vec: make([]float32, t.N()*t.Embedding.D)}
}

// Write implements plugin.RecordWriter.
func (m *moveMeter) Write(rec arrow.Record) error {
	s := rec.Schema()
	ic, ec := s.FieldIndices(arrowio.ColSampleID), s.FieldIndices(arrowio.ColEmbedding)
	if len(ic) != 1 || len(ec) != 1 {
		return fmt.Errorf("chanfilter: filtered features lack %q or %q", arrowio.ColSampleID, arrowio.ColEmbedding)
	}
	ids := rec.Column(ic[0]).(*array.Uint64)
	emb := rec.Column(ec[0]).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values()
	d := m.t.Embedding.D
	if len(emb) != ids.Len()*d {
		return fmt.Errorf("chanfilter: filtered embedding has %d values for %d rows, want dimension %d", len(emb), ids.Len(), d)
	}
	for k := 0; k < ids.Len(); k++ {
		i, ok := m.row[ids.Value(k)]
		if !ok {
			return fmt.Errorf("chanfilter: filtered features: sample_id %d is not a training row", ids.Value(k))
		}
		o, f := m.t.Embedding.X[i*d:(i+1)*d], emb[k*d:(k+1)*d]
		m.moved[i] = float32(stat.Dist(o, f))
		for j := range f {
			m.vec[i*d+j] = f[j] - o[j]
		}
		m.seen++
	}
	return m.w.Write(rec)
}

// Close implements plugin.RecordWriter; the caller closes the writer it
// wrapped.
func (m *moveMeter) Close() error { return nil }

func (m *moveMeter) err() error {
	if m.seen != m.t.N() {
		return fmt.Errorf("chanfilter: the filtered encoder embedded %d rows, want %d", m.seen, m.t.N())
	}
	return nil
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

// UCLC returns, for each of layers, each channel's upper bound of its
// channel Lipschitz constant (CLP): the spectral norm of its kernel in the
// last convolution that writes the layer (a cin x kh*kw matrix), times any
// batch-norm scale on the way.
func UCLC(m *encoder.Model, layers []encoder.Layer) (map[string][]float64, error) {
	out := map[string][]float64{}
	for _, l := range layers {
		w, dims, scale, err := m.Graph().WritingConv(l.Tensor)
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

// MasksFromPort reads a channels/v1 port into masks: channels with
// keep=false are switched off (zero fill: the kind carries no fill value),
// channels not listed are kept. An unconnected port gives no masks.
func MasksFromPort(in plugin.Inputs, port string) ([]encoder.Mask, error) {
	r, err := in.Open(port)
	if errors.Is(err, plugin.ErrNotConnected) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Release()
	off := map[string][]int{}
	var order []string
	for r.Next() {
		rec := r.Record()
		ls := rec.Column(0).(*array.String)
		cs := rec.Column(1).(*array.Int32)
		ks := rec.Column(2).(*array.Boolean)
		for i := 0; i < int(rec.NumRows()); i++ {
			l := ls.Value(i)
			if _, ok := off[l]; !ok {
				order = append(order, l)
				off[l] = nil
			}
			if !ks.Value(i) {
				off[l] = append(off[l], int(cs.Value(i)))
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	var out []encoder.Mask
	for _, l := range order {
		if len(off[l]) == 0 {
			continue
		}
		n := 0
		for _, c := range off[l] {
			n = max(n, c+1)
		}
		keep := make([]bool, n)
		for i := range keep {
			keep[i] = true
		}
		for _, c := range off[l] {
			keep[c] = false
		}
		out = append(out, encoder.Mask{Layer: l, Keep: keep})
	}
	return out, nil
}

// Inputs are what a channel-filtering stage reads, opened by Open.
type Inputs struct {
	// Table is the features port (with its probed layers).
	Table *feat.Table
	// Images is the images port, held: the stage embeds it again.
	Images *arrowio.Held
	// Trusted flags the rows of the trusted port (nil when the port is not
	// connected).
	Trusted []bool
	// Flags are the other boolean columns of the trusted port that Open
	// was asked for, by name.
	Flags map[string][]bool
	// Model is the encoder, loaded once.
	Model *encoder.Model
}

// Open reads a channel-filtering stage's usual inputs: the ports
// "features" (probed), "trusted" (column trustedColumn, and the boolean
// columns flags; optional) and "images", and loads the encoder at path.
// Release frees what it holds.
func Open(in plugin.Inputs, path, trustedColumn string, flags ...string) (*Inputs, error) {
	t, err := feat.OpenProbed(in, "features")
	if err != nil {
		return nil, err
	}
	ins := &Inputs{Table: t, Flags: map[string][]bool{}}
	cols, err := feat.OpenScores(in, "trusted", t, append([]string{trustedColumn}, flags...)...)
	switch {
	case errors.Is(err, plugin.ErrNotConnected):
	case err != nil:
		return nil, err
	default:
		for name, c := range cols {
			if c.B == nil {
				return nil, plugin.PortError("trusted", plugin.BadInputf("column %q is not boolean", name))
			}
			ins.Flags[name] = c.B
		}
		ins.Trusted = cols[trustedColumn].B
	}
	r, err := in.Open("images")
	if err != nil {
		return nil, err
	}
	ins.Images, err = arrowio.Hold(r)
	r.Release()
	if err != nil {
		return nil, plugin.PortError("images", err)
	}
	if ins.Model, err = encoder.Load(path, ""); err != nil {
		ins.Release()
		return nil, err
	}
	// The encoder runs on the images as embed ran it: with the
	// normalisation the features record, inside the graph.
	norm, err := encoder.ParseNorm(t.Preprocess)
	if err == nil {
		err = ins.Model.Normalise(norm)
	}
	if err != nil {
		ins.Release()
		return nil, plugin.PortError("features", plugin.BadInput(err))
	}
	return ins, nil
}

// LayerNames returns the names of the table's probed layers, in order.
func (i *Inputs) LayerNames() []string {
	out := make([]string, len(i.Table.Layers))
	for k, l := range i.Table.Layers {
		out[k] = l.Name
	}
	return out
}

// Layers resolves the table's probed layers in the encoder.
func (i *Inputs) Layers() ([]encoder.Layer, error) { return i.Model.Layers(i.LayerNames()) }

// Release drops the held images.
func (i *Inputs) Release() {
	if i.Images != nil {
		i.Images.Release()
	}
}

// Write writes the stage's three outputs for the verdict and returns how far
// each row's embedding moved (WriteFiltered).
func (i *Inputs) Write(ctx context.Context, device, export string, v *ChannelVerdict, out plugin.Outputs, progress plugin.Progress) (*Moves, error) {
	return WriteFiltered(ctx, i.Model, device, export, i.Table, i.Images, v, out, progress)
}
