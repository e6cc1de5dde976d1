// Package actclust is the Activation Clustering baseline (Chen et al.,
// 2018), in place of sift and expand: in each class, the embeddings are
// reduced to their top principal components and split in two by 2-means;
// a cluster holding less than a threshold share of the class is taken for
// poison and removed; the rest are trusted.
package actclust

import (
	"context"
	"encoding/json"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the activation-clustering baseline.
type Stage struct{}

// New returns the actclust stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:         "actclust",
		Version:      "0.1.0",
		Inputs:       []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings of the training rows"}},
		Outputs:      []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "actclust.score (1 - the share of the class in the row's cluster), actclust.trusted"}},
		Params:       plugin.ParamsOf(Params{Components: 10, MaxShare: 0.35, Seed: 1}),
		NeedsAllRows: true,
	}
}

// Params are actclust's parameters.
type Params struct {
	Components int     `json:"components" range:"[1,)" doc:"principal components the clustering sees"`
	MaxShare   float64 `json:"max_share" range:"(0,0.5]" doc:"a cluster with less than this share of its class is removed"`
	Seed       uint64  `json:"seed" role:"seed" doc:"random seed of the power iteration"`
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
	x, d := t.Embedding.X, t.Embedding.D
	v := feat.Verdict{Score: make([]float32, t.N()), Trusted: make([]bool, t.N())}
	for _, rows := range t.ByClass() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		comps := stat.Components(x, d, rows, min(p.Components, d), p.Seed)
		assign := stat.TwoMeans(stat.Project(x, d, rows, stat.Mean(x, d, rows), comps))
		size := [2]int{}
		for _, c := range assign {
			size[c]++
		}
		for k, i := range rows {
			share := float64(size[assign[k]]) / float64(len(rows))
			v.Score[i] = float32(1 - share)
			v.Trusted[i] = share >= p.MaxShare
		}
	}
	return feat.WriteVerdict(out, "actclust", t, v)
}
