package main

import (
	"fmt"
	"math"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// whitenShrink is the share of the mean variance added to every
// direction of the trusted rows' move covariance before it is inverted
// (--whiten-shrink).
var whitenShrink = 0.1

// whitener measures a move (filtered minus original embedding) against
// the moves of the trusted training rows: the Mahalanobis length of the
// move under their covariance, shrunk towards a multiple of the identity.
// A clean input moves the way clean rows move, along the few directions
// the masked channels feed; an input whose trigger the mask undid moves
// from the trigger's target back to its content, a direction clean rows
// seldom take, so its whitened move stands out more than its length.
type whitener struct {
	d       int
	mean    []float64
	inv     []float64 // (cov + lambda I)^-1, d x d
	trusted []float64 // the trusted rows' whitened moves, sorted
}

// newWhitener fits the whitener on the trusted rows' moves.
func newWhitener(t, f *feat.Table, trusted []bool, shrink float64) (*whitener, error) {
	d := t.Embedding.D
	// The covariance is fitted on every other trusted row and the
	// quantiles are read on the rest: a covariance of d dimensions fitted
	// on a few thousand rows makes those rows' own moves look smaller
	// than any other input's.
	var rows, calib []int
	for i, ok := range trusted {
		if ok {
			if (len(rows)+len(calib))%2 == 0 {
				rows = append(rows, i)
			} else {
				calib = append(calib, i)
			}
		}
	}
	if len(rows) < 2 || len(calib) < 1 {
		return nil, fmt.Errorf("whitened move: %d trusted rows, want at least 3", len(rows)+len(calib))
	}
	mv := make([]float64, len(rows)*d)
	mean := make([]float64, d)
	for r, i := range rows {
		for j := 0; j < d; j++ {
			v := float64(f.Embedding.X[i*d+j] - t.Embedding.X[i*d+j])
			mv[r*d+j] = v
			mean[j] += v / float64(len(rows))
		}
	}
	cov := make([]float64, d*d)
	x := make([]float64, d)
	for r := range rows {
		for j := range x {
			x[j] = mv[r*d+j] - mean[j]
		}
		for a := 0; a < d; a++ {
			xa := x[a] / float64(len(rows))
			row := cov[a*d : (a+1)*d]
			for b := 0; b <= a; b++ {
				row[b] += xa * x[b]
			}
		}
	}
	var tr float64
	for a := 0; a < d; a++ {
		tr += cov[a*d+a]
		for b := 0; b < a; b++ {
			cov[b*d+a] = cov[a*d+b]
		}
	}
	eye := make([]float64, d*d)
	for a := 0; a < d; a++ {
		eye[a*d+a] = 1
	}
	inv, err := stat.SolveRidge(cov, d, eye, d, math.Max(shrink*tr/float64(d), 1e-12))
	if err != nil {
		return nil, fmt.Errorf("whitened move: %w", err)
	}
	w := &whitener{d: d, mean: mean, inv: inv}
	for _, i := range calib {
		w.trusted = append(w.trusted, w.norm(t.Embedding.X[i*d:(i+1)*d], f.Embedding.X[i*d:(i+1)*d]))
	}
	sort.Float64s(w.trusted)
	return w, nil
}

// norm is the whitened length of the move from orig to filt.
func (w *whitener) norm(orig, filt []float32) float64 {
	x := make([]float64, w.d)
	for j := range x {
		x[j] = float64(filt[j]-orig[j]) - w.mean[j]
	}
	var q float64
	for a := 0; a < w.d; a++ {
		q += x[a] * stat.Dot(w.inv[a*w.d:(a+1)*w.d], x)
	}
	return math.Sqrt(math.Max(q, 0))
}

// quantiles are the trusted rows' whitened moves at the quantiles qs.
func (w *whitener) quantiles(qs []float64) []float64 {
	out := make([]float64, len(qs))
	for k, q := range qs {
		out[k] = w.trusted[int(q*float64(len(w.trusted)-1))]
	}
	return out
}
