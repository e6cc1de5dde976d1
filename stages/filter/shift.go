package filter

import (
	"context"
	"math"
	"math/rand/v2"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Shifted is the shift check's report (shift_z): on the masked encoder,
// the pattern that moves the scan images' mean embedding the most against
// random patterns of its size. A trigger the mask undid only in part can
// stop pulling images together (its collapse is back among random
// patterns') and still push them all one way, towards its target.
type Shifted struct {
	// Judged counts the patterns judged: random candidates and the
	// anchored patches.
	Judged int `json:"judged"`
	// Pattern is the one that moved the mean the most (same-size z), and
	// Z that z.
	Pattern Pattern `json:"pattern"`
	Z       float64 `json:"z"`
	// Shift is Pattern's move of the mean: its squared length over the
	// clean scan images' total variance.
	Shift float64 `json:"shift"`
	// Added is set when Z reached shift_z: the pattern's rows joined the
	// augment rows (the head learns that it means nothing) and the gate's
	// probe, and the gate sends shiftThrough of them through.
	Added bool `json:"added"`
	// Region is, when Added, where the original encoder sends Pattern:
	// its rows become suspects, as the scan's pattern's do.
	Region *Region `json:"region,omitempty"`
}

// shiftStream is the random stream of the shift check's candidates, apart
// from the scan's, so that turning the check on changes nothing else.
const shiftStream = 0x7368696674

// shiftCheck judges, under keep, random candidates (rescan_candidates of
// them) and the anchored patches (rescan_anchors' set; borders when that
// is off) by how far each moves the scan images' mean embedding, as a
// same-size robust z against the random candidates of its group (the
// scan's groupStats, without blend controls).
func (b *bench) shiftCheck(ctx context.Context, keep map[string][]bool) (*Shifted, error) {
	h, w := b.canvas.H, b.canvas.W
	rng := rand.New(rand.NewPCG(b.p.Seed, shiftStream))
	random := b.p.RescanCands
	ps := make([]Pattern, 0, random+300)
	for range random {
		ps = append(ps, randomPattern(rng, h, w, b.p.Sizes))
	}
	ps = append(ps, anchored(h, w, b.p.Sizes, b.p.RescanAnchors == "all")...)
	views := make([]view, 1+len(ps))
	views[0] = view{keep: keep}
	for i := range ps {
		views[i+1] = view{pat: &ps[i], keep: keep}
	}
	n, d := b.n, b.sess.Dim
	var base float64
	var clean []float64
	shift := make([]float64, len(ps))
	err := b.run(views, func(k int, emb []float32, _ [][]float32) {
		m := stat.Mean(emb, d, nil)
		if k == 0 {
			base, clean = stat.TraceCov(emb, n, d), m
			return
		}
		shift[k-1] = stat.Dist2(m, clean) / math.Max(base, 1e-12)
	})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cands := make([]cand, random)
	for i := range cands {
		cands[i] = cand{ps[i], shift[i]}
	}
	stats, _ := b.groupStatsOf(cands, nil)
	rep := &Shifted{Judged: len(ps), Z: math.Inf(-1)}
	for i, p := range ps {
		if z := stats.z(p, shift[i]); z > rep.Z {
			rep.Pattern, rep.Z, rep.Shift = p, z, shift[i]
		}
	}
	rep.Added = b.p.ShiftZ > 0 && rep.Z >= b.p.ShiftZ
	return rep, nil
}

// added is the added pattern's name (its gate family), "" when the check
// did not run or added nothing.
func (s *Shifted) added() string {
	if s == nil || !s.Added {
		return ""
	}
	return s.Pattern.String()
}
