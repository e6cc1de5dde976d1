package filter

import (
	"context"
	"fmt"
	"math"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// fitImages is how many trusted images the regression fill is fitted on
// (every position of their feature maps is a row).
const fitImages = 256

// regressionFill fits, for each probed layer with channels switched off,
// every switched-off channel as a ridge regression on the layer's kept
// channels that no signal finds suspicious (score <= 0: a channel the
// found pattern moves would carry the trigger into the fill), over all positions of the layer's feature maps on fitImages
// trusted images under the unmasked encoder. A switched-off channel then
// carries what the kept channels say of it on clean data instead of a
// constant. It returns per layer the weights (channels x channels, rows
// of the switched-off channels) and the intercepts.
func (f *filterRun) regressionFill(ctx context.Context, keep map[string][]bool, score map[string][]float32, trusted []bool) (map[string][]float32, map[string][]float32, error) {
	var names []string
	for _, l := range f.t.Layers {
		for _, k := range keep[l.Name] {
			if !k {
				names = append(names, l.Name)
				break
			}
		}
	}
	if len(names) == 0 {
		return nil, nil, nil
	}
	enc, err := encoder.Open(f.p.Encoder, encoder.Config{Layers: names, RawLayers: true, ORT: ort.Options{Device: f.p.Device}})
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	x, n, err := f.decode(enc, f.pickTrusted(trusted, fitImages))
	if err != nil {
		return nil, nil, err
	}
	type acc struct {
		c, rows int
		sum     []float64
		cross   []float64 // lower triangle used
	}
	accs := make([]*acc, len(enc.Layers))
	for i, l := range enc.Layers {
		accs[i] = &acc{c: l.Channels, sum: make([]float64, l.Channels), cross: make([]float64, l.Channels*l.Channels)}
	}
	size := enc.ImageSize()
	const bs = 32
	v := make([]float64, 0, 1024)
	for lo := 0; lo < n; lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		m := min(bs, n-lo)
		buf, err := enc.Batch(m)
		if err != nil {
			return nil, nil, err
		}
		copy(buf, x[lo*size:(lo+m)*size])
		_, layers, err := enc.Embed(m)
		if err != nil {
			return nil, nil, err
		}
		for li, l := range enc.Layers {
			a, raw, c := accs[li], layers[li], l.Channels
			per := len(raw) / m // values per sample
			pos := per / c
			for s := 0; s < m; s++ {
				sample := raw[s*per : (s+1)*per]
				for p := 0; p < pos; p++ {
					v = v[:0]
					for j := 0; j < c; j++ {
						if l.Rank == 4 { // [C, H, W]
							v = append(v, float64(sample[j*pos+p]))
						} else { // [T, C]
							v = append(v, float64(sample[p*c+j]))
						}
					}
					for i, vi := range v {
						a.sum[i] += vi
						row := a.cross[i*c : i*c+i+1]
						for j := range row {
							row[j] += vi * v[j]
						}
					}
					a.rows++
				}
			}
		}
	}
	weights, icpt := map[string][]float32{}, map[string][]float32{}
	for li, l := range enc.Layers {
		a, c := accs[li], l.Channels
		mean := make([]float64, c)
		for i := range mean {
			mean[i] = a.sum[i] / float64(a.rows)
		}
		cov := func(i, j int) float64 {
			if j > i {
				i, j = j, i
			}
			return a.cross[i*c+j]/float64(a.rows) - mean[i]*mean[j]
		}
		var kept, off []int
		for ch, k := range keep[l.Name] {
			switch {
			case !k:
				off = append(off, ch)
			case score[l.Name][ch] <= 0:
				kept = append(kept, ch)
			}
		}
		nk, no := len(kept), len(off)
		w := make([]float32, c*c)
		b := make([]float32, c)
		if nk > 0 {
			A := make([]float64, nk*nk)
			var tr float64
			for i, ci := range kept {
				for j, cj := range kept {
					A[i*nk+j] = cov(ci, cj)
				}
				tr += A[i*nk+i]
			}
			B := make([]float64, nk*no)
			for i, ci := range kept {
				for j, cj := range off {
					B[i*no+j] = cov(ci, cj)
				}
			}
			sol, err := stat.SolveRidge(A, nk, B, no, 1e-3*tr/float64(nk)+1e-12)
			if err != nil {
				return nil, nil, err
			}
			for j, cj := range off {
				inter := mean[cj]
				for i, ci := range kept {
					wt := sol[i*no+j]
					w[cj*c+ci] = float32(wt)
					inter -= wt * mean[ci]
				}
				b[cj] = float32(inter)
			}
		} else {
			for _, cj := range off {
				b[cj] = float32(mean[cj])
			}
		}
		weights[l.Name], icpt[l.Name] = w, b
	}
	return weights, icpt, nil
}

