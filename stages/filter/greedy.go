package filter

import (
	"context"
	"fmt"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// rescoreBatch is how many channels the greedy choice re-scores at each
// step: the best of their last scores.
const rescoreBatch = 8

// switchable is the encoder opened with run-time masks on every probed
// layer (fill: the channels' trusted means), so that one session scores
// any number of masks.
type switchable struct {
	f    *filterRun
	enc  *encoder.Encoder
	fill map[string][]float32
}

func (f *filterRun) openSwitchable(fill map[string][]float32) (*switchable, error) {
	var mi []encoder.Mask
	for _, l := range f.t.Layers {
		mi = append(mi, encoder.Mask{Layer: l.Name, Fill: fill[l.Name]})
	}
	enc, err := encoder.Open(f.p.Encoder, encoder.Config{Layers: []string{}, MaskInputs: mi, ORT: ort.Options{Device: f.p.Device}})
	if err != nil {
		return nil, err
	}
	return &switchable{f: f, enc: enc, fill: fill}, nil
}

func (s *switchable) Close() { s.enc.Close() }

// maskScore is what masking one more channel does: the found pattern's
// collapse, and how far the clean scan images' embeddings move from ref
// (squared distance over ref's total variance; 0 without ref).
type maskScore struct{ collapse, change float64 }

// collapses returns, for each extra channel (nil: none), the collapse of
// pat on the scan images under keep with that channel also switched off.
func (s *switchable) collapses(keep map[string][]bool, extra []*channel, pat Pattern) ([]float64, error) {
	sc, err := s.scores(keep, extra, pat, nil)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(sc))
	for i, v := range sc {
		out[i] = v.collapse
	}
	return out, nil
}

// clean returns the clean scan images' embeddings under keep.
func (s *switchable) clean(keep map[string][]bool) ([]float32, error) {
	var emb []float32
	err := s.run(keep, []*channel{nil}, Pattern{}, func(_ int, clean, _ []float32) {
		emb = append([]float32(nil), clean...)
	})
	return emb, err
}

// scores is collapses with the change from ref (the clean scan images'
// embeddings under the current mask; nil: no change).
func (s *switchable) scores(keep map[string][]bool, extra []*channel, pat Pattern, ref []float32) ([]maskScore, error) {
	d, imgs := s.enc.Dim, s.f.n
	var refVar float64
	if ref != nil {
		refVar = traceCov(ref, imgs, d) * float64(imgs)
	}
	out := make([]maskScore, len(extra))
	err := s.run(keep, extra, pat, func(k int, clean, with []float32) {
		out[k].collapse = collapseOf(traceCov(with, imgs, d), traceCov(clean, imgs, d))
		if ref != nil && refVar > 0 {
			var ss float64
			for i, v := range clean {
				e := float64(v - ref[i])
				ss += e * e
			}
			out[k].change = ss / refVar
		}
	})
	return out, err
}

