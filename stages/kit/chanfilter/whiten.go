package chanfilter

import (
	"fmt"
	"math"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Moves is how far a channel filter moved each training row's embedding:
// the length of each move and the move itself (filtered minus original
// embedding), rows in the features' order.
type Moves struct {
	Length []float32
	Vec    []float32 // N x D
	D      int
}

// Lengths returns the moves' lengths; nil when m is nil (nothing masked).
func (m *Moves) Lengths() []float32 {
	if m == nil {
		return nil
	}
	return m.Length
}

// Whiten measures a move against the moves of clean rows: its Mahalanobis
// length under their covariance, shrunk towards a multiple of the
// identity. Clean inputs move the way clean rows move, along the few
// directions the masked channels feed; an input whose trigger the mask
// undid moves from the trigger's target back to its content, a direction
// clean rows seldom take, so its whitened move stands out more than its
// length does (docs/DECISIONS.md, "the gate's move, whitened").
type Whiten struct {
	// Mean is the clean rows' mean move; Factor (D x D, row-major, lower
	// triangular) is the Cholesky factor of the inverse of their shrunk
	// covariance, so that the whitened length of a move m is the length
	// of the row vector (m - Mean) Factor.
	Mean   []float64 `json:"mean"`
	Factor []float32 `json:"factor"`
}

// FitWhiten fits a Whiten on the moves of rows, with shrink times the
// mean variance added to every direction of their covariance.
func FitWhiten(m *Moves, rows []int, shrink float64) (*Whiten, error) {
	if m == nil || len(rows) < 2 {
		return nil, fmt.Errorf("chanfilter: whitened move: %d rows to fit on, want at least 2", len(rows))
	}
	if !(shrink > 0) {
		return nil, fmt.Errorf("chanfilter: whitened move: shrink %v, want > 0", shrink)
	}
	d, n := m.D, float64(len(rows))
	mean := make([]float64, d)
	for _, i := range rows {
		for j, v := range m.Vec[i*d : (i+1)*d] {
			mean[j] += float64(v) / n
		}
	}
	cov := make([]float64, d*d) // lower triangle
	x := make([]float64, d)
	for _, i := range rows {
		for j, v := range m.Vec[i*d : (i+1)*d] {
			x[j] = float64(v) - mean[j]
		}
		for a := 0; a < d; a++ {
			xa, row := x[a]/n, cov[a*d:a*d+a+1]
			for b := range row {
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
		return nil, fmt.Errorf("chanfilter: whitened move: %w", err)
	}
	l, err := stat.Cholesky(inv, d, 0)
	if err != nil {
		return nil, fmt.Errorf("chanfilter: whitened move: the inverse: %w", err)
	}
	w := &Whiten{Mean: mean, Factor: make([]float32, d*d)}
	for i, v := range l {
		w.Factor[i] = float32(v)
	}
	return w, nil
}

// Length is the whitened length of the move from orig to filt.
func (w *Whiten) Length(orig, filt []float32) float64 {
	x := make([]float64, len(w.Mean))
	for j := range x {
		x[j] = float64(filt[j] - orig[j])
	}
	return w.length(x, make([]float64, len(x)))
}

// Lengths is the whitened length of every row's move.
func (w *Whiten) Lengths(m *Moves) []float32 {
	d := m.D
	out := make([]float32, len(m.Length))
	x, y := make([]float64, d), make([]float64, d)
	for i := range out {
		for j, v := range m.Vec[i*d : (i+1)*d] {
			x[j] = float64(v)
		}
		out[i] = float32(w.length(x, y))
	}
	return out
}

// length is the whitened length of the move x, with y as scratch (both D
// values; x is overwritten): the length of (x - Mean) Factor, the factor
// read row by row (it is lower triangular).
func (w *Whiten) length(x, y []float64) float64 {
	d := len(w.Mean)
	clear(y)
	for a := 0; a < d; a++ {
		xa := x[a] - w.Mean[a]
		for b, f := range w.Factor[a*d : a*d+a+1] {
			y[b] += xa * float64(f)
		}
	}
	var q float64
	for _, v := range y {
		q += v * v
	}
	return math.Sqrt(q)
}

// FitWhitenHalves fits a Whiten on every other trusted row's move (the
// first, the third, ...) and returns it with the other trusted rows
// (calib), on which thresholds are to be read: a covariance of D
// dimensions fitted on a few thousand rows makes those rows' own whitened
// moves smaller than any other input's.
func FitWhitenHalves(m *Moves, trusted []bool, shrink float64) (w *Whiten, calib []bool, err error) {
	var fit []int
	calib = make([]bool, len(trusted))
	k := 0
	for i, ok := range trusted {
		if !ok {
			continue
		}
		if k%2 == 0 {
			fit = append(fit, i)
		} else {
			calib[i] = true
		}
		k++
	}
	if k < 3 {
		return nil, nil, fmt.Errorf("chanfilter: whitened move: %d trusted rows, want at least 3", k)
	}
	w, err = FitWhiten(m, fit, shrink)
	return w, calib, err
}

// check says what is wrong with w for embeddings of d values.
func (w *Whiten) check(d int) error {
	if len(w.Mean) == 0 || len(w.Factor) != len(w.Mean)*len(w.Mean) {
		return fmt.Errorf("gate: whitened move with a mean of %d values and a factor of %d, want D and D x D", len(w.Mean), len(w.Factor))
	}
	if d > 0 && len(w.Mean) != d {
		return fmt.Errorf("gate: whitened move of %d values for probe rows of %d", len(w.Mean), d)
	}
	return nil
}
