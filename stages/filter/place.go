package filter

import (
	"sort"
)

// Place step sizes: the places of a patch are screened on every
// placeScreenStep-th scan image, and the placeKeep best of them judged on
// all of them.
const (
	placeScreenStep = 4
	placeKeep       = 16
)

// placeCall returns a copy of res whose call is the called patch moved to
// the place where it stands out most (call_place "all"; see bestPlace),
// judged on the unmasked encoder against res's random statistics. The
// best place becomes the call when its same-size z beats the call's. A
// patch trojan can answer at one exact place far more than a pixel
// beside it (enc_badencoder: a white 3x3 at its trigger's corner z 20.8,
// a pixel down and right 0.3), and a random scan seldom lands on that
// place: the refine moves at most two pixels a step, and masking against
// a place beside the trigger can leave the trigger working. res itself
// (the scan's memo) is unchanged; a scan that calls no patch (every clean
// encoder, a blend, a pasted patch) is returned as it is. It draws
// nothing from the random source.
func (b *bench) placeCall(res *scanResult) (*scanResult, error) {
	if b.p.CallPlace != "all" || !res.Backdoored || !isPatch(res.Pattern) {
		return res, nil
	}
	few, err := b.subset(placeScreenStep).collapser(nil)
	if err != nil {
		return nil, err
	}
	screen := func(ps []Pattern) ([]float64, error) { return few.collapse(ps, nil) }
	judge := func(ps []Pattern) (cand, float64, error) { return b.worstCand(nil, ps, res.stats) }
	best, z, screened, err := bestPlace(res.Pattern, b.canvas.H, b.canvas.W, placeKeep, screen, judge)
	if err != nil {
		return nil, err
	}
	out := *res
	out.Placed, out.PlaceZ = screened, z
	if screened == 0 || z <= res.BestZ {
		return &out, nil
	}
	out.FromPlace, out.PlaceFrom = true, res.Pattern.String()
	out.takeCall(best, z)
	return &out, nil
}

// bestPlace screens the patch call at every other place of an h x w
// image (screen returns a score per pattern, higher standing out more)
// and judges the keep best of them (judge returns the best of its
// patterns and that one's z); call's own place is never screened. It
// returns the best place judged, its z and how many places it screened.
func bestPlace(call Pattern, h, w, keep int, screen func([]Pattern) ([]float64, error), judge func([]Pattern) (cand, float64, error)) (cand, float64, int, error) {
	var ps []Pattern
	for r := 0; r+call.Size <= h; r++ {
		for c := 0; c+call.Size <= w; c++ {
			if r == call.Row && c == call.Col {
				continue
			}
			q := call
			q.Row, q.Col = r, c
			ps = append(ps, q)
		}
	}
	if len(ps) == 0 {
		return cand{}, 0, 0, nil
	}
	scores, err := screen(ps)
	if err != nil {
		return cand{}, 0, 0, err
	}
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, c int) bool { return scores[order[a]] > scores[order[c]] })
	top := make([]Pattern, min(keep, len(ps)))
	for i := range top {
		top[i] = ps[order[i]]
	}
	best, z, err := judge(top)
	if err != nil {
		return cand{}, 0, 0, err
	}
	return best, z, len(ps), nil
}
