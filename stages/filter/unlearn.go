package filter

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// DataTrigger is what the filter estimated of a trigger planted in the
// data, from the rows sift found in shallow clusters.
type DataTrigger struct {
	Suspects int     `json:"suspects"`
	Norm     float64 `json:"norm"` // of the estimated pattern, per input value (RMS)
	// Carriers are the rows whose difference from their class's trusted
	// mean projects onto the pattern with at least carrier_share of it.
	Carriers  int     `json:"carriers"`
	Threshold float64 `json:"carrier_threshold"`
	// Released are the sift suspects sift_suspects "carriers" released.
	Released int    `json:"released,omitempty"`
	Why      string `json:"why_none,omitempty"`
}

// CarryingSuspects returns which of sift's suspects (sus) stay suspects
// under sift_suspects "carriers", and how many it released: in a class
// (labels) where found (the class split's and the planted check's
// carriers) marks a row, a suspect stays only when found or carrier (the
// data trigger's carriers) marks it too; in every other class each
// suspect stays. sift's mark takes a clean target class's own rows with
// the poison (they agree with their label at shallow layers too), while
// the carriers the filter found are the poisoned rows themselves
// (docs/DECISIONS.md).
func CarryingSuspects(sus, found, carrier []bool, labels []int32) ([]bool, int) {
	hasFound := map[int32]bool{}
	for i, f := range found {
		if f {
			hasFound[labels[i]] = true
		}
	}
	keep := make([]bool, len(sus))
	released := 0
	for i, s := range sus {
		switch {
		case !s:
		case !hasFound[labels[i]] || found[i] || carrier[i]:
			keep[i] = true
		default:
			released++
		}
	}
	return keep, released
}

// orInto marks in dst every row src marks.
func orInto(dst, src []bool) {
	for i, r := range src {
		dst[i] = dst[i] || r
	}
}

// dataTrigger estimates a data trigger when sift marked suspects (rows
// that agree with their label already at the shallowest layers, in an
// anomalous class): the mean of the suspects' images minus the mean of
// the trusted images of their classes is what they share beyond their
// content. Rows carrying it (their difference from their class's trusted
// mean projects onto it with at least p.CarrierShare of its length) are
// marked in carrier, and the pattern goes into the augment rows, so that
// the final head learns it means nothing.
func (b *bench) dataTrigger(ctx context.Context, suspect, carrier []bool) (*Pattern, *DataTrigger, error) {
	rep := &DataTrigger{}
	for _, s := range suspect {
		if s {
			rep.Suspects++
		}
	}
	if rep.Suspects < minSuspects {
		rep.Why = "too few suspects"
		return nil, rep, nil
	}
	// The pattern is estimated in canonical form, where it is painted.
	size := b.canvas.CanonicalSize()
	im, why, err := b.imagesOrWhy(ctx)
	if err != nil {
		return nil, nil, err
	} else if why != "" {
		rep.Why = why
		return nil, rep, nil
	}
	n, x := b.t.N(), im.X
	mean := func(sel func(i int) bool) ([]float64, int) {
		m := make([]float64, size)
		c := 0
		for i := 0; i < n; i++ {
			if sel(i) {
				for j, v := range x[i*size : (i+1)*size] {
					m[j] += float64(v)
				}
				c++
			}
		}
		for j := range m {
			m[j] /= float64(max(c, 1))
		}
		return m, c
	}
	all, _ := mean(func(i int) bool { return b.trusted[i] })
	classMean := map[int32][]float64{}
	for i := 0; i < n; i++ {
		c := b.t.Labels[i]
		if _, done := classMean[c]; done {
			continue
		}
		m, k := mean(func(j int) bool { return b.trusted[j] && b.t.Labels[j] == c })
		if k < minSuspects {
			m = all // too few trusted rows of the class: the global mean
		}
		classMean[c] = m
	}
	delta := make([]float64, size)
	for i := 0; i < n; i++ {
		if suspect[i] {
			cm := classMean[b.t.Labels[i]]
			for j, v := range x[i*size : (i+1)*size] {
				delta[j] += float64(v) - cm[j]
			}
		}
	}
	var dd float64
	for j := range delta {
		delta[j] /= float64(rep.Suspects)
		dd += delta[j] * delta[j]
	}
	rep.Norm = math.Sqrt(dd / float64(size))
	if dd == 0 {
		rep.Why = "the suspects do not differ from their classes"
		return nil, rep, nil
	}
	// Natural images project onto a smooth pattern too: a row carries it
	// when its share is both carrier_share and an outlier (robust z 4)
	// among the trusted rows that are not suspects.
	share := make([]float64, n)
	var ref []float64
	for i := 0; i < n; i++ {
		cm := classMean[b.t.Labels[i]]
		var dot float64
		for j, v := range x[i*size : (i+1)*size] {
			dot += (float64(v) - cm[j]) * delta[j]
		}
		share[i] = dot / dd
		if b.trusted[i] && !suspect[i] {
			ref = append(ref, share[i])
		}
	}
	med, mad := stat.Robust(ref)
	rep.Threshold = math.Max(b.p.CarrierShare, med+4*mad)
	for i, v := range share {
		if v >= rep.Threshold {
			carrier[i] = true
			rep.Carriers++
		}
	}
	pat := &Pattern{Kind: "delta", Delta: make([]float32, size)}
	for j, v := range delta {
		pat.Delta[j] = float32(v)
	}
	return pat, rep, nil
}

