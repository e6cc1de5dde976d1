package filter

import (
	"context"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Clamp says how the probed channels were capped.
type Clamp struct {
	Quantile float64 `json:"quantile"`
	Images   int     `json:"images"`
	// Capped is, per layer, the share of the trusted images' activations
	// the caps lower (about 1 - quantile).
	Capped map[string]float64 `json:"capped_share"`
}

// channelCaps returns, for every probed channel, the q-quantile of its
// activations over every position of the feature maps of fitImages
// trusted images (under the unmasked, uncapped encoder). Capping a channel
// there changes what clean images do in about 1-q of its positions, but
// cuts the outsized responses a trigger drives (docs/DECISIONS.md).
func (b *bench) channelCaps(ctx context.Context, q float64) (map[string][]float32, *Clamp, error) {
	enc, x, n, err := b.rawTrusted(b.in.LayerNames())
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	vals := make([][][]float32, len(enc.Layers)) // layer, channel, values
	for li, l := range enc.Layers {
		vals[li] = make([][]float32, l.Channels)
	}
	err = positions(ctx, enc, [][]float32{x}, n, func(li int, vs [][]float32) {
		for ch, a := range vs[0] {
			vals[li][ch] = append(vals[li][ch], a)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	caps := map[string][]float32{}
	rep := &Clamp{Quantile: q, Images: n, Capped: map[string]float64{}}
	for li, l := range enc.Layers {
		c := make([]float32, l.Channels)
		var over, all int
		for ch, v := range vals[li] {
			sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
			c[ch] = stat.QuantileSorted(v, q)
			for _, x := range v {
				if x > c[ch] {
					over++
				}
			}
			all += len(v)
		}
		caps[l.Name] = c
		rep.Capped[l.Name] = float64(over) / float64(max(all, 1))
	}
	return caps, rep, nil
}
