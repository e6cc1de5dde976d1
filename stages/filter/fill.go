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
// found pattern moves would carry the trigger into the fill), over all
// positions of the layer's feature maps on fitImages trusted images under
// the unmasked encoder. A switched-off channel then carries what the kept
// channels say of it on clean data instead of a constant.
//
// With pats (fill "paired") the fit also takes the same images carrying
// each pattern: the kept channels under the pattern are the inputs and the
// clean image's switched-off channels at the same position the targets,
// weighted so that the patterned rows together weigh as much as the clean
// ones. A fill fitted so pays for reading a pattern masked against back
// out of the kept channels.
//
// It returns per layer the weights (channels x channels, rows of the
// switched-off channels) and the intercepts.
func (b *bench) regressionFill(ctx context.Context, keep map[string][]bool, score map[string][]float32, pats []Pattern) (map[string][]float32, map[string][]float32, error) {
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
	var enc *encoder.Encoder
	var xs [][]float32
	var n int
	var err error
	if len(pats) == 0 {
		var x []float32
		enc, x, n, err = b.rawTrusted(names)
		xs = [][]float32{x}
	} else if enc, err = b.rawSession(names); err == nil {
		xs, n, err = b.pairedInputs(enc, pats)
		if err != nil {
			enc.Close()
		}
	}
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	accs := make([]*fitMoments, len(enc.Layers))
	for i, l := range enc.Layers {
		accs[i] = newFitMoments(l.Channels, len(pats) > 0)
	}
	err = positions(ctx, enc, xs, n, func(li int, vs [][]float32) {
		a := accs[li]
		a.addClean(vs[0])
		for _, u := range vs[1:] {
			a.addPaired(u, vs[0])
		}
	})
	if err != nil {
		return nil, nil, err
	}
	wp := 0.0
	if len(pats) > 0 {
		wp = 1 / float64(len(pats))
	}
	weights, icpt := map[string][]float32{}, map[string][]float32{}
	for li, l := range enc.Layers {
		a, c := accs[li], l.Channels
		mx, my, cxx, cxy := a.stats(wp)
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
					A[i*nk+j] = cxx(ci, cj)
				}
				tr += A[i*nk+i]
			}
			B := make([]float64, nk*no)
			for i, ci := range kept {
				for j, cj := range off {
					B[i*no+j] = cxy(ci, cj)
				}
			}
			sol, err := stat.SolveRidge(A, nk, B, no, 1e-3*tr/float64(nk)+1e-12)
			if err != nil {
				return nil, nil, err
			}
			for j, cj := range off {
				inter := my[cj]
				for i, ci := range kept {
					wt := sol[i*no+j]
					w[cj*c+ci] = float32(wt)
					inter -= wt * mx[ci]
				}
				b[cj] = float32(inter)
			}
		} else {
			for _, cj := range off {
				b[cj] = float32(my[cj])
			}
		}
		weights[l.Name], icpt[l.Name] = w, b
	}
	return weights, icpt, nil
}

// pairedInputs decodes the fitImages trusted images once and returns them
// as enc's input, painted clean (first) and then carrying each of pats,
// and how many images each set holds.
func (b *bench) pairedInputs(enc *encoder.Encoder, pats []Pattern) ([][]float32, int, error) {
	canon, _, _, _, err := decode(b.in, b.canvas, b.pickTrusted(fitImages), true)
	if err != nil {
		return nil, 0, err
	}
	cs, size := b.canvas.CanonicalSize(), enc.ImageSize()
	n := len(canon) / cs
	tmp := make([]float32, cs)
	var scratch []float32
	xs := make([][]float32, 1+len(pats))
	for k := range xs {
		xs[k] = make([]float32, n*size)
		var pat *Pattern
		if k > 0 {
			pat = &pats[k-1]
		}
		for i := 0; i < n; i++ {
			copy(tmp, canon[i*cs:(i+1)*cs])
			b.paint(xs[k][i*size:(i+1)*size], tmp, pat, &scratch)
		}
	}
	return xs, n, nil
}

