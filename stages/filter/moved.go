package filter

import (
	"math"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Moved says which training rows the mask moved as it moves inputs that
// carry the trigger. Masking undoes what the backdoor does: a row that
// carries the real trigger sat where the trigger sends inputs and goes
// back to where its content belongs, a long way, while a clean row moves
// little. This finds poisoned rows that the found trigger's region cannot
// (when that region is not apart from the trusted rows, or the rows
// carry a trigger a little different from the found pattern), and it
// needs no label: poison that sits in the trusted core is found too.
type Moved struct {
	TrustedMedian float64 `json:"trusted_median"` // median distance a trusted row moved
	TrustedScale  float64 `json:"trusted_scale"`  // their scaled median absolute deviation (stat.Robust)
	Threshold     float64 `json:"threshold"`      // rows that moved further are suspects
	Suspects      int     `json:"suspects"`
	Why           string  `json:"why_none,omitempty"`
}

// MovedSuspects flags the rows whose move (how far the filter moved each
// row's embedding) lies more than z robust standard deviations above the
// trusted rows' median move. It flags nothing when z is 0 or no row moved.
func MovedSuspects(moved []float32, trusted []bool, z float64) ([]bool, *Moved) {
	suspect := make([]bool, len(moved))
	rep := &Moved{}
	if z == 0 {
		rep.Why = "moved_z is 0"
		return suspect, rep
	}
	if moved == nil {
		rep.Why = "nothing masked"
		return suspect, rep
	}
	var tr []float64
	for i, m := range moved {
		if trusted[i] {
			tr = append(tr, float64(m))
		}
	}
	if len(tr) == 0 {
		rep.Why = "no trusted rows"
		return suspect, rep
	}
	med, scale := stat.Robust(tr)
	rep.TrustedMedian, rep.TrustedScale = med, scale
	if rep.TrustedScale == 0 || math.IsNaN(rep.TrustedScale) {
		rep.Why = "the trusted rows all moved alike"
		return suspect, rep
	}
	rep.Threshold = med + z*rep.TrustedScale
	for i, m := range moved {
		if float64(m) > rep.Threshold {
			suspect[i] = true
			rep.Suspects++
		}
	}
	return suspect, rep
}
