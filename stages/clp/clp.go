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
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
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
		Version: "0.1.0",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training images (embedded again when channels are pruned)"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "their features (probed layers) under the encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Optional: true, Doc: "not used (CLP is data-free); accepted so that it swaps in for filter"},
		},
		Outputs: []plugin.PortSpec{
			{Name: "channels", Kind: arrowio.KindChannels, Doc: "every probed channel: keep, UCLC z within its layer"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "the training rows' embeddings under the pruned encoder"},
		},
		Params: []plugin.ParamSpec{
			{Name: "encoder", Default: json.RawMessage(`""`), Doc: "the encoder (ONNX); tcore run sets it"},
			{Name: "export", Default: json.RawMessage(`""`), Doc: "where to write the pruned encoder (ONNX)"},
			{Name: "u", Default: json.RawMessage(`3.0`), Doc: "prune channels whose UCLC exceeds mean + u x std of their layer"},
			{Name: "device", Default: json.RawMessage(`"cpu"`), Doc: "cpu, cuda or cuda:N"},
		},
		NeedsAllRows: true,
	}
}

// Params are clp's parameters.
type Params struct {
	Encoder string  `json:"encoder"`
	Export  string  `json:"export"`
	U       float64 `json:"u"`
	Device  string  `json:"device"`
}

// Check implements plugin.Checker.
func (p Params) Check() error {
	if p.Encoder == "" {
		return plugin.BadInputf("parameter \"encoder\": no encoder given")
	}
	if p.U <= 0 {
		return plugin.BadInputf("parameter \"u\": %v, want > 0", p.U)
	}
	return ort.CheckDevice(p.Device)
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	if err := ort.Init(""); err != nil {
		return nil, err
	}
	t, err := feat.Open(in, "features")
	if err != nil {
		return nil, err
	}
	images, err := encoder.HoldImages(in, "images")
	if err != nil {
		return nil, err
	}
	defer images.Release()
	var names []string
	for _, l := range t.Layers {
		names = append(names, l.Name)
	}
	enc, err := encoder.Open(p.Encoder, encoder.Config{Layers: names, ORT: ort.Options{Device: p.Device}})
	if err != nil {
		return nil, err
	}
	layers := enc.Layers
	model := enc.Model()
	enc.Close()
	v := encoder.NewChannelVerdict(t, "uclc")
	for _, l := range layers {
		w, dims, scale, err := model.WritingConv(l.Tensor)
		if err != nil {
			return nil, plugin.BadInputf("layer %s: %v", l.Name, err)
		}
		if int(dims[0]) != len(v.Keep[l.Name]) {
			return nil, plugin.BadInputf("layer %s: its convolution writes %d channels, the features have %d", l.Name, dims[0], len(v.Keep[l.Name]))
		}
		u := uclc(w, dims, scale)
		mean, sd := meanStd(u)
		for c, x := range u {
			z := (x - mean) / (sd + 1e-12)
			v.Score[l.Name][c] = float32(z)
			v.Keep[l.Name][c] = z <= p.U
		}
	}
	if err := encoder.WriteFiltered(ctx, p.Encoder, p.Device, p.Export, t, images, v, out, progress); err != nil {
		return nil, err
	}
	masked := v.Masked(t)
	return plugin.Metrics{"channels_masked": len(masked), "masked": masked, "u": p.U, "exported": p.Export}, nil
}

// uclc returns each output channel's spectral norm of its kernel (a cin x
// kh*kw matrix), times its batch-norm scale, by power iteration.
func uclc(w []float32, dims []int64, scale []float32) []float64 {
	cout, per := int(dims[0]), 1
	for _, d := range dims[1:] {
		per *= int(d)
	}
	cin := int(dims[1])
	k := per / max(cin, 1)
	out := make([]float64, cout)
	for c := 0; c < cout; c++ {
		m := w[c*per : (c+1)*per] // cin rows of k values
		v := make([]float64, k)
		for j := range v {
			v[j] = 1 / math.Sqrt(float64(k))
		}
		var sigma float64
		for it := 0; it < 50; it++ {
			// u = M v, v = M^T u / |M^T u|
			u := make([]float64, cin)
			for i := 0; i < cin; i++ {
				for j := 0; j < k; j++ {
					u[i] += float64(m[i*k+j]) * v[j]
				}
			}
			nv := make([]float64, k)
			for i := 0; i < cin; i++ {
				for j := 0; j < k; j++ {
					nv[j] += float64(m[i*k+j]) * u[i]
				}
			}
			var norm float64
			for _, x := range nv {
				norm += x * x
			}
			norm = math.Sqrt(norm)
			if norm == 0 {
				break
			}
			sigma = math.Sqrt(norm)
			for j := range v {
				v[j] = nv[j] / norm
			}
		}
		out[c] = sigma * float64(scale[c])
	}
	return out
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
