package filter

import (
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// tails lets the greedy choice score a mask that differs from the current
// one in a single channel without running the whole network: switching a
// channel of a layer off changes nothing before that layer, so the scan
// images' values there (under the current mask, before that layer's own
// mask) are computed once, and each candidate channel runs only the
// network after it. On the fixtures' encoder the layers after the first
// probed one hold 69% of the work, after the third 23%. The embeddings
// are the whole network's (encoder.TestTailSessionEqualsTheWholeNetwork).
type tails struct {
	pre  *encoder.Encoder   // the whole network, giving each layer's values before its mask
	from []*encoder.Encoder // per probed layer, the network after it (nil: the layer does not cut it)
	// masks are, per session of from, the probed layers (indices into
	// bench.t.Layers) of its run-time masks, in order.
	masks [][]int
}

// tailBytes bounds one tail run's input (its rows are whole candidates).
const tailBytes = 64 << 20

// openTails makes the sessions of b.tails for the bench's model, means
// and caps, once per session of the bench (open closes them).
func (b *bench) openTails() error {
	if b.tail != nil || b.noTails {
		return nil
	}
	mi := b.maskInputs()
	opt := ort.Options{Device: b.p.Device}
	pre, err := b.model.Session(encoder.Config{MaskInputs: mi, PreMask: true, ORT: opt})
	if err != nil {
		return err
	}
	tensor := make(map[string]int, len(pre.Switchable))
	for li, l := range pre.Switchable {
		tensor[l.Tensor] = li
	}
	n := len(b.t.Layers)
	t := &tails{pre: pre, from: make([]*encoder.Encoder, n), masks: make([][]int, n)}
	for li, l := range b.t.Layers {
		// A layer that does not cut the network (a skip connection
		// passes around it) is scored on the whole network.
		s, err := b.model.Session(encoder.Config{MaskInputs: mi, From: l.Name, ORT: opt})
		if err != nil {
			continue
		}
		t.from[li] = s
		for _, sl := range s.Switchable {
			t.masks[li] = append(t.masks[li], tensor[sl.Tensor])
		}
	}
	b.tail = t
	return nil
}

func (t *tails) close() {
	if t == nil {
		return
	}
	t.pre.Close()
	for _, s := range t.from {
		if s != nil {
			s.Close()
		}
	}
}

// scorePairs runs, for each extra channel (nil: none), the clean scan
// images and the images with pat painted on under keep with that channel
// also switched off, and hands use each embedding ([n*Dim], valid during
// the call): for each k, the clean images first (clean true), then the
// painted ones. Channels of a layer that cuts the network run through its
// tail; the rest through the whole network.
func (b *bench) scorePairs(keep map[string][]bool, extra []*channel, pat *Pattern, use func(k int, clean bool, emb []float32)) error {
	if err := b.openTails(); err != nil {
		return err
	}
	var whole []int
	byLayer := make([][]int, len(b.t.Layers))
	for k, e := range extra {
		li := -1
		if e != nil && b.tail != nil {
			li = b.layerIndex(e.layer)
		}
		if li < 0 || b.tail.from[li] == nil {
			whole = append(whole, k)
			continue
		}
		byLayer[li] = append(byLayer[li], k)
	}
	if len(whole) > 0 {
		views := make([]view, 0, 2*len(whole))
		for _, k := range whole {
			views = append(views, view{keep: keep, extra: extra[k]}, view{pat: pat, keep: keep, extra: extra[k]})
		}
		if err := b.run(views, func(j int, emb []float32, _ [][]float32) { use(whole[j/2], j%2 == 0, emb) }); err != nil {
			return err
		}
	}
	var pre [][]float32 // per probed layer: the clean images' values, then the painted ones'
	for li, ks := range byLayer {
		if len(ks) == 0 {
			continue
		}
		if pre == nil {
			var err error
			if pre, err = b.preMask(keep, pat); err != nil {
				return err
			}
		}
		if err := b.runTail(li, pre[li], keep, extra, ks, use); err != nil {
			return err
		}
	}
	return nil
}

// preMask returns, per probed layer, the values before its mask of the
// clean scan images and then of the images with pat painted on, under
// keep (copied).
func (b *bench) preMask(keep map[string][]bool, pat *Pattern) ([][]float32, error) {
	s, n := b.tail.pre, b.n
	rows := 2 * n
	x, err := s.Batch(rows)
	if err != nil {
		return nil, err
	}
	size := s.ImageSize()
	b.inputs(x[:n*size], nil)
	b.inputs(x[n*size:], pat)
	ms, err := s.Masks(rows)
	if err != nil {
		return nil, err
	}
	for li := range s.Switchable {
		b.setKeep(ms[li], li, rows, keep, nil)
	}
	_, outs, err := s.Embed(rows)
	if err != nil {
		return nil, err
	}
	pre := make([][]float32, len(outs))
	for i, o := range outs {
		pre[i] = append([]float32(nil), o...)
	}
	return pre, nil
}

// runTail scores the extra channels ks, all of probed layer li, through
// its tail from pre (that layer's values of the clean, then the painted
// scan images).
func (b *bench) runTail(li int, pre []float32, keep map[string][]bool, extra []*channel, ks []int, use func(k int, clean bool, emb []float32)) error {
	s, n := b.tail.from[li], b.n
	size := s.ImageSize()
	per := max(1, tailBytes/(2*n*size*4))
	for lo := 0; lo < len(ks); lo += per {
		chunk := ks[lo:min(len(ks), lo+per)]
		rows := 2 * n * len(chunk)
		x, err := s.Batch(rows)
		if err != nil {
			return err
		}
		ms, err := s.Masks(rows)
		if err != nil {
			return err
		}
		for j, k := range chunk {
			copy(x[2*j*n*size:(2*j+2)*n*size], pre)
			for si, l := range s.Switchable {
				b.setKeep(ms[si][2*j*n*l.Channels:(2*j+2)*n*l.Channels], b.tail.masks[li][si], 2*n, keep, extra[k])
			}
		}
		emb, _, err := s.Embed(rows)
		if err != nil {
			return err
		}
		d := s.Dim
		for j, k := range chunk {
			use(k, true, emb[2*j*n*d:(2*j+1)*n*d])
			use(k, false, emb[(2*j+1)*n*d:(2*j+2)*n*d])
		}
	}
	return nil
}

// setKeep writes the run-time mask of probed layer li for rows images:
// the channels keep switches off and extra, when it is li's, are 0.
func (b *bench) setKeep(m []float32, li, rows int, keep map[string][]bool, extra *channel) {
	l := b.t.Layers[li]
	kp, d := keep[l.Name], l.D
	for c := 0; c < d; c++ {
		on := float32(1)
		if (kp != nil && !kp[c]) || (extra != nil && extra.layer == l.Name && extra.c == c) {
			on = 0
		}
		for i := 0; i < rows; i++ {
			m[i*d+c] = on
		}
	}
}

// layerIndex is the index of the probed layer called name, or -1.
func (b *bench) layerIndex(name string) int {
	for li, l := range b.t.Layers {
		if l.Name == name {
			return li
		}
	}
	return -1
}
