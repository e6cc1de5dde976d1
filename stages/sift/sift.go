// Package sift is T-Core's first stage: seed sifting by topological
// invariance (docs/ALGORITHM.md, stage 1). For every sample and probed layer it
// measures label agreement among the sample's k nearest neighbours (cosine,
// per-layer standardised features); a clean sample's agreement rises with
// depth, poison's does not. The samples with the largest depth gain in each
// class become the seeds.
package sift

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/knn"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the sift stage.
type Stage struct{}

// New returns the sift stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "sift",
		Version: "0.2.0",
		Inputs:  []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings and probed layers of the training set"}},
		Outputs: []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "sift.seed, sift.invariance, sift.min, sift.agree.<layer>"}},
		Params: plugin.ParamsOf(Params{K: 10, Rule: "gain", SeedFraction: 0.01, SeedMin: 10, Engine: "ort", Device: "cpu",
			ShallowTheta: 0.9, ShallowZ: 4, ShallowGap: 0.35}),
		NeedsAllRows: true,
	}
}

// Params are sift's parameters.
type Params struct {
	K            int     `json:"k" range:"[1,)" doc:"neighbours per sample"`
	Rule         string  `json:"rule" enum:"gain|min" doc:"gain: a^L - max_{l<L} a^l; min: min_l a^l"`
	SeedFraction float64 `json:"seed_fraction" range:"(0,0.5]" doc:"seeds per class as a fraction of the class"`
	SeedMin      int     `json:"seed_min" range:"[1,)" doc:"at least this many seeds per class (at most half the class)"`
	Classes      int     `json:"classes" role:"classes" range:"[0,)" doc:"declared number of classes (0: max label + 1)"`
	Engine       string  `json:"engine" enum:"ort|go" doc:"kNN engine: ort or go"`
	ShallowTheta float64 `json:"shallow_theta" range:"(0,1]" doc:"a row is in a shallow cluster at one of the two shallowest probed layers when its label agreement there reaches this"`
	ShallowZ     float64 `json:"shallow_z" range:"[0,)" doc:"a class whose share of rows in shallow clusters at a layer lies this many robust z above the classes' median there is suspect (0: off)"`
	ShallowGap   float64 `json:"shallow_gap" range:"[0,1]" doc:"and at least this much above the median share"`
	Device       string  `json:"device" role:"device" doc:"cpu, cuda or cuda:N for the ort engine"`
}

// Check implements plugin.Checker: it validates the parameters.
func (p Params) Check() error { return ort.CheckDevice(p.Device) }

// Result is sift's verdict, in row order of the table.
type Result struct {
	Seed []bool
	// Shallow is each row's label agreement at its shallowest layers
	// (the larger of the two shallowest); Suspect marks the rows of a
	// suspect class that sit in a shallow cluster at the layer where the
	// class is suspect.
	Shallow   []float32
	Suspect   []bool
	Gain, Min []float32
	Agree     [][]float32 // per layer
	Layers    []string
	Metrics   plugin.Metrics
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	t, err := feat.Open(in, "features")
	if err != nil {
		return nil, err
	}
	res, err := Sift(ctx, t, p, progress)
	if err != nil {
		return nil, err
	}
	cols := []feat.Column{{Name: "sift.seed", B: res.Seed}, {Name: "sift.invariance", F: res.Gain}, {Name: "sift.min", F: res.Min},
		{Name: "sift.shallow", F: res.Shallow}, {Name: "sift.suspect", B: res.Suspect}}
	for i, l := range res.Layers {
		cols = append(cols, feat.Column{Name: "sift.agree." + feat.Sanitize(l), F: res.Agree[i]})
	}
	if err := feat.WriteScores(out, "scores", t.IDs, cols); err != nil {
		return nil, err
	}
	zerolog.Ctx(ctx).Info().Interface("seeds", res.Metrics["seeds_per_class"]).Msg("seeds chosen")
	return res.Metrics, nil
}