// fitMoments are the raw moments of one layer's fit rows: clean rows,
// whose inputs and targets are the same channel vector, and (paired)
// patterned rows, whose inputs u are the channels under a pattern and
// whose targets v are the clean image's at the same position.
type fitMoments struct {
	c          int
	n, np      float64
	sum, cross []float64 // clean: sums, products (lower triangle)
	su, sv     []float64 // patterned: sums of u and of v
	uu, uv     []float64 // patterned: u u' (lower triangle), u v' (whole)
}

func newFitMoments(c int, paired bool) *fitMoments {
	m := &fitMoments{c: c, sum: make([]float64, c), cross: make([]float64, c*c)}
	if paired {
		m.su, m.sv = make([]float64, c), make([]float64, c)
		m.uu, m.uv = make([]float64, c*c), make([]float64, c*c)
	}
	return m
}

func (m *fitMoments) addClean(v []float32) {
	c := m.c
	for i, vi := range v {
		m.sum[i] += float64(vi)
		row := m.cross[i*c : i*c+i+1]
		for j := range row {
			row[j] += float64(vi) * float64(v[j])
		}
	}
	m.n++
}

func (m *fitMoments) addPaired(u, v []float32) {
	c := m.c
	for i, ui := range u {
		m.su[i] += float64(ui)
		m.sv[i] += float64(v[i])
		row := m.uu[i*c : i*c+i+1]
		for j := range row {
			row[j] += float64(ui) * float64(u[j])
		}
		row = m.uv[i*c : (i+1)*c]
		for j := range row {
			row[j] += float64(ui) * float64(v[j])
		}
	}
	m.np++
}

// stats returns the inputs' and the targets' means and their covariances
// (inputs with inputs, inputs with targets) over the fit rows, each
// patterned row weighing wp against a clean row's 1.
func (m *fitMoments) stats(wp float64) (mx, my []float64, cxx, cxy func(i, j int) float64) {
	c := m.c
	w := m.n + wp*m.np
	mx, my = make([]float64, c), make([]float64, c)
	for i := range mx {
		mx[i], my[i] = m.sum[i], m.sum[i]
		if m.np > 0 {
			mx[i] += wp * m.su[i]
			my[i] += wp * m.sv[i]
		}
		mx[i] /= w
		my[i] /= w
	}
	lower := func(t []float64, i, j int) float64 {
		if j > i {
			i, j = j, i
		}
		return t[i*c+j]
	}
	cxx = func(i, j int) float64 {
		s := lower(m.cross, i, j)
		if m.np > 0 {
			s += wp * lower(m.uu, i, j)
		}
		return s/w - mx[i]*mx[j]
	}
	cxy = func(i, j int) float64 {
		s := lower(m.cross, i, j)
		if m.np > 0 {
			s += wp * m.uv[i*c+j]
		}
		return s/w - mx[i]*my[j]
	}
	return mx, my, cxx, cxy
}

// fillChannels decides what the switched-off channels of sel become: the
// mean fill (each channel's mean on trusted rows), or with fill regression
// (or paired: fitted also on the patterns masked against) a ridge
// regression on the layer's unsuspicious kept channels, kept only when no
// pattern masked against (or a neighbour) collapses more than fill_slack
// same-size z above where the mean fill left it.
func (b *bench) fillChannels(ctx context.Context, sel *selection, sus *suspicion) (*fill, error) {
	mean := &fill{values: b.means}
	if b.p.Fill == "mean" || len(sel.masked) == 0 {
		return mean, nil
	}
	var paired []Pattern
	if b.p.Fill == "paired" {
		paired = sel.maskedAgainst()
	}
	w, icpt, err := b.regressionFill(ctx, sel.keep, sus.z, paired)
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
		rep.Fill, reg.Report = b.p.Fill, rep
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
