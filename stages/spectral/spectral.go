// Package spectral is the Spectral Signatures baseline (Tran, Li and Madry,
// 2018), in place of sift and expand: in each class, the rows whose
// embedding projects furthest onto the top singular vector of the class's
// centred embeddings are removed (1.5 x the expected poison rate of the
// class); the rest are trusted.
package spectral

import (
	"context"
	"encoding/json"
	"math"
	"sort"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the spectral baseline.
type Stage struct{}

// New returns the spectral stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:         "spectral",
		Version:      "0.1.0",
		Inputs:       []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings of the training rows"}},
		Outputs:      []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "spectral.score (squared projection), spectral.trusted"}},
		Params:       plugin.ParamsOf(Params{Eps: 0.1, Seed: 1}),
		NeedsAllRows: true,
	}
}

// Params are spectral's parameters.
type Params struct {
	Eps  float64 `json:"eps" range:"(0,0.66)" doc:"expected poison rate; 1.5 x eps of each class is removed"`
	Seed uint64  `json:"seed" role:"seed" doc:"random seed of the power iteration"`
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
		comps := stat.Components(x, d, rows, 1, p.Seed)
		proj := stat.Project(x, d, rows, stat.Mean(x, d, rows), comps)
		for k, i := range rows {
			v.Score[i] = float32(proj[k][0] * proj[k][0])
		}
		order := append([]int(nil), rows...)
		sort.SliceStable(order, func(a, b int) bool { return v.Score[order[a]] > v.Score[order[b]] })
		cut := int(math.Ceil(1.5 * p.Eps * float64(len(rows))))
		for k, i := range order {
			v.Trusted[i] = k >= cut
		}
	}
	return feat.WriteVerdict(out, "spectral", t, v)
}
