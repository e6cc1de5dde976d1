package filter

import (
	"context"
	"math"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
)

// SmoothPicked runs the scan and then the smooth step as though the scan's
// best pattern had been pick (its own when pick has no kind): the
// smooth step's choice between a blur and the mask, on a real encoder and
// real searches. With loose the caps are +Inf (they cut nothing: a trojan
// whose responses stay within clean images' range, as the zoo's do, where
// the test encoders' trojan channels are silent on clean images and any
// cap undoes them). It returns the capped search's best pattern when the
// step handed that search to the mask.
func SmoothPicked(ctx context.Context, p Params, ins *chanfilter.Inputs, pick Pattern, loose bool) (*Smoothing, *Pattern, error) {
	b, sc, err := scanned(ctx, p, ins)
	if err != nil {
		return nil, nil, err
	}
	defer b.close()
	picked := *sc
	if pick.Kind != "" {
		picked.Pattern = pick
	}
	caps, _, err := b.channelCaps(ctx, p.ClampQuantile)
	if err != nil {
		return nil, nil, err
	}
	if loose {
		for _, c := range caps {
			for i := range c {
				c[i] = float32(math.Inf(1))
			}
		}
	}
	rep, capped, err := b.smooth(ctx, &picked, caps, func(string) {})
	if err != nil || capped == nil {
		return rep, nil, err
	}
	return rep, &capped.Pattern, nil
}

// ScoresBothWays scores switching off each probed channel in turn (with
// the first channel of every layer already off) against the scan's best
// pattern, once through the tails and once through the whole network. It
// returns both, as (collapse, change) pairs, and how many probed layers
// had a tail.
func ScoresBothWays(ctx context.Context, p Params, ins *chanfilter.Inputs) (tail, whole [][2]float64, tails int, err error) {
	b, sc, err := scanned(ctx, p, ins)
	if err != nil {
		return nil, nil, 0, err
	}
	defer b.close()
	keep := b.ones()
	var extra []*channel
	for _, l := range b.t.Layers {
		keep[l.Name][0] = false
		for c := 1; c < l.D; c++ {
			extra = append(extra, &channel{l.Name, c})
		}
	}
	extra = append(extra, nil)
	ref, err := b.embed(keep, nil)
	if err != nil {
		return nil, nil, 0, err
	}
	pairs := func() ([][2]float64, error) {
		s, err := b.scoreMasks(keep, extra, sc.Pattern, ref[0])
		out := make([][2]float64, len(s))
		for i, v := range s {
			out[i] = [2]float64{v.collapse, v.change}
		}
		return out, err
	}
	if tail, err = pairs(); err != nil {
		return nil, nil, 0, err
	}
	for _, s := range b.tail.from {
		if s != nil {
			tails++
		}
	}
	b.noTails = true
	b.tail.close()
	b.tail = nil
	whole, err = pairs()
	return tail, whole, tails, err
}

// ShiftOn runs the shift check on the unmasked encoder.
func ShiftOn(ctx context.Context, p Params, ins *chanfilter.Inputs) (*Shifted, error) {
	b, err := newBench(p, ins)
	if err != nil {
		return nil, err
	}
	defer b.close()
	return b.shiftCheck(ctx, nil)
}

// PlantedOverPick runs the scan and the planted check, and judges the
// patches found as the filter does after that check, as though the
// scan's call had been pick (a backdoored call on it): what planted_z and
// planted_blend make of the call on a real encoder.
func PlantedOverPick(ctx context.Context, p Params, ins *chanfilter.Inputs, pick Pattern) (Scan, error) {
	b, sc, err := scanned(ctx, p, ins)
	if err != nil {
		return Scan{}, err
	}
	defer b.close()
	picked := *sc
	c, z, err := b.worstCand(nil, []Pattern{pick}, sc.stats)
	if err != nil {
		return Scan{}, err
	}
	picked.Backdoored, picked.Pattern, picked.BestZ, picked.BestCollapse = true, pick, z, c.c
	_, _, pats, err := b.planted(ctx)
	if err != nil {
		return Scan{}, err
	}
	out, err := b.judgePlanted(&picked, pats)
	if err != nil {
		return Scan{}, err
	}
	return out.Scan, nil
}