// Sift computes agreement, scores and seeds for the table.
func Sift(ctx context.Context, t *feat.Table, p Params, progress plugin.Progress) (*Result, error) {
	nc, err := t.CheckClasses(p.Classes)
	if err != nil {
		return nil, err
	}
	n := t.N()
	if p.K >= n {
		return nil, plugin.BadInputf("parameter \"k\": %d, but only %d rows", p.K, n)
	}
	layers := append([]feat.Matrix(nil), t.Layers...)
	withEmb := !t.SameAsLastLayer()
	if withEmb {
		layers = append(layers, t.Embedding)
	}
	if len(layers) < 2 {
		return nil, plugin.BadInputf("port \"features\": sift needs at least two layers (probed layers plus the embedding); got %d — embed with layers [\"auto\"]", len(layers))
	}
	res := &Result{Seed: make([]bool, n), Gain: make([]float32, n), Min: make([]float32, n), Shallow: make([]float32, n), Suspect: make([]bool, n)}
	start := time.Now()
	for li, l := range layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x := knn.Standardize(l.X, n, l.D)
		nb, err := knn.Neighbors(x, n, l.D, p.K, knn.Options{Engine: knn.Engine(p.Engine), ORT: ort.Options{Device: p.Device}})
		if err != nil {
			return nil, err
		}
		res.Agree = append(res.Agree, knn.Agreement(nb, t.Labels, p.K))
		res.Layers = append(res.Layers, l.Name)
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(li + 1), Total: int64(len(layers)), Unit: "layers", Message: l.Name})
		}
	}
	knnSecs := time.Since(start).Seconds()
	L := len(layers) - 1
	for i := 0; i < n; i++ {
		shallow := res.Agree[0][i]
		mn := res.Agree[0][i]
		for l := 1; l < L; l++ {
			shallow = max(shallow, res.Agree[l][i])
		}
		for l := 1; l <= L; l++ {
			mn = min(mn, res.Agree[l][i])
		}
		res.Gain[i] = res.Agree[L][i] - shallow
		res.Min[i] = mn
	}
	suspectClasses := shallowClusters(res, t.Labels, nc, L, p)
	seedsPer, meanDeep, warnings := DrawSeeds(t, res, res.Suspect, p)
	res.Metrics = plugin.Metrics{
		"rows": n, "classes": nc, "k": p.K, "rule": p.Rule, "layers": res.Layers,
		"embedding_as_layer": withEmb, "seeds_per_class": seedsPer, "seed_mean_deep_agreement": meanDeep,
		"warnings": warnings, "knn_seconds": knnSecs, "engine": p.Engine,
		"shallow_suspect_classes": suspectClasses, "shallow_suspects": stat.Count(res.Suspect),
	}
	return res, nil
}

