package filter

// placeCall returns a copy of res whose call is the called patch moved to
// the place where it stands out most (call_place "grid"; see bestPlace),
// judged on the unmasked encoder against res's random statistics. The
// best place becomes the call when its same-size z beats the call's. A
// trojan answers most at its trigger's own place, and a random scan that
// lands near a small trigger seldom lands on it: the refine moves at most
// two pixels a step, and masking against a place beside the trigger can
// leave the trigger working. res itself (the scan's memo) is unchanged; a
// scan that calls no patch (every clean encoder, a blend, a pasted patch)
// is returned as it is. It draws nothing from the random source.
func (b *bench) placeCall(res *scanResult) (*scanResult, error) {
	if b.p.CallPlace != "grid" || !res.Backdoored || !isPatch(res.Pattern) {
		return res, nil
	}
	judge := func(ps []Pattern) (cand, float64, error) { return b.worstCand(nil, ps, res.stats) }
	best, z, judged, err := bestPlace(res.Pattern, b.canvas.H, b.canvas.W, judge)
	if err != nil {
		return nil, err
	}
	out := *res
	out.Placed, out.PlaceZ = judged, z
	if judged == 0 || z <= res.BestZ {
		return &out, nil
	}
	out.FromPlace, out.PlaceFrom = true, res.Pattern.String()
	out.takeCall(best, z)
	return &out, nil
}

// bestPlace judges the patch call at every other place of a grid of
// two-pixel steps over an h x w image, flush with its right and bottom
// edges (a two-pixel step keeps a checkerboard's phase), and then a pixel
// either way of the best grid place; call's own place is never judged.
// judge returns the best of its patterns and that one's z. It returns the
// best place found, its z and how many places it judged.
func bestPlace(call Pattern, h, w int, judge func([]Pattern) (cand, float64, error)) (cand, float64, int, error) {
	seen := map[[2]int]bool{{call.Row, call.Col}: true}
	at := func(places [][2]int) []Pattern {
		var ps []Pattern
		for _, rc := range places {
			r, c := clamp(rc[0], 0, h-call.Size), clamp(rc[1], 0, w-call.Size)
			if seen[[2]int{r, c}] {
				continue
			}
			seen[[2]int{r, c}] = true
			q := call
			q.Row, q.Col = r, c
			ps = append(ps, q)
		}
		return ps
	}
	var grid [][2]int
	for _, r := range gridSteps(h - call.Size) {
		for _, c := range gridSteps(w - call.Size) {
			grid = append(grid, [2]int{r, c})
		}
	}
	ps := at(grid)
	if len(ps) == 0 {
		return cand{}, 0, 0, nil
	}
	best, z, err := judge(ps)
	if err != nil {
		return cand{}, 0, 0, err
	}
	judged := len(ps)
	var near [][2]int
	for dr := -1; dr <= 1; dr++ {
		for dc := -1; dc <= 1; dc++ {
			near = append(near, [2]int{best.p.Row + dr, best.p.Col + dc})
		}
	}
	if ps := at(near); len(ps) > 0 {
		c, cz, err := judge(ps)
		if err != nil {
			return cand{}, 0, 0, err
		}
		judged += len(ps)
		if cz > z {
			best, z = c, cz
		}
	}
	return best, z, judged, nil
}

// gridSteps are the places 0, 2, 4, ... below last, and last itself: a
// patch's rows (or columns) on a two-pixel grid flush with both edges.
func gridSteps(last int) []int {
	var out []int
	for v := 0; v < last; v += 2 {
		out = append(out, v)
	}
	return append(out, max(last, 0))
}