// minSuspects is the fewest rows a mean image is taken over.
const minSuspects = 20

// maxImageValues bounds the training images the filter holds in canonical
// form (images): 1 GiB of float32.
const maxImageValues = 1 << 28

// errTooManyImages says the training images are more than the filter
// holds; the steps that need them then do not run.
var errTooManyImages = errors.New("the training images are more than the filter holds")

// images returns every training row's image in canonical form at the
// canvas's size, in the table's row order, read once per run.
func (b *bench) images(ctx context.Context) (Images, error) {
	if b.held.X != nil {
		return b.held, nil
	}
	r, err := b.in.Images.Reader()
	if err != nil {
		return Images{}, err
	}
	defer r.Release()
	im, err := LoadImages(ctx, r, b.t.IDs, b.canvas)
	if err != nil {
		return Images{}, err
	}
	b.held = im
	return im, nil
}

// imagesOrWhy is images for the steps that do nothing when the training
// images are more than the filter holds: then it returns why, to be
// reported, and no error.
func (b *bench) imagesOrWhy(ctx context.Context) (Images, string, error) {
	im, err := b.images(ctx)
	if errors.Is(err, errTooManyImages) {
		return Images{}, err.Error(), nil
	}
	return im, "", err
}

// LoadImages reads the images of r (columns sample_id, label, image) whose
// ids are in ids, in canonical form at pre's size and in ids' order. More
// than maxImageValues values are refused (errTooManyImages); an image that
// does not decode is a bad input naming its sample_id.
func LoadImages(ctx context.Context, r array.RecordReader, ids []uint64, pre encoder.Preprocess) (Images, error) {
	size, n := pre.CanonicalSize(), len(ids)
	if n*size > maxImageValues {
		return Images{}, fmt.Errorf("%w: %d images of %d values, at most %d values", errTooManyImages, n, size, maxImageValues)
	}
	row := make(map[uint64]int, n)
	for i, id := range ids {
		row[id] = i
	}
	x := make([]float32, n*size)
	var scratch []float32
	for r.Next() {
		if err := ctx.Err(); err != nil {
			return Images{}, err
		}
		rec := r.Record()
		rids := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		for k := 0; k < rids.Len(); k++ {
			i, ok := row[rids.Value(k)]
			if !ok {
				continue
			}
			if err := pre.Pixels(imgs.Value(k), x[i*size:(i+1)*size], &scratch); err != nil {
				return Images{}, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", rids.Value(k), err))
			}
		}
	}
	if err := r.Err(); err != nil {
		return Images{}, err
	}
	return Images{X: x, N: n, C: 3, H: pre.H, W: pre.W}, nil
}

// classSplit runs SplitClasses on the training images (SplitClasses):
// the report, the carriers and the patterns.
func (b *bench) classSplit(ctx context.Context) (*ClassSplit, []bool, []Pattern, error) {
	im, why, err := b.imagesOrWhy(ctx)
	if err != nil || why != "" {
		return &ClassSplit{Why: why}, make([]bool, b.t.N()), nil, err
	}
	return SplitClasses(im, b.t.Labels, b.p.Split())
}
