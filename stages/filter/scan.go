package filter

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Scan is the encoder scan's result, as reported.
type Scan struct {
	Backdoored   bool               `json:"backdoored"`
	BestZ        float64            `json:"best_z"`
	BestCollapse float64            `json:"best_collapse"`
	Pattern      Pattern            `json:"pattern"`
	RandomMedian map[string]float64 `json:"random_median_collapse"`
	Candidates   int                `json:"candidates"`
	GapMin       float64            `json:"gap_min"`
	CollapseMin  float64            `json:"collapse_min"`
	Seconds      float64            `json:"seconds"`
	// Anchors counts the anchored patches judged because the random
	// candidates made no call (anchors "fallback"), AnchorZ the best
	// one's same-size z, AnchorCollapse its collapse (it must reach
	// collapse_min too) and AnchorBar the z it had to reach (anchor_z);
	// FromAnchor is set when that one made the call.
	Anchors        int     `json:"anchors_judged,omitempty"`
	AnchorZ        float64 `json:"anchor_best_z,omitempty"`
	AnchorCollapse float64 `json:"anchor_collapse,omitempty"`
	AnchorBar      float64 `json:"anchor_z,omitempty"`
	FromAnchor     bool    `json:"from_anchor,omitempty"`
	// PlantedZ is the best same-size z of the patches found pasted into
	// the data, judged on the encoder when the random candidates made no
	// call (planted_z) or called a noise blend (planted_blend);
	// FromPlanted is set when that one made the call.
	PlantedZ    float64 `json:"planted_best_z,omitempty"`
	FromPlanted bool    `json:"from_planted,omitempty"`
	// CallCollapse is the scan's own call's collapse when planted_patch
	// judged a pasted patch against it, PlantedCollapse that patch's
	// when it did not take the call.
	CallCollapse    float64 `json:"call_collapse,omitempty"`
	PlantedCollapse float64 `json:"planted_collapse,omitempty"`
	// UndoneByData is set when a patch pasted into the data collapses the
	// encoder's inputs as a trigger does (planted_mask "skip"): the data
	// stages undo it, so the call is not masked against and Backdoored is
	// false.
	UndoneByData bool `json:"undone_by_data,omitempty"`
	// Looked counts the patterns the look step judged (looks), LookZ the
	// same-size z it climbed to; FromLook is set when its patch replaced
	// the call's, LookFrom names the one it replaced.
	Looked   int     `json:"looks_judged,omitempty"`
	LookZ    float64 `json:"look_z,omitempty"`
	FromLook bool    `json:"from_look,omitempty"`
	LookFrom string  `json:"look_from,omitempty"`
	// Placed counts the places the place step screened the called patch
	// at (call_place), PlaceZ the best judged one's same-size z; FromPlace
	// is set when that place became the call, PlaceFrom names the one it
	// moved.
	Placed    int     `json:"places_screened,omitempty"`
	PlaceZ    float64 `json:"place_z,omitempty"`
	FromPlace bool    `json:"from_place,omitempty"`
	PlaceFrom string  `json:"place_from,omitempty"`
}

// groupStats judge a pattern's collapse against random candidates.
type groupStats struct {
	// groups are the median and scaled MAD of the random candidates'
	// collapse per group (patch size; 0 for noise blends).
	groups map[int][2]float64
	// control is how much a smooth blend collapses, by its alpha (nil
	// without controls); ratio and gap turn a noise blend's collapse over
	// it into a z (see z).
	control    *powerFit
	ratio, gap float64
}

// z is a pattern's collapse as a robust z against random patterns of its
// group. A noise blend is judged against a smooth blend of the same alpha
// instead: a trojan that answers to noise texture collapses every noise
// blend, so that no blend stands out among blends, while a clean encoder's
// noise blends collapse a steady 1.5-2.5 times as much as smooth ones
// (docs/DECISIONS.md). Collapsing blend_ratio times as much gives z =
// gap_min; as much gives 0.
func (g groupStats) z(p Pattern, collapse float64) float64 {
	if p.Kind == "blend" && g.control != nil && g.ratio > 1 {
		r, ok := g.smoothRatio(p, collapse)
		if !ok {
			return 0
		}
		return g.gap * (r - 1) / (g.ratio - 1)
	}
	s := g.groups[p.group()]
	if s[1] <= 1e-9 {
		return 0
	}
	return (collapse - s[0]) / s[1]
}

