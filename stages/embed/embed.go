// Package embed is the stage that runs an image encoder: images/v1 in,
// features/v1 out (the embedding and, per probed layer, the per-channel mean
// activation as layer.<name>). Decoding and resizing run on all cores and
// overlap with inference; an optional channels/v1 input switches channels
// off inside the graph.
package embed

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Stage is the embed stage.
type Stage struct{}

// New returns the embed stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "embed",
		Version: "0.3.0",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "images to embed"},
			{Name: "channels", Kind: arrowio.KindChannels, Optional: true, Doc: "channels with keep=false are switched off (set to 0) inside the encoder"},
		},
		Outputs: []plugin.PortSpec{{Name: "features", Kind: arrowio.KindFeatures, Doc: "embedding and layer.<name> per-channel means"}},
		Params:  plugin.ParamsOf(Params{Layers: []string{"auto"}, BatchSize: 256, Device: "cpu", ChannelOrder: "rgb", Gray: "convert"}),
	}
}

// Params are the embed stage's parameters.
type Params struct {
	Encoder      string    `json:"encoder" role:"encoder" doc:"the encoder (ONNX file); tcore run sets it from --encoder"`
	Layers       []string  `json:"layers" doc:"layers to probe: [\"auto\"], [] or names"`
	Embedding    string    `json:"embedding" doc:"embedding output (default: 'embedding' or the only rank-2 output)"`
	BatchSize    int       `json:"batch_size" range:"[1,)" doc:"images per inference batch"`
	Device       string    `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`
	Threads      int       `json:"threads" range:"[0,)" doc:"ONNX Runtime intra-op threads (0: one per core)"`
	Size         []int     `json:"size" range:"[1,)" doc:"[height, width] to resize to (default: the model's input size)"`
	Mean         []float32 `json:"mean" doc:"per-channel mean subtracted after scaling to [0,1] (default: none, the graph normalises)"`
	Std          []float32 `json:"std" range:"(0,)" doc:"per-channel std divided by (with mean)"`
	ChannelOrder string    `json:"channel_order" enum:"rgb|bgr" doc:"rgb or bgr"`
	Gray         string    `json:"gray" enum:"convert|reject" doc:"convert (repeat the grey plane) or reject grey images for a colour model"`
	Shard        []int     `json:"shard" role:"shard" range:"[0,)" doc:"[i, n]: embed only batches i, i+n, i+2n, ... of batch_size rows ([] embeds all); tcore stage concat interleaves the n outputs back into the unsharded table, byte for byte"`
}

// Check implements plugin.Checker: it validates the parameters.
func (p *Params) Check() error {
	switch {
	case p.Encoder == "":
		return plugin.BadInputf("parameter \"encoder\": no encoder given (tcore run --encoder E.onnx)")
	case p.Size != nil && len(p.Size) != 2:
		return plugin.BadInputf("parameter \"size\": %v, want [height, width]", p.Size)
	case (p.Mean == nil) != (p.Std == nil):
		return plugin.BadInputf("parameters \"mean\" and \"std\" go together")
	case len(p.Shard) != 0 && (len(p.Shard) != 2 || (arrowio.Shard{I: p.Shard[0], N: p.Shard[1], Unit: 1}).Check() != nil):
		return plugin.BadInputf("parameter \"shard\": %v, want [i, n] with 0 <= i < n (or [])", p.Shard)
	}
	return ort.CheckDevice(p.Device)
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	masks, err := chanfilter.MasksFromPort(in, "channels")
	if err != nil {
		return nil, err
	}
	model, err := encoder.Load(p.Encoder, p.Embedding)
	if err != nil {
		return nil, err
	}
	// The normalisation goes inside the graph: the features record it,
	// and every later stage (the filter's scan, the exported classifier)
	// runs the same model on the same [0, 1] pixels.
	if err := model.Normalise(encoder.Norm{Mean: p.Mean, Std: p.Std, BGR: p.ChannelOrder == "bgr"}); err != nil {
		return nil, err
	}
	enc, err := model.Session(encoder.Config{Layers: p.Layers, Embedding: p.Embedding, Masks: masks,
		ORT: ort.Options{Device: p.Device, Threads: p.Threads}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	pre := encoder.ForEncoder(enc)
	if p.Size != nil {
		if p.Size[0] != enc.H || p.Size[1] != enc.W {
			return nil, plugin.BadInputf("parameter \"size\": %v, but the encoder takes %dx%d images", p.Size, enc.H, enc.W)
		}
	}
	pre.RejectGray = p.Gray == "reject"
	if err := pre.Check(); err != nil {
		return nil, plugin.BadInput(err)
	}
	schema := enc.FeaturesSchema()
	names := make([]string, len(enc.Layers))
	for i, l := range enc.Layers {
		names[i] = l.Name
	}
	zerolog.Ctx(ctx).Info().Str("encoder", p.Encoder).Int("dim", enc.Dim).Strs("layers", names).
		Int("height", enc.H).Int("width", enc.W).Msg("encoder opened")

	r, err := in.Open("images")
	if err != nil {
		return nil, err
	}
	if len(p.Shard) == 2 {
		// The reference Open gave passes to the shard's reader.
		sh := arrowio.Shard{I: p.Shard[0], N: p.Shard[1], Unit: p.BatchSize}
		r = sh.Rows(r)
		schema = sh.Mark(schema)
	}
	defer r.Release()
	w, err := out.Create("features", schema)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	st, err := enc.Stream(ctx, r, w, pre, p.BatchSize, progress)
	if err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	secs := time.Since(start).Seconds()
	channels := make([]int, len(enc.Layers))
	for i, l := range enc.Layers {
		channels[i] = l.Channels
	}
	preprocess := "none: the graph takes RGB pixels in [0, 1]"
	if md := schema.Metadata(); md.FindKey(arrowio.PreprocessKey) >= 0 {
		preprocess = md.Values()[md.FindKey(arrowio.PreprocessKey)]
	}
	return plugin.Metrics{"rows": st.Rows, "dim": enc.Dim, "layers": names, "layer_channels": channels, "preprocess": preprocess, "height": enc.H, "width": enc.W,
		"masked_channels": maskedCount(masks), "seconds": secs, "images_per_s": float64(st.Rows) / secs,
		"device": p.Device, "infer_seconds": st.Infer.Seconds(), "spread": st.Spread, "warnings": st.Warnings()}, nil
}

func maskedCount(ms []encoder.Mask) int {
	n := 0
	for _, m := range ms {
		for _, k := range m.Keep {
			if !k {
				n++
			}
		}
	}
	return n
}