// decode preprocesses, for enc, the images of the rows in want (by
// sample_id), in file order.
func (f *filterRun) decode(enc *encoder.Encoder, want map[uint64]int) ([]float32, int, error) {
	r, err := f.images.Reader()
	if err != nil {
		return nil, 0, err
	}
	defer r.Release()
	pre := encoder.ForEncoder(enc)
	size := enc.ImageSize()
	var scratch, x []float32
	n := 0
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < ids.Len(); i++ {
			if _, ok := want[ids.Value(i)]; !ok {
				continue
			}
			x = append(x, make([]float32, size)...)
			if err := pre.Image(imgs.Value(i), x[n*size:(n+1)*size], &scratch); err != nil {
				return nil, 0, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", ids.Value(i), err))
			}
			n++
		}
	}
	return x, n, r.Err()
}

// chooseFill fits the regression fill and keeps it when no pattern of
// pats (masked against, and their neighbours) collapses more than
// fill_slack same-size z above where the constant fill left it; it returns
// the fills (intercepts for the regression), the weights (nil: the
// constant fill) and what it measured.
func (f *filterRun) chooseFill(ctx context.Context, keep map[string][]bool, score, fill map[string][]float32, trusted []bool, pats []Pattern) (map[string][]float32, map[string][]float32, map[string]any, error) {
	w, icpt, err := f.regressionFill(ctx, keep, score, trusted)
	if err != nil {
		return nil, nil, nil, err
	}
	meanZ, err := f.fillGuard(encoder.MasksOf(keep, fill, nil), pats, f.lastStats)
	if err != nil {
		return nil, nil, nil, err
	}
	regFill := map[string][]float32{}
	for name, fl := range fill {
		regFill[name] = fl
		if b, ok := icpt[name]; ok {
			regFill[name] = b
		}
	}
	regZ, err := f.fillGuard(encoder.MasksOf(keep, regFill, w), pats, f.lastStats)
	if err != nil {
		return nil, nil, nil, err
	}
	guard := map[string]any{"worst_z_mean_fill": meanZ, "worst_z_regression_fill": regZ}
	bar := math.Max(meanZ, f.p.StopZ) + f.p.FillSlack
	if regZ <= bar {
		guard["fill"] = "regression"
		return regFill, w, guard, nil
	}
	guard["fill"] = "mean"
	guard["why"] = fmt.Sprintf("the regression fill lets a pattern masked against collapse again (same-size z %.2f > %.2f)", regZ, bar)
	return fill, nil, guard, nil
}

// fillGuard is the largest same-size z, over pats, of the collapse under
// the masks: the regression fill is kept only when it does not bring a
// pattern masked against back above where the constant fill left it.
func (f *filterRun) fillGuard(masks []encoder.Mask, pats []Pattern, stats groupStats) (float64, error) {
	enc, err := f.openMasked(masks)
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	sr, err := f.searcher(enc)
	if err != nil {
		return 0, err
	}
	cs, err := sr.collapse(pats, false)
	if err != nil {
		return 0, err
	}
	worst := math.Inf(-1)
	for i, p := range pats {
		worst = math.Max(worst, stats.z(p, cs[i]))
	}
	return worst, nil
}
