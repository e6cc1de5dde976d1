package main

import (
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/feat"
)

// whitenShrink is the share of the mean variance added to every
// direction of the trusted rows' move covariance (--whiten-shrink; the
// filter's gate_move "whitened" uses 0.1).
var whitenShrink = 0.1

// whitener is the gate check's whitened move (chanfilter.Whiten) with the
// trusted rows' whitened moves it reads its thresholds from.
type whitener struct {
	*chanfilter.Whiten
	trusted []float64 // sorted
}

// newWhitener fits the whitening as the filter does
// (chanfilter.FitWhitenHalves) on the trusted rows' moves (orig t,
// filtered f) and keeps the whitened moves of the trusted rows it was not
// fitted on.
func newWhitener(t, f *feat.Table, trusted []bool, shrink float64) (*whitener, error) {
	d := t.Embedding.D
	m := &chanfilter.Moves{Length: make([]float32, t.N()), Vec: make([]float32, t.N()*d), D: d}
	for i, o := range t.Embedding.X {
		m.Vec[i] = f.Embedding.X[i] - o
	}
	wh, calib, err := chanfilter.FitWhitenHalves(m, trusted, shrink)
	if err != nil {
		return nil, err
	}
	w := &whitener{Whiten: wh}
	ls := wh.Lengths(m)
	for i, c := range calib {
		if c {
			w.trusted = append(w.trusted, float64(ls[i]))
		}
	}
	sort.Float64s(w.trusted)
	return w, nil
}

// quantiles are the trusted rows' whitened moves at the quantiles qs.
func (w *whitener) quantiles(qs []float64) []float64 {
	out := make([]float64, len(qs))
	for k, q := range qs {
		out[k] = w.trusted[int(q*float64(len(w.trusted)-1))]
	}
	return out
}