// blendRatio is how many times as much as a smooth blend of its alpha the
// blend p collapses the scan images (collapse), from the controls' fit;
// for a patch, or without a fit, the z's equivalent: 1 at the group's
// median, blend_ratio at gap_min.
func (g groupStats) blendRatio(p Pattern, collapse float64) float64 {
	if r, ok := g.smoothRatio(p, collapse); ok {
		return r
	}
	if g.gap <= 0 {
		return 1
	}
	return 1 + g.z(p, collapse)*(g.ratio-1)/g.gap
}

// smoothRatio is collapse over the smooth blends' fitted collapse at the
// blend p's alpha; false for a patch, without a fit, or where the fit is
// about 0.
func (g groupStats) smoothRatio(p Pattern, collapse float64) (float64, bool) {
	if p.Kind != "blend" || g.control == nil {
		return 0, false
	}
	ref := g.control.at(float64(p.Alpha))
	if ref <= 1e-9 {
		return 0, false
	}
	return collapse / ref, true
}

// powerFit is y = exp(a) x^b, fitted by least squares on logs.
type powerFit struct{ a, b float64 }

func (f *powerFit) at(x float64) float64 { return math.Exp(f.a + f.b*math.Log(x)) }

// fitPower fits y = exp(a) x^b to the points with x, y > 0; nil with fewer
// than two distinct x.
func fitPower(xs, ys []float64) *powerFit {
	var n, sx, sy, sxx, sxy float64
	for i := range xs {
		if xs[i] <= 0 || ys[i] <= 0 {
			continue
		}
		lx, ly := math.Log(xs[i]), math.Log(ys[i])
		n++
		sx, sy, sxx, sxy = sx+lx, sy+ly, sxx+lx*lx, sxy+lx*ly
	}
	den := n*sxx - sx*sx
	if n < 2 || den <= 1e-12 {
		return nil
	}
	b := (n*sxy - sx*sy) / den
	return &powerFit{a: (sy - b*sx) / n, b: b}
}

// scanResult is one search over the encoder under a mask.
type scanResult struct {
	Scan
	stats groupStats
	// bestPatch is the best candidate that is not a noise blend (before
	// refinement), bestPatchZ its z.
	bestPatch  Pattern
	bestPatchZ float64
	bestPatchC float64
	// top are the refined best candidates, best first.
	top []cand
	// probe is, per probed layer and channel, the largest change (TAC's
	// raw score) any random candidate caused; set when asked for.
	probe [][]float64
}

// collapser scores patterns by how much they collapse the scan images'
// embeddings under one mask.
type collapser struct {
	b     *bench
	keep  map[string][]bool
	base  float64     // trace of the covariance of the clean embeddings
	clean [][]float64 // the clean scan images' probed layers, summed
}

func (b *bench) collapser(keep map[string][]bool) (*collapser, error) {
	c := &collapser{b: b, keep: keep}
	err := b.run([]view{{keep: keep}}, func(_ int, emb []float32, layers [][]float32) {
		c.base = stat.TraceCov(emb, b.n, b.sess.Dim)
		c.clean = b.layerSums(layers)
	})
	return c, err
}

// collapse returns each pattern's collapse; with probe set, it raises each
// channel's entry to the largest change a pattern caused.
func (c *collapser) collapse(ps []Pattern, probe [][]float64) ([]float64, error) {
	views := make([]view, len(ps))
	for i := range ps {
		views[i] = view{pat: &ps[i], keep: c.keep}
	}
	out := make([]float64, len(ps))
	err := c.b.run(views, func(k int, emb []float32, layers [][]float32) {
		out[k] = collapseOf(stat.TraceCov(emb, c.b.n, c.b.sess.Dim), c.base)
		if probe != nil {
			for li, ch := range c.b.layerChange(c.clean, c.b.layerSums(layers)) {
				for j, v := range ch {
					probe[li][j] = math.Max(probe[li][j], v)
				}
			}
		}
	})
	return out, err
}

type cand struct {
	p Pattern
	c float64
}

