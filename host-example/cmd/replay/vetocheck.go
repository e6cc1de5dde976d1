package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"

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
	var trustedMoves []float64
	byClass := map[int][]float64{}
	d := t.Embedding.D
	for i, ok := range trusted {
		if ok {
			m := stat.Dist(t.Embedding.X[i*d:(i+1)*d], f.Embedding.X[i*d:(i+1)*d])
			trustedMoves = append(trustedMoves, m)
			byClass[int(t.Labels[i])] = append(byClass[int(t.Labels[i])], m)
		}
	}
	sort.Float64s(trustedMoves)
	for _, ms := range byClass {
		sort.Float64s(ms)
	}
	// classQ is the q quantile of the trusted rows' moves of class c.
	classQ := func(c int, q float64) float64 {
		ms := byClass[c]
		if len(ms) == 0 {
			return 0
		}
		return ms[int(q*float64(len(ms)-1))]
	}
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
	// Thresholds: the gate's, quantiles of every trusted row's move, and
	// (negative: -q) the q quantile of the vetoed class's trusted rows'
	// moves.
	ths := []float64{gate.Moved}
	names := []string{fmt.Sprintf("gate %.3f", gate.Moved)}
	for _, q := range []float64{0.99, 0.95} {
		ths = append(ths, trustedMoves[int(q*float64(len(trustedMoves)-1))])
		names = append(names, fmt.Sprintf("q%.2f %.3f", q, ths[len(ths)-1]))
	}
	for _, q := range []float64{0.99, 0.95} {
		ths = append(ths, -q)
		cs := ""
		for _, c := range gate.Classes {
			cs += fmt.Sprintf(" %d:%.3f", c, classQ(c, q))
		}
		names = append(names, fmt.Sprintf("class q%.2f%s", q, cs))
	}
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
		vetoHit := make([]int, len(ths))
		vetoed := make([]int, len(ths))
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
			move := stat.Dist(oe, fe.Embedding.X[i*d:(i+1)*d])
			lo, lf := ol.Embedding.X[i*k:(i+1)*k], fl.Embedding.X[i*k:(i+1)*k]
			through := gate.Sends(move, oe) || (gate.Both && slices.Contains(gate.Classes, argmax(lo, -1)))
			pred := argmax(lo, -1)
			if through {
				pred = argmax(lf, -1)
			}
			if pred == want {
				hit++
			}
			for j, th := range ths {
				p := pred
				if th < 0 {
					th = max(gate.Moved, classQ(p, -th))
				}
				if through && move > th && slices.Contains(gate.Classes, p) {
					p = argmaxNot(lf, gate.Classes)
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
		for j := range ths {
			fmt.Fprintf(w, "  [%s] %6.2f%% (%d vetoed)", names[j], 100*float64(vetoHit[j])/float64(n), vetoed[j])
		}
		fmt.Fprintln(w)
	}
	return nil
}

// argmax is the index of the largest value of x other than skip.
func argmax(x []float32, skip int) int {
	best := -1
	for i, v := range x {
		if i != skip && (best < 0 || v > x[best]) {
			best = i
		}
	}
	return best
}

// argmaxNot is the index of the largest value of x not in skip.
func argmaxNot(x []float32, skip []int) int {
	best := -1
	for i, v := range x {
		if !slices.Contains(skip, i) && (best < 0 || v > x[best]) {
			best = i
		}
	}
	return best
}