// ForceScanCall makes pick the call of the remembered first scan on ins
// under p (its z and collapse judged against the scan's random candidates),
// so that a later Run in this process on the same encoder and images
// starts from that call.
func ForceScanCall(ctx context.Context, p Params, ins *chanfilter.Inputs, pick Pattern) error {
	b, sc, err := scanned(ctx, p, ins)
	if err != nil {
		return err
	}
	defer b.close()
	c, z, err := b.worstCand(nil, []Pattern{pick}, sc.stats)
	if err != nil {
		return err
	}
	// The memo holds sc itself: change it in place.
	sc.Backdoored, sc.Pattern, sc.BestZ, sc.BestCollapse = true, pick, z, c.c
	return nil
}

// EmbedBothSessions embeds the scan images, clean and with pat, through the
// bench's plain session (no run-time masks) and through its masked session
// with every channel on. It says whether the bench picks the plain one for
// views that switch nothing off, and the masked one once a channel is off.
func EmbedBothSessions(p Params, ins *chanfilter.Inputs, pat Pattern) (plain, masked [][]float32, picks bool, err error) {
	b, err := newBench(p, ins)
	if err != nil {
		return nil, nil, false, err
	}
	defer b.close()
	keep := b.ones()
	on := []view{{pat: &pat, keep: keep}, {}}
	off := []view{{pat: &pat, extra: &channel{b.t.Layers[0].Name, 0}}}
	picks = b.plain != nil && b.sessionFor(on) == b.plain && b.sessionFor(off) == b.sess
	if plain, err = b.embed(keep, nil, &pat); err != nil {
		return nil, nil, false, err
	}
	b.plain.Close()
	b.plain = nil
	masked, err = b.embed(keep, nil, &pat)
	return plain, masked, picks, err
}

// FillErrors switches off channels 0 and 1 of every probed layer, fits the
// regression fill plainly and paired with the scan's best pattern, and
// returns each fit's mean squared error against the clean image's
// switched-off channels: on the fit images clean ([0]) and carrying the
// pattern ([1]).
func FillErrors(ctx context.Context, p Params, ins *chanfilter.Inputs) (plain, paired [2]float64, err error) {
	b, sc, err := scanned(ctx, p, ins)
	if err != nil {
		return plain, paired, err
	}
	defer b.close()
	keep, score := b.ones(), map[string][]float32{}
	for _, l := range b.t.Layers {
		keep[l.Name][0], keep[l.Name][1] = false, false
		score[l.Name] = make([]float32, l.D)
	}
	pats := []Pattern{sc.Pattern}
	errs := func(w, icpt map[string][]float32) ([2]float64, error) {
		var out [2]float64
		var rows [2]float64
		var names []string
		for name := range w {
			names = append(names, name)
		}
		enc, err := b.rawSession(names)
		if err != nil {
			return out, err
		}
		defer enc.Close()
		xs, n, err := b.pairedInputs(enc, pats)
		if err != nil {
			return out, err
		}
		err = positions(ctx, enc, xs, n, func(li int, vs [][]float32) {
			l := enc.Layers[li]
			c, wl, bl := l.Channels, w[l.Name], icpt[l.Name]
			for k, u := range vs {
				for _, j := range []int{0, 1} {
					pred := float64(bl[j])
					for i, ui := range u {
						pred += float64(wl[j*c+i]) * float64(ui)
					}
					d := pred - float64(vs[0][j])
					out[k] += d * d
					rows[k]++
				}
			}
		})
		for k := range out {
			out[k] /= max(rows[k], 1)
		}
		return out, err
	}
	w, icpt, err := b.regressionFill(ctx, keep, score, nil)
	if err != nil {
		return plain, paired, err
	}
	if plain, err = errs(w, icpt); err != nil {
		return plain, paired, err
	}
	w, icpt, err = b.regressionFill(ctx, keep, score, pats)
	if err != nil {
		return plain, paired, err
	}
	paired, err = errs(w, icpt)
	return plain, paired, err
}

// scanned opens a bench on ins under p and runs its first scan; the
// caller closes the bench (it is closed already when err is set).
func scanned(ctx context.Context, p Params, ins *chanfilter.Inputs) (*bench, *scanResult, error) {
	b, err := newBench(p, ins)
	if err != nil {
		return nil, nil, err
	}
	sc, err := b.firstScan(ctx, nil)
	if err != nil {
		b.close()
		return nil, nil, err
	}
	return b, sc, nil
}