// scan searches the encoder under keep (nil: unmasked) for a pattern that
// collapses the scan images' embeddings: candidates random patterns (which
// also give the same-size statistics), then refine steps of local
// refinement around the best 10 and the seeds (patterns found before).
// With probe set it also keeps each channel's largest change under the
// random candidates.
func (b *bench) scan(ctx context.Context, keep map[string][]bool, candidates, refine int, seeds []Pattern, probe bool, progress plugin.Progress) (*scanResult, error) {
	start := time.Now()
	col, err := b.collapser(keep)
	if err != nil {
		return nil, err
	}
	res := &scanResult{}
	if probe {
		res.probe = make([][]float64, len(b.t.Layers))
		for li, l := range b.t.Layers {
			res.probe[li] = make([]float64, l.D)
		}
	}
	report := func(done int) {
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(done), Total: int64(candidates + refine), Unit: "patterns"})
		}
	}
	const perRun = 4
	h, w := b.canvas.H, b.canvas.W
	// The blends' controls come from their own random stream, so that the
	// candidates stay what they were.
	ctl := rand.New(rand.NewPCG(b.p.Seed, controlStream+uint64(candidates)))
	controls := max(16, candidates/10)
	var cands, ctls []cand
	for done := 0; done < candidates+controls; done += perRun {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ps := make([]Pattern, min(perRun, candidates+controls-done))
		for i := range ps {
			if done+i < candidates {
				ps[i] = randomPattern(b.rng, h, w, b.p.Sizes)
			} else {
				ps[i] = controlPattern(ctl)
			}
		}
		cs, err := col.collapse(ps, res.probe)
		if err != nil {
			return nil, err
		}
		for i := range ps {
			if done+i < candidates {
				cands = append(cands, cand{ps[i], cs[i]})
			} else {
				ctls = append(ctls, cand{ps[i], cs[i]})
			}
		}
		report(min(candidates, done+len(ps)))
	}
	stats, med := b.groupStatsOf(cands, ctls)
	if len(seeds) > 0 {
		cs, err := col.collapse(seeds, nil)
		if err != nil {
			return nil, err
		}
		for i := range seeds {
			cands = append(cands, cand{seeds[i], cs[i]})
		}
	}
	sort.SliceStable(cands, func(a, c int) bool {
		return stats.z(cands[a].p, cands[a].c) > stats.z(cands[c].p, cands[c].c)
	})
	for _, c := range cands {
		if c.p.Kind != "blend" {
			res.bestPatch, res.bestPatchZ, res.bestPatchC = c.p, stats.z(c.p, c.c), c.c
			break
		}
	}
	top := append([]cand(nil), cands[:min(10, len(cands))]...)
	for step := 0; step < refine; step += perRun {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ps []Pattern
		var parents []int
		for i := 0; i < perRun && step+i < refine; i++ {
			k := (step + i) % len(top)
			ps = append(ps, jitter(b.rng, top[k].p, h, w, b.p.Sizes))
			parents = append(parents, k)
		}
		cs, err := col.collapse(ps, nil)
		if err != nil {
			return nil, err
		}
		for i, k := range parents {
			if stats.z(ps[i], cs[i]) > stats.z(top[k].p, top[k].c) {
				top[k] = cand{ps[i], cs[i]}
			}
		}
		report(candidates + step + len(ps))
	}
	sort.SliceStable(top, func(a, c int) bool {
		return stats.z(top[a].p, top[a].c) > stats.z(top[c].p, top[c].c)
	})
	best := top[0]
	z := stats.z(best.p, best.c)
	res.stats, res.top = stats, top
	res.Scan = Scan{Backdoored: z >= b.p.GapMin && best.c >= b.p.CollapseMin, BestZ: z, BestCollapse: best.c, Pattern: best.p, RandomMedian: med,
		Candidates: len(cands), GapMin: b.p.GapMin, CollapseMin: b.p.CollapseMin, Seconds: time.Since(start).Seconds()}
	return res, nil
}

// found are the refined best patterns, best first (top's patterns).
func (r *scanResult) found() []Pattern {
	ps := make([]Pattern, len(r.top))
	for i, c := range r.top {
		ps[i] = c.p
	}
	return ps
}

// patchesOnly is the search's result with its best pattern the best one
// that is not a noise blend: the refined one when one made the top ten,
// else the best such candidate.
func (r *scanResult) patchesOnly() *scanResult {
	if r.Pattern.Kind != "blend" {
		return r
	}
	out := *r
	for _, c := range r.top {
		if c.p.Kind != "blend" {
			out.Pattern, out.BestZ, out.BestCollapse = c.p, r.stats.z(c.p, c.c), c.c
			return &out
		}
	}
	out.Pattern, out.BestZ, out.BestCollapse = r.bestPatch, r.bestPatchZ, r.bestPatchC
	return &out
}

