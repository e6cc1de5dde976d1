package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
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
// on every training row gives them, and the labels of their nearest
// training rows (cosine, k 10). A class gate must contain the class the
// real trigger is sent to; this says which probe would find it.
func probeCheck(ctx context.Context, w io.Writer, dir, enc, test string, spec *attack.Spec, seed uint64) error {
	t, err := readFeatures(filepath.Join(dir, "nodes", "embed", "features.arrow"))
	if err != nil {
		return err
	}
	var node struct {
		Metrics filter.Result `json:"metrics"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "nodes", "filter", "node.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &node); err != nil {
		return err
	}
	found := node.Metrics.Scan.Pattern
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
	sizes := bp.Sizes(t.Embedding.D, nc)
	cfg := bp.Config()
	cfg.Epochs, cfg.MaxSteps = bp.FinalEpochs, bp.MaxSteps
	tr, err := mlp.NewTrainer(sizes, cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	h := mlp.NewHead(sizes, bp.Seed+1000)
	if _, err := tr.Fit(h, t.Embedding.X, t.Labels, rows, nil); err != nil {
		return err
	}
	unit := normalised(t.Embedding.X, t.Embedding.D)
	m, err := encoder.Load(enc, "")
	if err != nil {
		return err
	}
	type named struct {
		name string
		pat  *filter.Pattern
		trig *attack.Spec
	}
	cases := []named{{name: "clean"}}
	if spec != nil {
		cases = append(cases, named{name: "real trigger", trig: spec})
	}
	alphas := append([]float32{found.Alpha}, probeAlphas...)
	for _, a := range alphas {
		p := found
		p.Alpha = a
		cases = append(cases, named{name: "found noise " + p.String(), pat: &p})
	}
	for _, c := range cases {
		r, err := arrowio.OpenDataset(ctx, test, arrowio.ReadOptions{})
		if err != nil {
			return err
		}
		src, err := pasted(r, c.pat, c.trig, probeCheckImages)
		r.Release()
		if err != nil {
			return err
		}
		var o *feat.Table
		err = embedAll(ctx, m, src, func(rr array.RecordReader) error {
			var err error
			o, err = feat.ReadAll(rr)
			return err
		})
		src.Release()
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
		knn := make(map[int]int)
		q := normalised(o.Embedding.X, o.Embedding.D)
		d := o.Embedding.D
		for i := 0; i < o.N(); i++ {
			for _, j := range nearest(q[i*d:(i+1)*d], unit, d, 10) {
				knn[int(t.Labels[j])]++
			}
		}
		fmt.Fprintf(w, "  %-36s head %s | knn %s\n", c.name, topShares(head, o.N()), topShares(knn, 10*o.N()))
	}
	return nil
}

// normalised returns x's rows (d values each) scaled to unit length.
func normalised(x []float32, d int) []float32 {
	out := make([]float32, len(x))
	for i := 0; i+d <= len(x); i += d {
		var s float64
		for _, v := range x[i : i+d] {
			s += float64(v) * float64(v)
		}
		n := float32(1 / math.Max(math.Sqrt(s), 1e-12))
		for k, v := range x[i : i+d] {
			out[i+k] = v * n
		}
	}
	return out
}

// nearest returns the k rows of unit (d values each) nearest q (cosine).
func nearest(q, unit []float32, d, k int) []int {
	type hit struct {
		i int
		s float32
	}
	best := make([]hit, 0, k+1)
	for j := 0; j+d <= len(unit); j += d {
		var s float32
		for t, v := range unit[j : j+d] {
			s += v * q[t]
		}
		if len(best) == k && s <= best[k-1].s {
			continue
		}
		best = append(best, hit{j / d, s})
		sort.Slice(best, func(a, b int) bool { return best[a].s > best[b].s })
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]int, len(best))
	for i, h := range best {
		out[i] = h.i
	}
	return out
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
