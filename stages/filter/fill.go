package filter

import (
	"context"
	"fmt"
	"math"

	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// fill is the fill step's result: what each switched-off channel becomes.
type fill struct {
	// values are per layer the constant fill of each channel (the
	// intercept when weights is set).
	values map[string][]float32
	// weights are per layer the regression of each switched-off channel
	// on the kept ones (channels x channels); nil: the constant fill.
	weights map[string][]float32
	// Report says which fill was kept and why.
	Report *FillReport
}

// FillReport is the guard's measurement behind the regression fill.
type FillReport struct {
	Fill          string  `json:"fill"`
	WorstZMean    float64 `json:"worst_z_mean_fill"`
	WorstZRegress float64 `json:"worst_z_regression_fill"`
	Why           string  `json:"why,omitempty"`
}

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
func (b *bench) regressionFill(ctx context.Context, keep map[string][]bool, score map[string][]float32) (map[string][]float32, map[string][]float32, error) {
	var names []string
	for _, l := range b.t.Layers {
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
	enc, x, n, err := b.rawTrusted(names)
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	type acc struct {
		c, rows int
		sum     []float64
		cross   []float64 // lower triangle used
	}
	accs := make([]*acc, len(enc.Layers))
	for i, l := range enc.Layers {
		accs[i] = &acc{c: l.Channels, sum: make([]float64, l.Channels), cross: make([]float64, l.Channels*l.Channels)}
	}
	err = positions(ctx, enc, x, n, func(li int, v []float32) {
		a, c := accs[li], accs[li].c
		for i, vi := range v {
			a.sum[i] += float64(vi)
			row := a.cross[i*c : i*c+i+1]
			for j := range row {
				row[j] += float64(vi) * float64(v[j])
			}
		}
		a.rows++
	})
	if err != nil {
		return nil, nil, err
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

// fillChannels decides what the switched-off channels of sel become: the
// mean fill (each channel's mean on trusted rows), or with fill regression
// a ridge regression on the layer's unsuspicious kept channels, kept only
// when no pattern masked against (or a neighbour) collapses more than
// fill_slack same-size z above where the mean fill left it.
func (b *bench) fillChannels(ctx context.Context, sel *selection, sus *suspicion) (*fill, error) {
	mean := &fill{values: b.means}
	if b.p.Fill != "regression" || len(sel.masked) == 0 {
		return mean, nil
	}
	w, icpt, err := b.regressionFill(ctx, sel.keep, sus.z)
	if err != nil {
		return nil, err
	}
	pats := sel.against(b.canvas.H, b.canvas.W, b.p.Sizes)
	_, meanZ, err := b.worst(sel.keep, pats, sel.stats)
	if err != nil {
		return nil, err
	}
	reg := &fill{values: map[string][]float32{}, weights: w}
	for name, fl := range b.means {
		reg.values[name] = fl
		if c, ok := icpt[name]; ok {
			reg.values[name] = c
		}
	}
	regZ, err := b.worstBaked(encoder.WithCaps(encoder.MasksOf(sel.keep, reg.values, w), b.caps), pats, sel.stats)
	if err != nil {
		return nil, err
	}
	rep := &FillReport{WorstZMean: meanZ, WorstZRegress: regZ}
	bar := math.Max(meanZ, b.p.StopZ) + b.p.FillSlack
	if regZ <= bar {
		rep.Fill, reg.Report = "regression", rep
		return reg, nil
	}
	rep.Fill = "mean"
	rep.Why = fmt.Sprintf("the regression fill lets a pattern masked against collapse again (same-size z %.2f > %.2f)", regZ, bar)
	mean.Report = rep
	return mean, nil
}

// worstBaked is the largest same-size z, over pats, of the collapse under
// masks built into a session of their own (a regression fill cannot be a
// run-time mask).
func (b *bench) worstBaked(masks []encoder.Mask, pats []Pattern, stats groupStats) (float64, error) {
	enc, err := b.in.Model.Session(encoder.Config{Masks: masks, ORT: ort.Options{Device: b.p.Device}})
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	size, n, d := enc.ImageSize(), b.n, enc.Dim
	all := append([]*Pattern{nil}, make([]*Pattern, len(pats))...)
	for i := range pats {
		all[i+1] = &pats[i]
	}
	traces := make([]float64, len(all))
	per := max(1, maxRows/n)
	for lo := 0; lo < len(all); lo += per {
		ps := all[lo:min(len(all), lo+per)]
		x, err := enc.Batch(n * len(ps))
		if err != nil {
			return 0, err
		}
		for k, pat := range ps {
			b.inputs(x[k*n*size:(k+1)*n*size], pat)
		}
		emb, _, err := enc.Embed(n * len(ps))
		if err != nil {
			return 0, err
		}
		for k := range ps {
			traces[lo+k] = stat.TraceCov(emb[k*n*d:(k+1)*n*d], n, d)
		}
	}
	worst := math.Inf(-1)
	for i := range pats {
		worst = math.Max(worst, stats.z(pats[i], collapseOf(traces[i+1], traces[0])))
	}
	return worst, nil
}
