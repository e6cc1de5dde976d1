package filter

import (
	"context"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// augment writes the augment output: augment_share of the rows, trusted
// images, each with one of pats pasted in (in turn), embedded by the
// encoder under masks, with their own labels: rows for the head to learn
// that the pattern means nothing. Nothing is written but the schema when
// there is no pattern. It returns the rows written.
func (b *bench) augment(ctx context.Context, masks []encoder.Mask, pats []Pattern, out plugin.Outputs) (int, error) {
	schema := b.sess.FeaturesSchema() // masks do not change it
	w, err := out.Create("augment", schema)
	if err != nil {
		return 0, err
	}
	if len(pats) == 0 || b.p.AugmentShare == 0 {
		return 0, w.Close()
	}
	enc, err := b.in.Model.Session(encoder.Config{Layers: b.in.LayerNames(), Masks: masks, ORT: ort.Options{Device: b.p.Device}})
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	want := b.pickTrusted(max(1, int(b.p.AugmentShare*float64(len(b.trusted)))))
	r, err := b.in.Images.Reader()
	if err != nil {
		return 0, err
	}
	defer r.Release()
	const bs = 256
	size := enc.ImageSize()
	canon := make([]float32, b.canvas.CanonicalSize())
	var scratch, resampled []float32
	var ids []uint64
	var labels []int32
	written := 0
	stage := make([]float32, bs*size)
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		x, err := enc.Batch(len(ids))
		if err != nil {
			return err
		}
		copy(x, stage[:len(ids)*size])
		emb, layers, err := enc.Embed(len(ids))
		if err != nil {
			return err
		}
		rec := arrowio.NewFeaturesRecord(schema, ids, labels, append([][]float32{emb}, layers...))
		err = w.Write(rec)
		rec.Release()
		written += len(ids)
		ids, labels = ids[:0], labels[:0]
		return err
	}
	for r.Next() {
		rec := r.Record()
		col := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < col.Len(); i++ {
			row, ok := want[col.Value(i)]
			if !ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			dst := stage[len(ids)*size : (len(ids)+1)*size]
			if err := b.canvas.Pixels(imgs.Value(i), canon, &scratch); err != nil {
				return 0, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", col.Value(i), err))
			}
			b.paint(dst, canon, &pats[(written+len(ids))%len(pats)], &resampled)
			ids = append(ids, col.Value(i))
			labels = append(labels, b.t.Labels[row])
			if len(ids) == bs {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
	}
	if err := r.Err(); err != nil {
		return 0, err
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return written, w.Close()
}