// DrawSeeds sets res.Seed from res's scores (the depth gain, or the
// least agreement with rule min): in each class the rows that score
// highest, max(seed_min, seed_fraction of the class) and at most half of
// it, the rows marked in suspect (nil: none) last, never seeds while
// other rows are left. It returns the seeds per class, their mean deepest-layer
// agreement, and warnings for classes too small for their quota or whose
// seeds agree with their label under half the time at the deepest layer.
// Sift calls it with its own suspects; a caller that knows more suspects
// (the filter's class split, in replay) can draw again.
func DrawSeeds(t *feat.Table, res *Result, suspect []bool, p Params) (map[string]int, map[string]float64, []string) {
	score := res.Gain
	if p.Rule == "min" {
		score = res.Min
	}
	if suspect == nil {
		suspect = make([]bool, len(res.Seed))
	}
	deep := res.Agree[len(res.Agree)-1]
	nc, _ := t.Classes()
	byClass := make([][]int, nc)
	for i, l := range t.Labels {
		byClass[l] = append(byClass[l], i)
	}
	seedsPer := map[string]int{}
	meanDeep := map[string]float64{}
	var warnings []string
	for i := range res.Seed {
		res.Seed[i] = false
	}
	for c, rows := range byClass {
		if len(rows) == 0 {
			continue
		}
		m := max(p.SeedMin, int(p.SeedFraction*float64(len(rows))))
		if half := len(rows) / 2; m > half {
			warnings = append(warnings, fmt.Sprintf("class %d: %d rows, fewer than twice the seed quota %d; took %d seeds (half the class)", c, len(rows), m, half))
			m = half
		}
		sort.Slice(rows, func(a, b int) bool {
			ra, rb := rows[a], rows[b]
			if score[ra] != score[rb] {
				return score[ra] > score[rb]
			}
			if deep[ra] != deep[rb] {
				return deep[ra] > deep[rb]
			}
			return t.IDs[ra] < t.IDs[rb]
		})
		var sum float64
		sort.SliceStable(rows, func(a, b int) bool { return !suspect[rows[a]] && suspect[rows[b]] })
		for _, r := range rows[:m] {
			res.Seed[r] = true
			sum += float64(deep[r])
		}
		key := strconv.Itoa(c)
		seedsPer[key] = m
		if m > 0 {
			meanDeep[key] = sum / float64(m)
			if meanDeep[key] < 0.5 {
				warnings = append(warnings, fmt.Sprintf("class %d: the seeds' mean deepest-layer agreement is %.2f < 0.5", c, meanDeep[key]))
			}
		}
	}
	return seedsPer, meanDeep, warnings
}

// ShallowClass is a class whose rows sit in shallow clusters far more often
// than the other classes' do, at one layer.
type ShallowClass struct {
	Class int     `json:"class"`
	Layer string  `json:"layer"`
	Share float64 `json:"share"` // of its rows in shallow clusters at Layer
	Z     float64 `json:"z"`     // robust z of Share among the classes
}

// shallowClusters marks the rows that agree with their label already at
// a shallow layer, in the classes where that is anomalous. Low-level
// features rarely decide a class; a trigger does, wherever the poison
// carries it: a data trigger is visible from the first layer, and an
// encoder trojan whose trigger the data also carries (T3) gathers its rows
// a layer or two later. Each of the two shallowest probed layers is tested
// on its own: a row is in a shallow cluster there when its agreement
// reaches shallow_theta; a class is suspect at that layer when its share
// of such rows is shallow_z robust z (MAD floored at 0.05) and shallow_gap
// above the classes' median, and then its rows in clusters there are
// suspects. Res.Shallow is the larger of the two layers' agreements.
func shallowClusters(res *Result, labels []int32, nc, deepest int, p Params) []ShallowClass {
	shallow := []int{0}
	if deepest > 1 {
		shallow = append(shallow, 1) // the second shallowest, unless there are only two
	}
	for i := range labels {
		for _, l := range shallow {
			res.Shallow[i] = max(res.Shallow[i], res.Agree[l][i])
		}
	}
	if p.ShallowZ <= 0 {
		return nil
	}
	var out []ShallowClass
	for _, l := range shallow {
		agree := res.Agree[l]
		rows, hits := make([]int, nc), make([]int, nc)
		for i, c := range labels {
			rows[c]++
			if float64(agree[i]) >= p.ShallowTheta {
				hits[c]++
			}
		}
		var shares []float64
		share := make([]float64, nc)
		for c := range share {
			if rows[c] > 0 {
				share[c] = float64(hits[c]) / float64(rows[c])
				shares = append(shares, share[c])
			}
		}
		med, mad := stat.Robust(shares)
		mad = max(mad, 0.05)
		for c := range share {
			z := (share[c] - med) / mad
			if rows[c] == 0 || z < p.ShallowZ || share[c]-med < p.ShallowGap {
				continue
			}
			out = append(out, ShallowClass{Class: c, Layer: res.Layers[l], Share: share[c], Z: z})
			for i, lb := range labels {
				if int(lb) == c && float64(agree[i]) >= p.ShallowTheta {
					res.Suspect[i] = true
				}
			}
		}
	}
	return out
}
