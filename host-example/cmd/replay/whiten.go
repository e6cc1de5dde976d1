package main

import (
	"fmt"
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

// newWhitener fits the whitening on every other trusted row's move (orig
// t, filtered f) and keeps the other trusted rows' whitened moves, as the
// filter does: a covariance fitted on a few thousand rows makes those
// rows' own moves look smaller than any other input's.
func newWhitener(t, f *feat.Table, trusted []bool, shrink float64) (*whitener, error) {
	d := t.Embedding.D
	m := &chanfilter.Moves{Length: make([]float32, t.N()), Vec: make([]float32, t.N()*d), D: d}
	for i := range m.Length {
		for j := 0; j < d; j++ {
			m.Vec[i*d+j] = f.Embedding.X[i*d+j] - t.Embedding.X[i*d+j]
		}
	}
	var fit, calib []int
	for i, ok := range trusted {
		if ok {
			if (len(fit)+len(calib))%2 == 0 {
				fit = append(fit, i)
			} else {
				calib = append(calib, i)
			}
		}
	}
	if len(calib) == 0 {
		return nil, fmt.Errorf("whitened move: %d trusted rows, want at least 3", len(fit))
	}
	wh, err := chanfilter.FitWhiten(m, fit, shrink)
	if err != nil {
		return nil, err
	}
	w := &whitener{Whiten: wh}
	for _, i := range calib {
		w.trusted = append(w.trusted, wh.Length(t.Embedding.X[i*d:(i+1)*d], f.Embedding.X[i*d:(i+1)*d]))
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
