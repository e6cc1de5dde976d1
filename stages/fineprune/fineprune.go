// Package fineprune is the pruning half of Fine-Pruning (Liu, Dolan-Gavitt
// and Garg, 2018), in place of filter: backdoor neurons tend to stay
// dormant on clean inputs, so the channels of the deepest probed layer with
// the lowest mean activation on trusted rows are switched off (replaced by
// 0). The fine-tuning half is the head trained afterwards.
package fineprune

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Stage is the fine-pruning baseline.
type Stage struct{}

// New returns the fineprune stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "fineprune",
		Version: "0.1.1",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training images (embedded again when channels are pruned)"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "their features (probed layers) under the encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Optional: true, Doc: "rows taken for clean (expand.trusted); without it, every row"},
		},
		Outputs: []plugin.PortSpec{
			{Name: "channels", Kind: arrowio.KindChannels, Doc: "every probed channel: keep, score = minus the mean activation"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "the training rows' embeddings under the pruned encoder"},
		},
		Params:       plugin.ParamsOf(Params{Prune: 0.2, TrustedColumn: "expand.trusted", Device: "cpu"}),
		NeedsAllRows: true,
	}
}

// Params are fineprune's parameters.
type Params struct {
	Encoder       string  `json:"encoder" role:"encoder" doc:"the encoder (ONNX); tcore run sets it"`
	Export        string  `json:"export" role:"output" doc:"where to write the pruned encoder (ONNX)"`
	Layer         string  `json:"layer" doc:"the probed layer to prune (default: the deepest)"`
	Prune         float64 `json:"prune" range:"(0,1)" doc:"share of the layer's channels pruned, least active first"`
	TrustedColumn string  `json:"trusted_column" doc:"boolean column of the trusted input"`
	Device        string  `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`
}

// Check implements plugin.Checker.
func (p Params) Check() error {
	if p.Encoder == "" {
		return plugin.BadInputf("parameter \"encoder\": no encoder given")
	}
	return ort.CheckDevice(p.Device)
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	ins, err := chanfilter.Open(in, p.Encoder, p.TrustedColumn)
	if err != nil {
		return nil, err
	}
	defer ins.Release()
	t, trusted := ins.Table, ins.Trusted // trusted nil: every row
	layer := t.Layers[len(t.Layers)-1].Name
	if p.Layer != "" {
		layer = p.Layer
	}
	means, ok := t.LayerMeans(trusted)[layer]
	if !ok {
		return nil, plugin.BadInputf("parameter \"layer\": %q is not a probed layer", p.Layer)
	}
	v := chanfilter.NewChannelVerdict(t, "dormant")
	order := make([]int, len(means))
	for c := range order {
		order[c] = c
		v.Score[layer][c] = -means[c]
	}
	sort.SliceStable(order, func(a, b int) bool { return means[order[a]] < means[order[b]] })
	for _, c := range order[:int(p.Prune*float64(len(means)))] {
		v.Keep[layer][c] = false
	}
	if _, err := ins.Write(ctx, p.Device, p.Export, v, out, progress); err != nil {
		return nil, err
	}
	masked := v.Masked(t)
	return plugin.Metrics{"channels_masked": len(masked), "masked": masked, "layer": layer, "exported": p.Export}, nil
}
