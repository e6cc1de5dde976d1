package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/knn"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// probeCheckImages is how many test images the probe check pastes each
// pattern on.
const probeCheckImages = 300

// probeAlphas are the alphas the probe check paints the found blend at
// (besides its own).
var probeAlphas = []float32{0.15, 0.2, 0.25, 0.35, 0.5}

// probeCheck prints, for a finished run whose scan found a noise blend,
// where the original encoder sends test images carrying the real trigger
// (spec) and the found noise at several alphas: the classes a head trained
// as bootstrap trains a gate's (the run's kept rows, seed + 1000) gives
// them, and the labels of their nearest training rows (cosine, k 10). A class gate must contain the class the
// real trigger is sent to; this says which probe would find it.
func probeCheck(ctx context.Context, w io.Writer, dir, enc, test string, spec *attack.Spec, seed uint64) error {
	t, err := readFeatures(filepath.Join(dir, "nodes", "embed", "features.arrow"))
	if err != nil {
		return err
	}
	res, err := readFilterResult(dir)
	if err != nil {
		return err
	}
	found := res.Scan.Pattern
	if found.Kind != "blend" {
		return fmt.Errorf("probe check: the scan's pattern is %s, not a noise blend", found.String())
	}
	nc, _ := t.Classes()
	// The gate's head as bootstrap trains it: the kept rows, the final
	// head's epochs and steps, the run's seed + 1000.
	var bp bootstrap.Params
	if err := plugin.DecodeParams(bootstrap.New().Spec(), nil, &bp); err != nil {
		return err
	}
	bp.Seed = seed
	kept, err := readScores(filepath.Join(dir, "nodes", "bootstrap", "scores.arrow"), t, "bootstrap.kept")
	if err != nil {
		return err
	}
	var rows []int
	for i, k := range kept["bootstrap.kept"].B {
		if k {
			rows = append(rows, i)
		}
	}
	tr, h, err := gateHead(t, nc, rows, bp)
	if err != nil {
		return err
	}
	defer tr.Close()
	ix, err := knn.NewIndex(t.Embedding.X, t.Embedding.D)
	if err != nil {
		return err
	}
	m, err := encoder.Load(enc, "")
	if err != nil {
		return err
	}
	cases := baseCases(spec)
	alphas := append([]float32{found.Alpha}, probeAlphas...)
	for _, a := range alphas {
		p := found
		p.Alpha = a
		cases = append(cases, pasteCase{name: "found noise " + p.String(), pat: &p})
	}
	// Other noises at the found alpha: where noise as such sends inputs.
	for k := uint64(1); k <= 2; k++ {
		p := found
		p.NoiseSeed = found.NoiseSeed + k
		cases = append(cases, pasteCase{name: fmt.Sprintf("another noise (seed +%d) ", k) + p.String(), pat: &p})
	}
	for _, c := range cases {
		o, err := embedPasted(ctx, m, test, c.pat, c.trig, probeCheckImages)
		if err != nil {
			return err
		}
		sc, err := tr.Score(h, o.Embedding.X, o.Labels)
		if err != nil {
			return err
		}
		head := make(map[int]int)
		for _, p := range sc.Pred {
			head[int(p)]++
		}
		near := make(map[int]int)
		d := o.Embedding.D
		for i := 0; i < o.N(); i++ {
			nb, err := ix.Nearest(o.Embedding.X[i*d:(i+1)*d], 10)
			if err != nil {
				return err
			}
			for _, j := range nb {
				near[int(t.Labels[j])]++
			}
		}
		fmt.Fprintf(w, "  %-36s head %s | knn %s\n", c.name, topShares(head, o.N()), topShares(near, 10*o.N()))
	}
	return nil
}

// topShares prints the six largest counts as class:share%.
func topShares(n map[int]int, total int) string {
	type cs struct{ c, n int }
	var all []cs
	for c, k := range n {
		all = append(all, cs{c, k})
	}
	sort.Slice(all, func(a, b int) bool { return all[a].n > all[b].n || all[a].n == all[b].n && all[a].c < all[b].c })
	var parts []string
	for i, x := range all {
		if i == 6 {
			break
		}
		parts = append(parts, fmt.Sprintf("%d:%.0f%%", x.c, 100*float64(x.n)/float64(total)))
	}
	return strings.Join(parts, " ")
}

// gateClasses prints, for each finished run folder with a class gate, the
// classes bootstrap gave the gate (from its metrics) and the labels of
// the probe rows' nearest kept rows (cosine, k 10, original embeddings),
// each with its share, and whether target is among the classes with 5%.
func gateClasses(w io.Writer, dirs []string, target int) error {
	for _, dir := range dirs {
		t, err := readFeatures(filepath.Join(dir, "nodes", "embed", "features.arrow"))
		if err != nil {
			return err
		}
		g, err := onnxgraph.Load(filepath.Join(dir, "filtered_encoder.onnx"))
		if err != nil {
			return err
		}
		gate, err := chanfilter.ReadGate(g)
		if err != nil {
			return err
		}
		if gate == nil || !gate.IsClass() {
			fmt.Fprintf(w, "%s: no class gate\n", dir)
			continue
		}
		kept, err := readScores(filepath.Join(dir, "nodes", "bootstrap", "scores.arrow"), t, "bootstrap.kept")
		if err != nil {
			return err
		}
		d := t.Embedding.D
		var sel []float32
		var labels []int32
		for i, k := range kept["bootstrap.kept"].B {
			if k {
				sel = append(sel, t.Embedding.X[i*d:(i+1)*d]...)
				labels = append(labels, t.Labels[i])
			}
		}
		ix, err := knn.NewIndex(sel, d)
		if err != nil {
			return err
		}
		var qerr error
		near := gate.NeighbourShares(func(e []float32) []int {
			nb, err := ix.Nearest(e, 10)
			if err != nil {
				qerr = err
			}
			out := make([]int, len(nb))
			for k, j := range nb {
				out[k] = int(labels[j])
			}
			return out
		})
		if qerr != nil {
			return qerr
		}
		shares, err := readProbeShares(dir)
		if err != nil {
			return err
		}
		head, inHead := sharesOver(shares, target)
		kn, inKNN := sharesOver(near, target)
		fmt.Fprintf(w, "%s\n  head %s (target %v) | knn %s (target %v)\n", dir, head, inHead, kn, inKNN)
	}
	return nil
}

// sharesOver prints the classes of shares with 5% or more as class:share%,
// and says whether target is among them.
func sharesOver(shares []chanfilter.ClassShare, target int) (string, bool) {
	var parts []string
	in := false
	for _, s := range shares {
		if s.Share >= 0.05 {
			parts = append(parts, fmt.Sprintf("%d:%.0f%%", s.Class, 100*s.Share))
			in = in || s.Class == target
		}
	}
	return strings.Join(parts, " "), in
}
