package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// vetoCheckImages is how many test images the veto check scores, clean
// and with the real trigger (-1: all, as the bench scores them).
const vetoCheckImages = -1

// readProbeShares reads bootstrap's gate_probe_classes (the classes the
// original classifier gives the gate's probe rows, the first 8) from a
// finished run folder.
func readProbeShares(dir string) ([]chanfilter.ClassShare, error) {
	var node struct {
		Metrics struct {
			Shares []chanfilter.ClassShare `json:"gate_probe_classes"`
		} `json:"metrics"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "nodes", "bootstrap", "node.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &node); err != nil {
		return nil, err
	}
	return node.Metrics.Shares, nil
}

// vetoCheck prints, for a finished run whose clean_model.onnx is a gated
// classifier with a class part, the gated classifier's accuracy on clean
// test images and its attack success on triggered ones, as exported and
// with a veto: an input the gate sends through the filtered encoder, that
// the mask moved more than a threshold, and that the filtered head puts
// in one of the gate's classes gets the filtered head's best other class.
func vetoCheck(ctx context.Context, w io.Writer, dir, enc, test string, spec *attack.Spec) error {
	t, f, trusted, err := readMoves(dir)
	if err != nil {
		return err
	}
	d := t.Embedding.D
	g0, err := onnxgraph.Load(filepath.Join(dir, "clean_model.onnx"))
	if err != nil {
		return err
	}
	gate, err := chanfilter.ReadGate(g0)
	if err != nil {
		return err
	}
	if gate == nil {
		return fmt.Errorf("%s: not a gated classifier", dir)
	}
	models := []*encoder.Model{}
	for _, name := range []string{"", "tcore_logits_original", "tcore_filtered/tcore_logits_filtered"} {
		var m *encoder.Model
		if name == "" {
			m, err = encoder.Load(enc, "")
		} else {
			m, err = encoder.FromGraph(g0, name)
		}
		if err != nil {
			return err
		}
		models = append(models, m)
	}
	filt, err := encoder.Load(filepath.Join(dir, "filtered_encoder.onnx"), "")
	if err != nil {
		return err
	}
	models = append(models, filt)
	// The found pattern's region under the original encoder, as the
	// filter draws it: the centroid of test images carrying the pattern,
	// the 90th percentile of their distances to it, and the 1st
	// percentile of the trusted rows' distances.
	res, err := readFilterResult(dir)
	if err != nil {
		return err
	}
	pe, err := embedPasted(ctx, models[0], test, &res.Scan.Pattern, nil, gateCheckImages)
	if err != nil {
		return err
	}
	centre := stat.Mean(pe.Embedding.X, d, nil)
	var pd, td []float64
	for i := 0; i < pe.N(); i++ {
		pd = append(pd, stat.DistTo(pe.Embedding.X[i*d:(i+1)*d], centre))
	}
	for i, ok := range trusted {
		if ok {
			td = append(td, stat.DistTo(t.Embedding.X[i*d:(i+1)*d], centre))
		}
	}
	sort.Float64s(pd)
	sort.Float64s(td)
	radius, q01 := pd[int(0.9*float64(len(pd)-1))], td[int(0.01*float64(len(td)-1))]
	// The veto variants: each says whether an input the gate sends
	// through, moved by move, that the filtered head gives class p,
	// embedded as oe by the original encoder, is vetoed.
	type variant struct {
		name  string
		veto  func(move float64, p int, oe []float32) bool
		never []int // the classes a vetoed input never gets (nil: the gate's)
	}
	in := func(p int) bool { return slices.Contains(gate.Classes, p) }
	vs := []variant{{fmt.Sprintf("gate %.3f", gate.Moved), func(m float64, p int, _ []float32) bool { return m > gate.Moved && in(p) }, nil}}
	// bootstrap's gate_veto "moved": each class's own threshold.
	perClass, err := bootstrap.VetoThresholds(f, t, trusted, gate)
	if err != nil {
		return err
	}
	vs = append(vs, variant{fmt.Sprintf("class q0.99 %v", perClass), func(m float64, p int, _ []float32) bool {
		k := slices.Index(gate.Classes, p)
		return k >= 0 && m > perClass[k]
	}, nil})
	for _, r := range []struct {
		name string
		r    float64
	}{{"region r90", radius}, {"region max(r90,q01)", max(radius, q01)}} {
		vs = append(vs, variant{fmt.Sprintf("%s %.3f", r.name, r.r), func(m float64, p int, oe []float32) bool {
			return m > gate.Moved && in(p) && stat.DistTo(oe, centre) <= r.r
		}, nil})
	}
	fmt.Fprintf(w, "region of %s: radius %.3f, trusted q01 %.3f\n", res.Scan.Pattern.String(), radius, q01)
	// The classes a vetoed input never gets in the last variants, as
	// bootstrap's gate_veto "region" draws them (from its
	// gate_probe_classes, the first 8 classes).
	shares, err := readProbeShares(dir)
	if err != nil {
		return err
	}
	rv := *gate
	bootstrap.RegionVeto(&rv, shares)
	never := rv.VetoNever
	fmt.Fprintf(w, "classes a vetoed input never gets (last variants): %v\n", never)
	rr := max(radius, q01)
	vs = append(vs, variant{fmt.Sprintf("region %.3f, never %v", rr, never), func(m float64, p int, oe []float32) bool {
		return m > gate.Moved && in(p) && stat.DistTo(oe, centre) <= rr
	}, never})
	// gate_veto "region" itself: the region the filter recorded in the
	// gate (drawn on its scan images, only where it found the region apart
	// from the trusted rows). Runs older than filter 0.45.0 carry none; for
	// them, the last variant again where the filter's report says apart.
	stage := func(m float64, p int, oe []float32) bool {
		return gate.RegionCentre != nil && m > gate.Moved && in(p) && stat.DistTo(oe, gate.RegionCentre) <= gate.RegionNear
	}
	name := fmt.Sprintf("stage: recorded region %.3f, never %v", gate.RegionNear, never)
	if gate.RegionCentre == nil {
		apart := res.Region != nil && res.Region.Why == "" && res.Region.Threshold > 0
		stage = func(m float64, p int, oe []float32) bool {
			return apart && m > gate.Moved && in(p) && stat.DistTo(oe, centre) <= rr
		}
		name = fmt.Sprintf("no recorded region; apart %v: region %.3f, never %v", apart, rr, never)
	}
	vs = append(vs, variant{name, stage, never})
	fmt.Fprintf(w, "veto check: gate moved %.3f, classes %v (both %v)\n", gate.Moved, gate.Classes, gate.Both)
	for _, c := range baseCases(spec) {
		var tabs [4]*feat.Table
		for k, m := range models {
			if tabs[k], err = embedPasted(ctx, m, test, nil, c.trig, vetoCheckImages); err != nil {
				return err
			}
		}
		o, ol, fl, fe := tabs[0], tabs[1], tabs[2], tabs[3]
		k := ol.Embedding.D
		n, hit := 0, 0
		vetoHit := make([]int, len(vs))
		vetoed := make([]int, len(vs))
		for i := 0; i < o.N(); i++ {
			label := int(o.Labels[i])
			want := label
			if c.trig != nil {
				if label == spec.Target {
					continue
				}
				want = spec.Target
			}
			n++
			oe := o.Embedding.X[i*d : (i+1)*d]
			move := gate.Move(oe, fe.Embedding.X[i*d:(i+1)*d]) // as the gate measures it (whitened under gate_move whitened)
			lo, lf := ol.Embedding.X[i*k:(i+1)*k], fl.Embedding.X[i*k:(i+1)*k]
			through := gate.Sends(move, oe) || (gate.Both && slices.Contains(gate.Classes, argmaxNot(lo, nil)))
			pred := argmaxNot(lo, nil)
			if through {
				pred = argmaxNot(lf, nil)
			}
			if pred == want {
				hit++
			}
			for j, v := range vs {
				p := pred
				if through && v.veto(move, p, oe) {
					never := gate.Classes
					if v.never != nil {
						never = v.never
					}
					p = argmaxNot(lf, never)
					vetoed[j]++
				}
				if p == want {
					vetoHit[j]++
				}
			}
		}
		what := "ACC"
		if c.trig != nil {
			what = "ASR"
		}
		fmt.Fprintf(w, "  %-14s %s %6.2f%% of %d; with the veto:", c.name, what, 100*float64(hit)/float64(n), n)
		for j, v := range vs {
			fmt.Fprintf(w, "  [%s] %6.2f%% (%d vetoed)", v.name, 100*float64(vetoHit[j])/float64(n), vetoed[j])
		}
		fmt.Fprintln(w)
	}
	return nil
}

// argmaxNot is the index of the largest value of x whose index is not in
// skip (nil: the largest).
func argmaxNot(x []float32, skip []int) int {
	best := -1
	for i, v := range x {
		if !slices.Contains(skip, i) && (best < 0 || v > x[best]) {
			best = i
		}
	}
	return best
}