// controlStream is the random stream of the blends' controls.
const controlStream = 0x736d6f6f7468

// groupStatsOf are the statistics of the random candidates and the smooth
// controls, and their medians by name (size_N, blend, smooth).
func (b *bench) groupStatsOf(cands, controls []cand) (groupStats, map[string]float64) {
	byGroup := map[int][]float64{}
	for _, c := range append(cands, controls...) {
		byGroup[c.p.group()] = append(byGroup[c.p.group()], c.c)
	}
	stats := groupStats{groups: map[int][2]float64{}, ratio: b.p.BlendRatio, gap: b.p.GapMin}
	med := map[string]float64{}
	for g, cs := range byGroup {
		m, sd := stat.Robust(cs)
		stats.groups[g] = [2]float64{m, sd}
		key := fmt.Sprintf("size_%d", g)
		switch g {
		case 0:
			key = "blend"
		case controlGroup:
			key = "smooth"
		}
		med[key] = m
	}
	var alphas, cs []float64
	for _, c := range controls {
		alphas, cs = append(alphas, float64(c.p.Alpha)), append(cs, c.c)
	}
	stats.control = fitPower(alphas, cs)
	return stats, med
}

// worst returns, among ps, the pattern that collapses the scan images the
// most under keep, judged by stats, and its z.
func (b *bench) worst(keep map[string][]bool, ps []Pattern, stats groupStats) (Pattern, float64, error) {
	c, z, err := b.worstCand(keep, ps, stats)
	return c.p, z, err
}

// worstCand is worst with the pattern's collapse (-Inf z when ps is
// empty).
func (b *bench) worstCand(keep map[string][]bool, ps []Pattern, stats groupStats) (cand, float64, error) {
	if len(ps) == 0 {
		return cand{}, math.Inf(-1), nil
	}
	col, err := b.collapser(keep)
	if err != nil {
		return cand{}, 0, err
	}
	cs, err := col.collapse(ps, nil)
	if err != nil {
		return cand{}, 0, err
	}
	best, bz := 0, math.Inf(-1)
	for i := range ps {
		if z := stats.z(ps[i], cs[i]); z > bz {
			best, bz = i, z
		}
	}
	return cand{ps[best], cs[best]}, bz, nil
}

// scanMemo remembers first scans within a process (a scan is
// deterministic in the encoder, the scan images and the scan parameters):
// tools that run the filter many times on one encoder (replay, tests) scan
// once. A plugin process runs once and never hits it.
var scanMemo sync.Map // key -> memoScan

type memoScan struct {
	res *scanResult
	rng []byte // the random source's state after the scan
}

// firstScan is scan on the unmasked encoder with the probe signal,
// memoised.
func (b *bench) firstScan(ctx context.Context, progress plugin.Progress) (*scanResult, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%v\x00%v\x00%v\x00%v\x00%d\x00%s\x00%v\x00", b.in.Model.Source(), b.p.Candidates, b.p.Refine, b.p.Sizes, b.p.GapMin, b.p.CollapseMin, b.p.BlendRatio, b.p.Seed, b.p.Anchors, b.p.anchorZ())
	if st, err := os.Stat(b.in.Model.Source()); err == nil {
		fmt.Fprintf(h, "%d\x00%d\x00", st.Size(), st.ModTime().UnixNano())
	}
	binary.Write(h, binary.LittleEndian, b.x)
	key := string(h.Sum(nil))
	if m, ok := scanMemo.Load(key); ok {
		memo := m.(memoScan)
		if err := b.src.UnmarshalBinary(memo.rng); err == nil {
			return memo.res, nil
		}
	}
	res, err := b.scan(ctx, nil, b.p.Candidates, b.p.Refine, nil, true, progress)
	if err != nil {
		return nil, err
	}
	if !res.Backdoored && b.p.Anchors == "fallback" {
		if err := b.anchorCheck(res); err != nil {
			return nil, err
		}
	}
	if state, err := b.src.MarshalBinary(); err == nil {
		scanMemo.Store(key, memoScan{res: res, rng: state})
	}
	return res, nil
}

