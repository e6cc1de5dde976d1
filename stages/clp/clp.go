// Package clp is the Channel Lipschitzness-based Pruning baseline (Zheng
// et al., 2022), in place of filter: data-free, it scores every channel of
// the probed layers by the upper bound of its channel Lipschitz constant
// (UCLC: the spectral norm of the kernel of the last convolution writing
// it, batch norm folded) and switches off those above mean + u x std of
// their layer (replaced by 0, as pruning does).
package clp

import (
	"context"
	"encoding/json"
	"math"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Stage is the CLP baseline.
type Stage struct{}

// New returns the clp stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "clp",
		Version: "0.1.1",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training images (embedded again when channels are pruned)"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "their features (probed layers) under the encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Optional: true, Doc: "not used (CLP is data-free); accepted so that it swaps in for filter"},
		},
		Outputs: []plugin.PortSpec{
			{Name: "channels", Kind: arrowio.KindChannels, Doc: "every probed channel: keep, UCLC z within its layer"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "the training rows' embeddings under the pruned encoder"},
		},
		Params:       plugin.ParamsOf(Params{U: 3, Device: "cpu"}),
		NeedsAllRows: true,
	}
}

// Params are clp's parameters.
type Params struct {
	Encoder string  `json:"encoder" role:"encoder" doc:"the encoder (ONNX); tcore run sets it"`
	Export  string  `json:"export" role:"output" doc:"where to write the pruned encoder (ONNX)"`
	U       float64 `json:"u" range:"(0,)" doc:"prune channels whose UCLC exceeds mean + u x std of their layer"`
	Device  string  `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`
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
	ins, err := chanfilter.Open(in, p.Encoder, "")
	if err != nil {
		return nil, err
	}
	defer ins.Release()
	t := ins.Table
	layers, err := ins.Layers()
	if err != nil {
		return nil, err
	}
	uc, err := chanfilter.UCLC(ins.Model, layers)
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	v := chanfilter.NewChannelVerdict(t, "uclc")
	for _, l := range t.Layers {
		u := uc[l.Name]
		mean, sd := meanStd(u)
		for c, x := range u {
			z := (x - mean) / (sd + 1e-12)
			v.Score[l.Name][c] = float32(z)
			v.Keep[l.Name][c] = z <= p.U
		}
	}
	if _, err := ins.Write(ctx, p.Device, p.Export, v, out, progress); err != nil {
		return nil, err
	}
	masked := v.Masked(t)
	return plugin.Metrics{"channels_masked": len(masked), "masked": masked, "u": p.U, "exported": p.Export}, nil
}

func meanStd(xs []float64) (float64, float64) {
	var s, sq float64
	for _, x := range xs {
		s += x
		sq += x * x
	}
	n := float64(len(xs))
	m := s / n
	return m, math.Sqrt(math.Max(sq/n-m*m, 0))
}
