package filter

import (
	"context"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
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
	enc, err := b.in.Model.Session(encoder.Config{Layers: b.in.LayerNames(), RawLayers: true, ORT: ort.Options{Device: b.p.Device}})
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	x, n, err := decode(b.in, b.in.Model.Preprocess(), b.pickTrusted(fitImages))
	if err != nil {
		return nil, nil, err
	}
	vals := make([][][]float32, len(enc.Layers)) // layer, channel, values
	for li, l := range enc.Layers {
		vals[li] = make([][]float32, l.Channels)
	}
	size := enc.ImageSize()
	const bs = 32
	for lo := 0; lo < n; lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		m := min(bs, n-lo)
		buf, err := enc.Batch(m)
		if err != nil {
			return nil, nil, err
		}
		copy(buf, x[lo*size:(lo+m)*size])
		_, layers, err := enc.Embed(m)
		if err != nil {
			return nil, nil, err
		}
		for li, l := range enc.Layers {
			raw, c := layers[li], l.Channels
			per := len(raw) / m
			pos := per / c
			for s := 0; s < m; s++ {
				sample := raw[s*per : (s+1)*per]
				for ch := 0; ch < c; ch++ {
					for p := 0; p < pos; p++ {
						v := sample[p*c+ch] // [T, C]
						if l.Rank == 4 {
							v = sample[ch*pos+p] // [C, H, W]
						}
						vals[li][ch] = append(vals[li][ch], v)
					}
				}
			}
		}
	}
	caps := map[string][]float32{}
	rep := &Clamp{Quantile: q, Images: n, Capped: map[string]float64{}}
	for li, l := range enc.Layers {
		c := make([]float32, l.Channels)
		var over, all int
		for ch, v := range vals[li] {
			sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
			c[ch] = v[min(len(v)-1, int(q*float64(len(v))))]
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
