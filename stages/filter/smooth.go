package filter

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// Smoothing is the smooth step's result. A trojan that answers to a noise
// blend sits in fine texture spread over the whole image; masking a few
// channels leaves much of it (docs/DECISIONS.md), while a slight blur of
// the input takes the texture away and keeps the image's content. When
// the scan's best pattern is a noise blend, the filter tries Gaussian
// blurs from sigma 0.6 data pixels up, and the filtered encoder is the
// first one under which the found blend collapses the scan images at most
// smooth_ratio (1.3) times as much as a smooth blend of its alpha. The
// mask's own stop rule (a ratio of 1) asked on the tuning half for more
// blur than the attacks needed (docs/DECISIONS.md).
// No channel is then masked. The largest z of the
// other blends (those the scan found, and smoothBlends fresh ones) is
// reported beside it: requiring it under stop_z too was tried on the
// tuning half and asks for a blur past smooth_max (docs/DECISIONS.md).
// Patches are not judged under a blur: it smears every patch alike, and
// the few left unsmeared stand out among them without being triggers. A
// blur is not tried at all when the encoder answers to a patch, which a
// blur leaves: when a search of the encoder with its channels capped
// (clamp.go: the outsized responses a noise blend drives into many
// channels are cut there) finds a patch at the rescan gap. A noise-blend
// trojan is found again as a blend under the caps; a patch trojan whose
// texture a noise blend partly excites shows its patch there
// (docs/DECISIONS.md). That search is the mask's first round then. The
// scan's own best patch candidate is reported, not judged: a noise-blend
// trojan answers to small noise patches as well (docs/DECISIONS.md).
type Smoothing struct {
	// Sigma is the blur chosen, in the data's pixels (0: none); InputSigma
	// the same in the encoder's input pixels.
	Sigma      float64     `json:"sigma"`
	InputSigma float64     `json:"input_sigma,omitempty"`
	Tried      []SmoothTry `json:"tried"`
	// Patch and PatchZ are the scan's best candidate that is not a noise
	// blend and its z (reported; the capped search decides).
	Patch  string  `json:"best_patch,omitempty"`
	PatchZ float64 `json:"best_patch_z"`
	// Capped and CappedZ are the best pattern of the search of the capped
	// encoder and its z (empty when no caps were set).
	Capped  string  `json:"capped_best,omitempty"`
	CappedZ float64 `json:"capped_best_z,omitempty"`
	Why     string  `json:"why_none,omitempty"`
}

// SmoothTry is one blur tried: the found pattern's collapse under it over
// a smooth blend's of its alpha (Ratio, what smooth_ratio judges) and its
// z, and the largest z of a noise blend (found or fresh).
type SmoothTry struct {
	Sigma float64 `json:"sigma"`
	Ratio float64 `json:"found_ratio"`
	Z     float64 `json:"found_z"`
	Worst float64 `json:"worst_blend_z"`
}

const (
	// smoothFirst and smoothStep are the ladder of sigmas tried, in
	// data pixels. The ladder starts at 0.6: under sigma 0.5 both noise
	// trojans of the tuning half kept 30-34% ASR (docs/DECISIONS.md).
	smoothFirst = 0.6
	smoothStep  = 0.1
	// smoothBlends fresh noise blends, and smoothControls smooth ones
	// (the yardstick), are measured under each blur.
	smoothBlends   = 32
	smoothControls = 64
)