// run embeds the scan images, clean and with pat, under keep with each
// extra channel also switched off, and hands each one's embeddings to
// use, in order.
func (s *switchable) run(keep map[string][]bool, extra []*channel, pat Pattern, use func(k int, clean, with []float32)) error {
	f, imgs := s.f, s.f.n
	size := s.enc.ImageSize()
	xc := f.x
	xp := make([]float32, len(xc))
	copy(xp, xc)
	for i := 0; i < imgs; i++ {
		pat.Apply(xp[i*size:(i+1)*size], s.enc.H, s.enc.W)
	}
	d := s.enc.Dim
	for lo := 0; lo < len(extra); lo += rescoreBatch {
		hi := min(len(extra), lo+rescoreBatch)
		n := 2 * imgs * (hi - lo)
		x, err := s.enc.Batch(n)
		if err != nil {
			return err
		}
		ms, err := s.enc.Masks(n)
		if err != nil {
			return err
		}
		for k := lo; k < hi; k++ {
			at := 2 * imgs * (k - lo)
			copy(x[at*size:], xc)
			copy(x[(at+imgs)*size:], xp)
			for li, l := range f.t.Layers {
				kp := keep[l.Name]
				m := ms[li]
				for i := at; i < at+2*imgs; i++ {
					row := m[i*l.D : (i+1)*l.D]
					for c, v := range kp {
						row[c] = b2f(v)
					}
					if e := extra[k]; e != nil && e.layer == l.Name {
						row[e.c] = 0
					}
				}
			}
		}
		emb, _, err := s.enc.Embed(n)
		if err != nil {
			return err
		}
		for k := lo; k < hi; k++ {
			at := 2 * imgs * (k - lo) * d
			use(k, emb[at:at+imgs*d], emb[at+imgs*d:at+2*imgs*d])
		}
	}
	return nil
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// changeFloor keeps the collapse_per_change choice from dividing by
// nothing: a channel whose masking moves the clean embeddings by less
// than this share of their variance counts as moving them by this much.
const changeFloor = 1e-3

// greedyCollapse masks, one at a time, the channel of pool whose masking
// lowers pat's collapse the most (choice collapse), or the most per change
// of the clean scan images' embeddings (choice collapse_per_change), until
// pat is back at stop_z, limit channels are masked, or no channel lowers
// it (ALGORITHM.md stage 3's "smallest set that brings it to the
// random-pattern level"). After a first pass over the pool it is lazy
// (a channel's gain rarely grows as others are masked): each step scores
// again only the channels whose last scores lead. It returns the z of pat
// after masking.
func (f *filterRun) greedyCollapse(ctx context.Context, sw *switchable, keep map[string][]bool, pool []channel, pat Pattern, stats groupStats, limit int, masked *[]string, r *Round) (float64, error) {
	cur, err := sw.collapses(keep, []*channel{nil}, pat)
	if err != nil {
		return 0, err
	}
	curC := cur[0]
	curZ := stats.z(pat, curC)
	f.lastCollapse, f.lastZ = curC, curZ
	if len(*masked) >= limit || curZ <= f.p.StopZ || len(pool) == 0 {
		return curZ, nil
	}
	perChange := f.p.Choice == "collapse_per_change"
	gain := make([]float64, len(pool))
	after := make([]float64, len(pool))
	step := 0 // channels masked by this call
	// rescore scores the channels idx under the current keep (the clean
	// embeddings the change is measured from: once per step).
	var ref []float32
	refAt := -1
	rescore := func(idx []int) error {
		if perChange && refAt != step {
			var err error
			if ref, err = sw.clean(keep); err != nil {
				return err
			}
			refAt = step
		}
		ptrs := make([]*channel, len(idx))
		for k, i := range idx {
			ptrs[k] = &pool[i]
		}
		sc, err := sw.scores(keep, ptrs, pat, ref)
		if err != nil {
			return err
		}
		r.Scored += len(idx)
		for k, i := range idx {
			after[i] = sc[k].collapse
			gain[i] = curC - sc[k].collapse
			if perChange && gain[i] > 0 {
				gain[i] /= max(sc[k].change, changeFloor)
			}
		}
		return nil
	}
	all := make([]int, len(pool))
	for i := range all {
		all[i] = i
	}
	// First pass: every channel of the pool. (Ranking on half the scan
	// images instead took T3 from 22 channels to 44 and ASR 4.4% to 6.5%.)
	if err := rescore(all); err != nil {
		return 0, err
	}
	// Lazy greedy (CELF): a channel scored under the current mask (stamp
	// == step) that beats every other channel's last score is taken;
	// otherwise the rescoreBatch best stale ones are scored again.
	stamp := make([]int, len(pool))
	taken := make([]bool, len(pool))
	for len(*masked) < limit && curZ > f.p.StopZ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		var stale []int
		best := -1
		for i := range pool {
			if taken[i] {
				continue
			}
			if best < 0 || gain[i] > gain[best] {
				best = i
			}
			if stamp[i] != step {
				stale = append(stale, i)
			}
		}
		if best < 0 {
			break
		}
		if stamp[best] != step {
			sort.SliceStable(stale, func(a, b int) bool { return gain[stale[a]] > gain[stale[b]] })
			stale = stale[:min(len(stale), rescoreBatch)]
			if err := rescore(stale); err != nil {
				return 0, err
			}
			for _, i := range stale {
				stamp[i] = step
			}
			continue
		}
		if gain[best] <= 0 {
			break
		}
		c := pool[best]
		taken[best] = true
		keep[c.layer][c.c] = false
		name := fmt.Sprintf("%s:%d", c.layer, c.c)
		*masked = append(*masked, name)
		r.Masked = append(r.Masked, name)
		curC = after[best]
		curZ = stats.z(pat, curC)
		step++
	}
	f.lastCollapse, f.lastZ = curC, curZ
	return curZ, nil
}

// pool returns the channels still kept that the greedy collapse choice
// considers: the pool_size most suspicious (all when pool_size is 0),
// most suspicious first.
func (f *filterRun) pool(z map[string][]float32, keep map[string][]bool) []channel {
	var out []channel
	for _, l := range f.t.Layers {
		for c, v := range z[l.Name] {
			if keep[l.Name][c] {
				out = append(out, channel{l.Name, c, v})
			}
		}
	}
	sortChannels(out)
	if f.p.PoolSize > 0 && len(out) > f.p.PoolSize {
		out = out[:f.p.PoolSize]
	}
	return out
}
