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
	b, err := newBench(p, ins)
	if err != nil {
		return nil, nil, err
	}
	defer b.close()
	sc, err := b.firstScan(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
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
