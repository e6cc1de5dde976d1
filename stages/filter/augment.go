package filter

import (
	"context"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// augmented is what the augment step wrote, row by row: the pattern
// pasted in (an index into the patterns), and the row's embedding under
// the original encoder and under the filtered one (D values each), for the
// gate's check.
type augmented struct {
	pattern    []int
	label      []int32 // each row's own label
	orig, filt []float32
	d          int
}

// rows returns how many rows were written.
func (a *augmented) rows() int { return len(a.pattern) }

// turns is the order in which the augment rows take the patterns, as
// indices into them, repeated cyclically. With by nil, every pattern takes
// its turn; otherwise by names each pattern's family, and the families
// take turns (in order of first appearance), each going round its own
// patterns.
func turns(n int, by []string) []int {
	if by == nil {
		seq := make([]int, n)
		for i := range seq {
			seq[i] = i
		}
		return seq
	}
	var names []string
	members := map[string][]int{}
	most := 0
	for k := 0; k < n; k++ {
		f := by[k]
		if _, ok := members[f]; !ok {
			names = append(names, f)
		}
		members[f] = append(members[f], k)
		most = max(most, len(members[f]))
	}
	var seq []int
	for r := 0; r < most; r++ {
		for _, f := range names {
			m := members[f]
			seq = append(seq, m[r%len(m)])
		}
	}
	return seq
}

// augment writes the augment output: share of the rows (Params.augmentShare),
// trusted images, each with one of pats pasted in, embedded by the encoder
// under masks, with their own labels: rows for the head to learn that the
// pattern means nothing; the patterns take the rows in the order turns
// gives them (family names each pattern's family). Nothing is written but
// the schema when there is no pattern. Each row is embedded by the
// original encoder too.
func (b *bench) augment(ctx context.Context, share float64, masks []encoder.Mask, pats []Pattern, family []string, out plugin.Outputs) (*augmented, error) {
	res := &augmented{}
	schema := b.sess.FeaturesSchema() // masks do not change it
	w, err := out.Create("augment", schema)
	if err != nil {
		return nil, err
	}
	if len(pats) == 0 || share == 0 {
		return res, w.Close()
	}
	enc, err := b.model.Session(encoder.Config{Layers: b.in.LayerNames(), Masks: masks, ORT: ort.Options{Device: b.p.Device}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	orig, err := b.in.Model.Session(encoder.Config{Layers: []string{}, ORT: ort.Options{Device: b.p.Device}})
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	res.d = enc.Dim
	var by []string
	if b.p.AugmentTurns == "families" {
		by = family
	}
	seq := turns(len(pats), by)
	want := b.pickTrusted(max(1, int(share*float64(len(b.trusted)))))
	r, err := b.in.Images.Reader()
	if err != nil {
		return nil, err
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
		res.filt = append(res.filt, emb[:len(ids)*res.d]...)
		rec := arrowio.NewFeaturesRecord(schema, ids, labels, append([][]float32{emb}, layers...))
		err = w.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
		if x, err = orig.Batch(len(ids)); err != nil {
			return err
		}
		copy(x, stage[:len(ids)*size])
		if emb, _, err = orig.Embed(len(ids)); err != nil {
			return err
		}
		res.orig = append(res.orig, emb[:len(ids)*res.d]...)
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
				return nil, err
			}
			// The patterns take turns; one found planted in this row's
			// class passes its turn to the next that may be painted on it.
			at, label := (written+len(ids))%len(seq), b.t.Labels[row]
			for j := 0; j < len(seq) && !pats[seq[at]].paintsOn(label); j++ {
				at = (at + 1) % len(seq)
			}
			k := seq[at]
			if !pats[k].paintsOn(label) {
				continue
			}
			dst := stage[len(ids)*size : (len(ids)+1)*size]
			if err := b.canvas.Pixels(imgs.Value(i), canon, &scratch); err != nil {
				return nil, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", col.Value(i), err))
			}
			b.paint(dst, canon, &pats[k], &resampled)
			res.pattern, res.label = append(res.pattern, k), append(res.label, label)
			ids = append(ids, col.Value(i))
			labels = append(labels, label)
			if len(ids) == bs {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return res, w.Close()
}