// smooth runs the smooth step for the scan result sc (nil when its pattern
// is not a noise blend). With caps it first searches the capped encoder,
// and returns that search when it finds a patch (the mask's first round).
// On success the bench is left measuring the blurred encoder; otherwise it
// is restored (uncapped, unblurred).
func (b *bench) smooth(ctx context.Context, sc *scanResult, caps map[string][]float32, phase func(string)) (*Smoothing, *scanResult, error) {
	if sc.Pattern.Kind != "blend" {
		return nil, nil, nil
	}
	rep := &Smoothing{}
	rep.Patch, rep.PatchZ = sc.bestPatch.String(), sc.bestPatchZ
	if b.p.SmoothMax < smoothFirst {
		rep.Why = fmt.Sprintf("smooth_max %.1f is under %.1f", b.p.SmoothMax, smoothFirst)
		return rep, nil, nil
	}
	if caps != nil {
		phase("searching the capped encoder")
		capped, err := b.cappedSearch(ctx, sc, caps)
		if err != nil {
			return nil, nil, err
		}
		rep.Capped, rep.CappedZ = capped.Pattern.String(), capped.BestZ
		if capped.Pattern.Kind != "blend" && capped.BestZ >= b.p.rescanGap() {
			rep.Why = fmt.Sprintf("with its channels capped the encoder answers to a patch (%s, z %.1f >= %.1f): the mask is for it", rep.Capped, rep.CappedZ, b.p.rescanGap())
			return rep, capped, nil
		}
	}
	// The same blends and controls under every blur, from their own
	// random stream.
	rng := rand.New(rand.NewPCG(b.p.Seed, smoothStream))
	blends := []Pattern{sc.Pattern}
	for _, f := range sc.found() {
		if f.Kind == "blend" && (f.Alpha != sc.Pattern.Alpha || f.NoiseSeed != sc.Pattern.NoiseSeed) {
			blends = append(blends, f)
		}
	}
	for i := 0; i < smoothBlends; i++ {
		blends = append(blends, randomBlend(rng))
	}
	var controls []Pattern
	for i := 0; i < smoothControls; i++ {
		controls = append(controls, controlPattern(rng))
	}
	for k := 0; ; k++ {
		sigma := math.Round((smoothFirst+float64(k)*smoothStep)*10) / 10
		if sigma > b.p.SmoothMax+1e-9 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		phase(fmt.Sprintf("blurring the input against a noise blend: sigma %.1f", sigma))
		if err := b.setSmooth(sigma * b.sizeScale); err != nil {
			return nil, nil, err
		}
		col, err := b.collapser(nil)
		if err != nil {
			return nil, nil, err
		}
		cs, err := col.collapse(append(append([]Pattern(nil), blends...), controls...), nil)
		if err != nil {
			return nil, nil, err
		}
		var cb, cc []cand
		for i, p := range blends {
			cb = append(cb, cand{p, cs[i]})
		}
		for i, p := range controls {
			cc = append(cc, cand{p, cs[len(blends)+i]})
		}
		stats, _ := b.groupStatsOf(cb, cc)
		try := SmoothTry{Sigma: sigma, Ratio: stats.blendRatio(sc.Pattern, cs[0]), Z: stats.z(sc.Pattern, cs[0]), Worst: math.Inf(-1)}
		for _, c := range cb {
			try.Worst = math.Max(try.Worst, stats.z(c.p, c.c))
		}
		rep.Tried = append(rep.Tried, try)
		if try.Ratio <= b.p.SmoothRatio {
			rep.Sigma, rep.InputSigma = sigma, sigma*b.sizeScale
			return rep, nil, nil
		}
	}
	rep.Why = fmt.Sprintf("no blur up to smooth_max %.1f brings the found blend's collapse within smooth_ratio %.2f times a smooth blend's", b.p.SmoothMax, b.p.SmoothRatio)
	return rep, nil, b.setSmooth(0)
}

// cappedSearch is the mask's first search (select.go) made ahead of it:
// the encoder under caps, searched from the scan's finds. The bench is
// left uncapped.
func (b *bench) cappedSearch(ctx context.Context, sc *scanResult, caps map[string][]float32) (*scanResult, error) {
	if err := b.setCaps(caps); err != nil {
		return nil, err
	}
	res, err := b.scan(ctx, b.ones(), min(b.p.Candidates, b.p.RescanCands), b.p.Refine, sc.found(), false, nil)
	if err != nil {
		return nil, err
	}
	return res, b.setCaps(nil)
}

// smoothStream is the random stream of the smooth step's blends.
const smoothStream = 0x626c7572
