package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// residualImages is how many test images the residual check scores,
// clean and with the real trigger, and how many training images it
// measures the found patterns' moves on.
const residualImages = 2000

// filteredEmbedding and filteredLogits are the gated classifier's tensors
// for the filtered encoder's embedding and the filtered head's logits.
const (
	filteredEmbedding = "tcore_filtered/embedding"
	filteredLogits    = "tcore_filtered/tcore_logits_filtered"
)

// residualCheck prints, for a finished run whose clean_model.onnx is a
// gated classifier, its accuracy on clean test images and its attack
// success on triggered ones when directions are taken out of the filtered
// embedding before the filtered head (the head unchanged; the embedding's
// part along each direction replaced by the trusted rows' mean). The
// directions are the mean moves the found patterns (the scan's and every
// round's) cause on the run's training images (train), under the
// filtered encoder (what the mask left of them) or the original one.
func residualCheck(ctx context.Context, w io.Writer, dir, enc, test, train string, spec *attack.Spec) error {
	if spec == nil {
		return fmt.Errorf("--residual-check needs --eval (the real trigger)")
	}
	_, f, trusted, err := readMoves(dir)
	if err != nil {
		return err
	}
	d := f.Embedding.D
	var rows []int
	for i, ok := range trusted {
		if ok {
			rows = append(rows, i)
		}
	}
	mu := stat.Mean(f.Embedding.X, d, rows)
	g0, err := onnxgraph.Load(dir + "/clean_model.onnx")
	if err != nil {
		return err
	}
	orig, err := encoder.Load(enc, "")
	if err != nil {
		return err
	}
	filt, err := encoder.Load(dir+"/filtered_encoder.onnx", "")
	if err != nil {
		return err
	}
	res, err := readFilterResult(dir)
	if err != nil {
		return err
	}
	pats := []filter.Pattern{res.Scan.Pattern}
	for _, r := range res.Rounds {
		pats = append(pats, r.Pattern)
	}
	// The found patterns' mean moves on training images.
	var fMeans, oMeans [][]float64
	for k, m := range []*encoder.Model{filt, orig} {
		base, err := embedPasted(ctx, m, train, nil, nil, residualImages)
		if err != nil {
			return err
		}
		for _, p := range pats {
			pe, err := embedPasted(ctx, m, train, &p, nil, residualImages)
			if err != nil {
				return err
			}
			mv := make([]float32, len(pe.Embedding.X))
			for i := range mv {
				mv[i] = pe.Embedding.X[i] - base.Embedding.X[i]
			}
			mean := stat.Mean(mv, d, nil)
			if k == 0 {
				fMeans = append(fMeans, mean)
			} else {
				oMeans = append(oMeans, mean)
			}
		}
	}
	type variant struct {
		name string
		dirs [][]float64
		q    float64 // > 0: cap at this quantile of the trusted rows instead of projecting
	}
	vs := []variant{
		{"none", nil, 0},
		{"filtered, scan pattern's mean move", fMeans[:1], 0},
		{"filtered, every pattern's mean move", fMeans, 0},
		{"original, scan pattern's mean move", oMeans[:1], 0},
		{"original, every pattern's mean move", oMeans, 0},
		{"both, every mean move", append(slices.Clone(fMeans), oMeans...), 0},
	}
	for _, q := range []float64{0.9} {
		vs = append(vs,
			variant{fmt.Sprintf("cap q%g: original, scan pattern", q), oMeans[:1], q},
			variant{fmt.Sprintf("cap q%g: both, every pattern", q), append(slices.Clone(fMeans), oMeans...), q})
	}
	// The gate's decision and the original path, from the model as
	// exported.
	full, err := encoder.FromGraph(g0, "logits")
	if err != nil {
		return err
	}
	fl0, err := encoder.FromGraph(g0, filteredLogits)
	if err != nil {
		return err
	}
	ol, err := encoder.FromGraph(g0, "tcore_logits_original")
	if err != nil {
		return err
	}
	for _, c := range baseCases(spec) {
		tab := func(m *encoder.Model) (*feat.Table, error) {
			return embedPasted(ctx, m, test, nil, c.trig, residualImages)
		}
		ft, err := tab(full)
		if err != nil {
			return err
		}
		f0, err := tab(fl0)
		if err != nil {
			return err
		}
		ot, err := tab(ol)
		if err != nil {
			return err
		}
		k := ot.Embedding.D
		through := make([]bool, ot.N())
		for i := range through {
			through[i] = slices.Equal(ft.Embedding.X[i*k:(i+1)*k], f0.Embedding.X[i*k:(i+1)*k])
		}
		fmt.Fprintf(w, "%s: %d of %d through the filtered encoder\n", c.name, stat.Count(through), len(through))
		for _, v := range vs {
			fv := f0
			if v.dirs != nil {
				u := orthonormal(v.dirs)
				gv := g0.Clone()
				if v.q > 0 {
					u32, hi := directionCaps(u, f.Embedding.X, d, rows, v.q)
					if err := gv.InsertDirectionCap(filteredEmbedding, u32, hi); err != nil {
						return err
					}
				} else {
					wm, b := projectionTo(u, mu).Map()
					if err := gv.InsertChannelMap(filteredEmbedding, 2, wm, b); err != nil {
						return err
					}
				}
				m, err := encoder.FromGraph(gv, filteredLogits)
				if err != nil {
					return err
				}
				if fv, err = tab(m); err != nil {
					return err
				}
			}
			n, hit, fhit := 0, 0, 0
			for i := 0; i < ot.N(); i++ {
				want := int(ot.Labels[i])
				if c.trig != nil {
					if want == spec.Target {
						continue
					}
					want = spec.Target
				}
				n++
				pf := argmaxNot(fv.Embedding.X[i*k:(i+1)*k], nil)
				p := argmaxNot(ot.Embedding.X[i*k:(i+1)*k], nil)
				if through[i] {
					p = pf
				}
				if p == want {
					hit++
				}
				if pf == want {
					fhit++
				}
			}
			what := "ACC"
			if c.trig != nil {
				what = "ASR"
			}
			fmt.Fprintf(w, "  %-44s %d directions: gated %s %6.2f%%, filtered path alone %6.2f%% (of %d)\n",
				v.name, len(v.dirs), what, 100*float64(hit)/float64(n), 100*float64(fhit)/float64(n), n)
		}
	}
	return nil
}

