package filter

import (
	"math"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// suspicion is every probed channel's suspicion: the largest robust z
// (within its layer) of the signals used, and which signal gave it.
type suspicion struct {
	z      map[string][]float32
	signal map[string][]string
	// uclcMissing says why UCLC could not be read (the encoder's
	// convolutions are not where UCLC looks), or "".
	uclcMissing string
}

// score measures the suspicion signals of docs/ALGORITHM.md (stage 3) for
// the scan's found pattern: TAC (the change the pattern causes), UCLC (the
// kernel's Lipschitz bound, data-free) and probe sensitivity (the largest
// change any random candidate of the scan caused).
func (b *bench) score(sc *scanResult) (*suspicion, error) {
	sums, err := b.sums(nil, nil, &sc.Pattern)
	if err != nil {
		return nil, err
	}
	tac := b.robustZ(b.layerChange(sums[0], sums[1]))
	s := &suspicion{z: map[string][]float32{}, signal: map[string][]string{}}
	var uclc map[string][]float32
	if b.p.uses("uclc") {
		layers, err := b.in.Layers()
		if err != nil {
			return nil, err
		}
		if u, err := chanfilter.UCLC(b.in.Model, layers); err != nil {
			s.uclcMissing = err.Error()
		} else {
			uclc = map[string][]float32{}
			for name, v := range u {
				uclc[name] = stat.RobustZ(v)
			}
		}
	}
	var probe map[string][]float32
	if b.p.uses("probe") && sc.probe != nil {
		probe = b.robustZ(sc.probe)
	}
	for _, l := range b.t.Layers {
		z := make([]float32, l.D)
		sig := make([]string, l.D)
		for c := range z {
			z[c], sig[c] = float32(math.Inf(-1)), ""
			if b.p.uses("tac") {
				z[c], sig[c] = tac[l.Name][c], "tac"
			}
			if u := uclc[l.Name]; u != nil && u[c] > z[c] {
				z[c], sig[c] = u[c], "uclc"
			}
			if pr := probe[l.Name]; pr != nil && pr[c] > z[c] {
				z[c], sig[c] = pr[c], "probe"
			}
		}
		s.z[l.Name], s.signal[l.Name] = z, sig
	}
	return s, nil
}