// judgePlanted returns the scan result sc as the patches found pasted
// into the data (ps) leave it: they may make the call where the random
// candidates made none (planted_z), replace a noise blend's call
// (planted_blend), or replace a patch call when they collapse the scan
// images more (planted_patch). sc itself is unchanged.
func (b *bench) judgePlanted(sc *scanResult, ps []Pattern) (*scanResult, error) {
	switch {
	case len(ps) == 0:
	case !sc.Backdoored && b.p.PlantedZ > 0:
		return b.plantedCall(sc, ps, b.p.PlantedZ)
	case sc.Backdoored && sc.Pattern.Kind == "blend" && b.p.PlantedBlend == "patch":
		return b.plantedCall(sc, ps, b.p.GapMin)
	case sc.Backdoored && isPatch(sc.Pattern) && (b.p.PlantedPatch == "collapse" || b.p.PlantedPatch == "gated"):
		// A few fixed patches, not a search: anchor_z is their bar.
		out, err := b.plantedCall(sc, ps, b.p.anchorZ())
		if err != nil || !out.FromPlanted {
			return out, err
		}
		out.CallCollapse = sc.BestCollapse
		// It must take at least half of the spread the call leaves away:
		// a call that is already a part of the trigger (a 3x3 inside its
		// 5x5) leaves little, and masking against the whole trigger then
		// spends channels for nothing.
		if out.BestCollapse-sc.BestCollapse > 0.5*(1-sc.BestCollapse) {
			return out, nil
		}
		kept := *sc
		kept.PlantedZ, kept.CallCollapse, kept.PlantedCollapse = out.PlantedZ, sc.BestCollapse, out.BestCollapse
		return &kept, nil
	}
	return sc, nil
}

// plantedUndoes judges the patches found pasted into the data (ps) on the
// unmasked encoder against the random candidates' statistics of sc
// (planted_mask "skip"). When the best of them reaches anchor_z (a few
// fixed patches, not a search) and collapse_min, the encoder answers to the
// data's trigger (T3): its carriers are suspects and the augment rows carry
// it with other labels, which undoes it in the head, so it returns a copy
// of sc that calls nothing, marked UndoneByData. sc itself (the scan's
// memo) is unchanged.
func (b *bench) plantedUndoes(sc *scanResult, ps []Pattern) (*scanResult, error) {
	if len(ps) == 0 {
		return sc, nil
	}
	c, z, err := b.worstCand(nil, ps, sc.stats)
	if err != nil {
		return nil, err
	}
	out := *sc
	out.PlantedZ, out.PlantedCollapse = z, c.c
	if z >= b.p.anchorZ() && c.c >= b.p.CollapseMin {
		out.Backdoored, out.FromPlanted, out.UndoneByData = false, false, true
	}
	return &out, nil
}

// plantedCall judges the patches found pasted into the data (ps) on the
// unmasked encoder against the random candidates' statistics of res, and
// returns a copy of res whose call the best of them makes when its
// same-size z reaches bar and its collapse collapse_min; res itself (the
// scan's memo) is unchanged. A patch pasted into the data that also
// collapses the encoder's inputs is the encoder's trigger too (T3): it
// makes the call where the random candidates made none (planted_z), and
// it replaces a noise blend's call (planted_blend), whose blur would
// leave the patch.
func (b *bench) plantedCall(res *scanResult, ps []Pattern, bar float64) (*scanResult, error) {
	c, z, err := b.worstCand(nil, ps, res.stats)
	if err != nil || len(ps) == 0 {
		return res, err
	}
	out := *res
	out.PlantedZ = z
	if z < bar || c.c < b.p.CollapseMin {
		return &out, nil
	}
	out.Backdoored, out.FromPlanted = true, true
	out.takeCall(c, z)
	return &out, nil
}

// anchorCheck judges the anchored patches on the unmasked encoder against
// the random candidates' statistics of res, and makes the best of them
// res's call when it reaches anchor_z and collapse_min (it then heads the
// found patterns the searches on the masked encoder start from). It
// draws nothing from the random source: a scan that made its call is
// never changed by it.
func (b *bench) anchorCheck(res *scanResult) error {
	ps := anchored(b.canvas.H, b.canvas.W, b.p.Sizes, true)
	c, z, err := b.worstCand(nil, ps, res.stats)
	if err != nil || len(ps) == 0 {
		return err
	}
	res.Anchors, res.AnchorZ, res.AnchorCollapse, res.AnchorBar = len(ps), z, c.c, b.p.anchorZ()
	if z < b.p.anchorZ() || c.c < b.p.CollapseMin {
		return nil
	}
	res.Backdoored, res.FromAnchor = true, true
	res.takeCall(c, z)
	return nil
}

