package filter

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
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
	Seconds      float64            `json:"seconds"`
}

// groupStats are the median and scaled MAD of random candidates' collapse
// per group (patch size; 0 for blends).
type groupStats map[int][2]float64

// z is a pattern's collapse as a robust z against random patterns of its
// group.
func (g groupStats) z(p Pattern, collapse float64) float64 {
	s := g[p.group()]
	if s[1] <= 1e-9 {
		return 0
	}
	return (collapse - s[0]) / s[1]
}

// scanResult is one search over the encoder under a mask.
type scanResult struct {
	Scan
	stats groupStats
	// found are the refined best patterns, best first.
	found []Pattern
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
	h, w := b.sess.H, b.sess.W
	var cands []cand
	for done := 0; done < candidates; done += perRun {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ps := make([]Pattern, min(perRun, candidates-done))
		for i := range ps {
			ps[i] = randomPattern(b.rng, h, w, b.p.Sizes)
		}
		cs, err := col.collapse(ps, res.probe)
		if err != nil {
			return nil, err
		}
		for i := range ps {
			cands = append(cands, cand{ps[i], cs[i]})
		}
		report(done + len(ps))
	}
	byGroup := map[int][]float64{}
	for _, c := range cands {
		byGroup[c.p.group()] = append(byGroup[c.p.group()], c.c)
	}
	stats := groupStats{}
	med := map[string]float64{}
	for g, cs := range byGroup {
		m, sd := stat.Robust(cs)
		stats[g] = [2]float64{m, sd}
		key := fmt.Sprintf("size_%d", g)
		if g == 0 {
			key = "blend"
		}
		med[key] = m
	}
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
	for _, c := range top {
		res.found = append(res.found, c.p)
	}
	res.stats = stats
	res.Scan = Scan{Backdoored: z >= b.p.GapMin, BestZ: z, BestCollapse: best.c, Pattern: best.p, RandomMedian: med,
		Candidates: len(cands), GapMin: b.p.GapMin, Seconds: time.Since(start).Seconds()}
	return res, nil
}

// worst returns, among ps, the pattern that collapses the scan images the
// most under keep, judged by stats, and its z.
func (b *bench) worst(keep map[string][]bool, ps []Pattern, stats groupStats) (Pattern, float64, error) {
	if len(ps) == 0 {
		return Pattern{}, math.Inf(-1), nil
	}
	col, err := b.collapser(keep)
	if err != nil {
		return Pattern{}, 0, err
	}
	cs, err := col.collapse(ps, nil)
	if err != nil {
		return Pattern{}, 0, err
	}
	best, bz := 0, math.Inf(-1)
	for i := range ps {
		if z := stats.z(ps[i], cs[i]); z > bz {
			best, bz = i, z
		}
	}
	return ps[best], bz, nil
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
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%v\x00%v\x00%d\x00", b.in.Model.Source(), b.p.Candidates, b.p.Refine, b.p.Sizes, b.p.GapMin, b.p.Seed)
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
	if state, err := b.src.MarshalBinary(); err == nil {
		scanMemo.Store(key, memoScan{res: res, rng: state})
	}
	return res, nil
}
