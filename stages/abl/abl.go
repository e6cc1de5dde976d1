// Package abl is the loss-isolation half of Anti-Backdoor Learning (Li et
// al., 2021), in place of expand: backdoor shortcuts are learned faster
// than the task, so after a few epochs on every row the rows with the
// lowest loss are isolated as suspected poison and removed; the rest are
// trusted. (ABL's unlearning step has no counterpart here: the head that
// follows is trained on the trusted rows only.)
package abl

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
)

// Stage is the loss-isolation baseline.
type Stage struct{}

// New returns the abl stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:         "abl",
		Version:      "0.2.0",
		Inputs:       []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings of the training rows"}},
		Outputs:      []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "abl.score (minus the early loss), abl.trusted"}},
		Params:       plugin.ParamsOf(Params{Isolate: 0.1, HeadParams: mlp.DefaultHeadParams(5)}),
		NeedsAllRows: true,
	}
}

// Params are abl's parameters.
// (epochs: before the losses are read).
type Params struct {
	Isolate float64 `json:"isolate" range:"(0,1)" doc:"share of all rows isolated (lowest early loss)"`
	mlp.HeadParams
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
	nc, err := t.CheckClasses(0)
	if err != nil {
		return nil, err
	}
	all := make([]int, t.N())
	for i := range all {
		all[i] = i
	}
	sizes := p.Sizes(t.Embedding.D, nc)
	cfg := p.Config()
	// Not class-balanced: ABL reads the losses of plain training.
	cfg.Balanced, cfg.MinSteps = false, 0
	tr, err := mlp.NewTrainer(sizes, cfg)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	h := mlp.NewHead(sizes, p.Seed)
	if _, err := tr.Fit(h, t.Embedding.X, t.Labels, all, nil); err != nil {
		return nil, err
	}
	sc, err := tr.Score(h, t.Embedding.X, t.Labels)
	if err != nil {
		return nil, err
	}
	v := feat.Verdict{Score: make([]float32, t.N()), Trusted: make([]bool, t.N())}
	order := append([]int(nil), all...)
	sort.SliceStable(order, func(a, b int) bool { return sc.Loss[order[a]] < sc.Loss[order[b]] })
	cut := int(p.Isolate * float64(t.N()))
	for k, i := range order {
		v.Score[i] = -sc.Loss[i]
		v.Trusted[i] = k >= cut
	}
	return feat.WriteVerdict(out, "abl", t, v)
}
