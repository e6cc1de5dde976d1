// Package ct is the plain Confusion Training baseline (Qi et al., 2023), in
// place of expand: one head is trained on every row while confusion
// batches of the seeds carry random labels; a row the head still predicts
// as its own label is flagged as a shortcut carrier and removed. Unlike
// expand there is no benign head and no growing trusted core: every row
// not flagged is trusted.
package ct

import (
	"context"
	"encoding/json"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
)

// Stage is the confusion-training baseline.
type Stage struct{}

// New returns the ct stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "ct",
		Version: "0.2.0",
		Inputs: []plugin.PortSpec{
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings of the training rows"},
			{Name: "seeds", Kind: arrowio.KindScores, Doc: "the rows whose confusion batches carry random labels (sift.seed)"},
		},
		Outputs:      []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "ct.score (probability of the own label under confusion), ct.trusted"}},
		Params:       plugin.ParamsOf(Params{SeedColumn: "sift.seed", PCT: 0.5, ConfusionWeight: 1, HeadParams: mlp.DefaultHeadParams(20)}),
		NeedsAllRows: true,
	}
}

// Params are ct's parameters.
type Params struct {
	SeedColumn      string  `json:"seed_column" doc:"boolean column of the seeds input"`
	PCT             float32 `json:"p_ct" range:"(0,1)" doc:"flag a row predicted as its label with at least this probability"`
	ConfusionWeight float32 `json:"confusion_weight" range:"[0,)" doc:"loss weight of confusion batches"`
	mlp.HeadParams
}

// Check implements plugin.Checker.
func (p Params) Check() error { return p.HeadParams.Check() }

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
	seeds, err := feat.Bools(in, "seeds", t, p.SeedColumn)
	if err != nil {
		return nil, err
	}
	nc, err := t.CheckClasses(0)
	if err != nil {
		return nil, err
	}
	var seedRows, all []int
	for i, ok := range seeds {
		all = append(all, i)
		if ok {
			seedRows = append(seedRows, i)
		}
	}
	if len(seedRows) == 0 {
		return nil, plugin.PortError("seeds", plugin.BadInputf("no seeds in column %q", p.SeedColumn))
	}
	sizes := p.Sizes(t.Embedding.D, nc)
	tr, err := mlp.NewTrainer(sizes, p.Config())
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	h := mlp.NewHead(sizes, p.Seed)
	if _, err := tr.Fit(h, t.Embedding.X, t.Labels, all, &mlp.Confusion{Rows: seedRows, Every: 1, Weight: p.ConfusionWeight}); err != nil {
		return nil, err
	}
	sc, err := tr.Score(h, t.Embedding.X, t.Labels)
	if err != nil {
		return nil, err
	}
	v := feat.Verdict{Score: make([]float32, t.N()), Trusted: make([]bool, t.N())}
	for i := range v.Score {
		py := sc.Prob[i*nc+int(t.Labels[i])]
		v.Score[i] = py
		v.Trusted[i] = py < p.PCT
	}
	return feat.WriteVerdict(out, "ct", t, v)
}
