package filter

import (
	"math"
	"slices"

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
// trusted rows' median move; when the trusted rows' moves have no spread
// (a trojan silent on clean inputs leaves them all where they were), the
// rows that moved further than every trusted row. It flags nothing when z
// is 0 or no row moved.
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
	tr := trustedMoves(moved, trusted)
	if len(tr) == 0 {
		rep.Why = "no trusted rows"
		return suspect, rep
	}
	med, scale := stat.Robust(tr)
	rep.TrustedMedian, rep.TrustedScale = med, scale
	switch {
	case math.IsNaN(scale):
		rep.Why = "the trusted rows' moves are not numbers"
		return suspect, rep
	case scale == 0:
		rep.Threshold = slices.Max(tr)
	default:
		rep.Threshold = med + z*scale
	}
	for i, m := range moved {
		if float64(m) > rep.Threshold {
			suspect[i] = true
			rep.Suspects++
		}
	}
	return suspect, rep
}

// trustedMoves are the moves (one per training row) of the trusted rows.
func trustedMoves(moved []float32, trusted []bool) []float64 {
	var tr []float64
	for i, m := range moved {
		if trusted[i] {
			tr = append(tr, float64(m))
		}
	}
	return tr
}

const (
	// minGathered is the fewest far-moved rows whose origin is looked for.
	minGathered = 20
	// gathered is how far apart the far-moved rows' origin must be: their
	// median distance to its centre at most this part of the trusted rows'
	// median distance to it. Chosen on the tuning half of the attack zoo
	// (docs/DECISIONS.md): rows that carry a trojan's trigger came from
	// 0.18-0.25 of it on three of its four T3 cells (0.47 on the fourth),
	// clean rows that moved far from 0.39-1.04.
	gathered = 1.0 / 3
)

// MovedFrom flags the rows that sit, under the original encoder, where the
// far-moved rows came from. Inputs that carry an encoder's trigger collapse
// onto one point of its embedding space, so rows that the mask moved far
// because they carry the trigger started out gathered, while clean rows
// that moved far (a class the masked channels serve) did not. Rows whose
// trigger the mask undid only in part move less than the threshold, but
// they started at the same point: this finds them. x holds the original
// embeddings (n x d). The centre is the mean of the far rows nearest to
// the mean of all of them (the closer half), the radius their median
// distance to it, and the region's rule is the found trigger's (near).
// Nothing is flagged when fewer than 20 rows moved far or they are not
// gathered.
func MovedFrom(x []float32, d int, far, trusted []bool) ([]bool, *Region) {
	var rows []int
	for i, f := range far {
		if f {
			rows = append(rows, i)
		}
	}
	if len(rows) < minGathered {
		return make([]bool, len(far)), &Region{Why: "too few rows moved far"}
	}
	c := stat.Mean(x, d, rows)
	ds := make([]float64, len(rows))
	for k, i := range rows {
		ds[k] = stat.DistTo(x[i*d:(i+1)*d], c)
	}
	cut, _ := stat.Robust(ds)
	var core []int
	for k, i := range rows {
		if ds[k] <= cut {
			core = append(core, i)
		}
	}
	c = stat.Mean(x, d, core)
	for k, i := range rows {
		ds[k] = stat.DistTo(x[i*d:(i+1)*d], c)
	}
	radius, _ := stat.Robust(ds)
	reg, _, suspect := near(x, d, c, radius, trusted, gathered, "the far-moved rows did not start out gathered")
	return suspect, reg
}