// directionCaps are the directions u as float32 and, for each, the q
// quantile of the rows' parts along it.
func directionCaps(u [][]float64, x []float32, d int, rows []int, q float64) ([][]float32, []float32) {
	var hi []float32
	for _, v := range u {
		var along []float64
		for _, i := range rows {
			var s float64
			for j, xv := range x[i*d : (i+1)*d] {
				s += float64(xv) * v[j]
			}
			along = append(along, s)
		}
		slices.Sort(along)
		hi = append(hi, float32(along[int(q*float64(len(along)-1))]))
	}
	return dirs32(u), hi
}

// orthonormal returns an orthonormal basis of the span of vs (Gram-Schmidt;
// vectors within 1e-6 of the span so far are dropped).
func orthonormal(vs [][]float64) [][]float64 {
	var out [][]float64
	for _, v := range vs {
		u := slices.Clone(v)
		for _, b := range out {
			dot := stat.Dot(u, b)
			for j := range u {
				u[j] -= dot * b[j]
			}
		}
		norm := math.Sqrt(stat.Dot(u, u))
		if norm < 1e-6*math.Sqrt(stat.Dot(v, v)) || norm == 0 {
			continue
		}
		for j := range u {
			u[j] /= norm
		}
		out = append(out, u)
	}
	return out
}

// projectionTo is the projection that replaces an embedding's part along
// the orthonormal directions u by mu's.
func projectionTo(u [][]float64, mu []float64) *chanfilter.Project {
	p := &chanfilter.Project{Dirs: dirs32(u)}
	for _, v := range u {
		p.Along = append(p.Along, float32(stat.Dot(v, mu)))
	}
	return p
}

// dirs32 is u in float32, as the graph takes it.
func dirs32(u [][]float64) [][]float32 {
	out := make([][]float32, len(u))
	for k, v := range u {
		out[k] = make([]float32, len(v))
		for j, x := range v {
			out[k][j] = float32(x)
		}
	}
	return out
}