// lookCall returns a copy of res whose call is the found patch put into
// the usual looks of a patch trigger and climbed towards the trigger
// (climb), judged on the unmasked encoder against res's random
// statistics. A random scan that calls a patch trojan often calls a patch
// near its trigger in another look (a noise patch beside a
// checkerboard), and the channels masked against that one can leave the
// trigger working. res itself (the scan's memo) is unchanged; the copy
// keeps res's call when it calls no patch or the climb never moves. It
// draws nothing from the random source.
func (b *bench) lookCall(res *scanResult, steps int) (*scanResult, error) {
	if steps == 0 || !res.Backdoored || !isPatch(res.Pattern) {
		return res, nil
	}
	judge := func(ps []Pattern) (cand, float64, error) { return b.worstCand(nil, ps, res.stats) }
	cur, z, judged, err := climb(cand{res.Pattern, res.BestCollapse}, res.BestZ, steps, b.canvas.H, b.canvas.W, b.p.Sizes, judge)
	if err != nil {
		return nil, err
	}
	out := *res
	out.Looked, out.LookZ = judged, z
	if patchKey(cur.p) == patchKey(res.Pattern) {
		return &out, nil
	}
	out.FromLook, out.LookFrom = true, res.Pattern.String()
	out.takeCall(cur, z)
	return &out, nil
}

// climb starts from the patch from (of same-size z fromZ) and, for at
// most steps steps, judges the looks of looksAt at the current patch's
// place and size, the current patch's neighbours and the current patch
// moved by two pixels (a checkerboard's phase kept), moving to the best
// of them while it beats the current one's z. judge returns the best of
// its patterns and that one's z. It returns where it stopped, that
// patch's z and how many patterns it judged; no pattern is judged twice.
func climb(from cand, fromZ float64, steps, h, w int, sizes [2]int, judge func([]Pattern) (cand, float64, error)) (cand, float64, int, error) {
	cur, curZ := from, fromZ
	tried := map[string]bool{patchKey(cur.p): true}
	judged := 0
	for step := 0; step < steps; step++ {
		var ps []Pattern
		next := append(looksAt(cur.p.Size, cur.p.Row, cur.p.Col), neighbours(cur.p, h, w, sizes)...)
		for _, d := range [][2]int{{-2, 0}, {2, 0}, {0, -2}, {0, 2}} {
			// A move by two keeps a checkerboard's phase.
			q := cur.p
			q.Row, q.Col = clamp(q.Row+d[0], 0, h-q.Size), clamp(q.Col+d[1], 0, w-q.Size)
			next = append(next, q)
		}
		for _, q := range next {
			if k := patchKey(q); !tried[k] {
				tried[k] = true
				ps = append(ps, q)
			}
		}
		if len(ps) == 0 {
			break
		}
		c, z, err := judge(ps)
		if err != nil {
			return cand{}, 0, 0, err
		}
		judged += len(ps)
		if z <= curZ {
			break
		}
		cur, curZ = c, z
	}
	return cur, curZ, judged, nil
}

// patchKey names what one of the scan's own patches (solid, checker,
// noise: isPatch) paints: two such patches with the same key paint the same
// pixels. It does not tell pasted patches apart (their pixels are not in
// it), and the climb and the look step only ever key the scan's own.
func patchKey(p Pattern) string { return fmt.Sprintf("%s %v %d", p, p.Colors, p.NoiseSeed) }

// takeCall makes c, of same-size z z, r's call: its best pattern, its best
// patch and the first of the patterns it found (the searches on the masked
// encoder start from them). The caller sets why (FromPlanted, ...).
func (r *scanResult) takeCall(c cand, z float64) {
	r.BestZ, r.BestCollapse, r.Pattern = z, c.c, c.p
	r.bestPatch, r.bestPatchZ, r.bestPatchC = c.p, z, c.c
	r.top = append([]cand{c}, r.top[:min(len(r.top), 9)]...)
}

// isPatch says whether p is one of the scan's own patches (solid,
// checker or noise), not a blend or a patch found in the data.
func isPatch(p Pattern) bool {
	return p.Kind == "solid" || p.Kind == "checker" || p.Kind == "noise"
}
