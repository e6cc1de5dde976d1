// Package encoder runs any image encoder (ONNX) in ONNX Runtime for tcore:
// Load analyses a model once (the image input, the embedding, candidate
// probe layers of an arbitrary CNN or ViT); Model.Session prepares each
// variant a stage runs: probed layers pooled per channel inside the graph
// (full feature maps never leave ONNX Runtime), channels switched off with
// masks built in or given at run time; and an Encoder session embeds
// batches of images.
package encoder

import (
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Layer is a probed layer: its readable name, the graph tensor, its rank
// and its channel count.
type Layer struct {
	Name     string
	Tensor   string
	Rank     int
	Channels int
	// Dims is one sample's shape ([C, H, W] or [T, C]).
	Dims []int64
}

// Mask switches channels off: for the layer (readable name or tensor name),
// channel c becomes keep[c] ? x : fill[c] (fill nil: 0). Channels past the
// end of Keep are kept.
type Mask struct {
	Layer string
	Keep  []bool
	Fill  []float32
	// Cap, when set, caps every channel from above first: channel c
	// becomes min(x, Cap[c]) before the mask applies (a trigger drives
	// some channels past anything clean data shows).
	Cap []float32
	// Weights, when set (channels x channels, row c for channel c), fill
	// a switched-off channel c with Fill[c] + sum_j Weights[c][j]*x_j over
	// the kept channels j (a regression on them) instead of Fill[c].
	Weights []float32
}

// Config says which variant of an encoder a session runs.
type Config struct {
	// Layers to probe: names (readable or tensor names), or ["auto"].
	Layers []string
	// Embedding names the embedding output for Open (default: the output
	// called "embedding", else the only rank-2 output); Model.Session
	// uses the model's.
	Embedding string
	// Masks to bake into the graph.
	Masks []Mask
	// RawLayers makes Embed return the probed layers' activations
	// themselves ([n, Dims...]) instead of their per-channel means.
	RawLayers bool
	// MaskInputs are layers whose channels are switched off at run time,
	// per sample (see Encoder.Masks): each entry's Layer, Fill and Cap are
	// used, its Keep is not.
	MaskInputs []Mask
	// PreMask makes Embed also return, after the probed layers, each
	// MaskInputs layer's values before its run-time mask ([n, Dims...],
	// capped when the layer has a Cap): what a session From that layer
	// takes as input.
	PreMask bool
	// From, when set, names a layer where the session starts: its input is
	// that layer's values ([n, Dims...], as PreMask returns them) instead of
	// the image, and only the network after it runs. Masks and MaskInputs
	// of layers before From are left out (their effect is in the input);
	// From's own run-time mask applies. A layer that does not cut the
	// network in two (a skip connection passes around it) is an error.
	From string
	ORT  ort.Options
}

// Encoder is a session of one variant of a Model (see Model.Session).
type Encoder struct {
	// Model is what the session was made from.
	Model     *Model
	Input     onnxgraph.Input
	C, H, W   int
	NHWC      bool
	Embedding string
	Dim       int
	// Layers are the probed layers, in output order.
	Layers []Layer
	// Switchable are the layers of Config.MaskInputs, in order (with
	// Config.From, those from From on).
	Switchable []Layer
	// From is the layer the session starts at (Config.From), or zero.
	From Layer
	sess *ort.Session
}

// Open loads the encoder at path and prepares one session of it: a
// shorthand for Load and Model.Session, for a stage that needs one variant.
func Open(path string, cfg Config) (*Encoder, error) {
	m, err := Load(path, cfg.Embedding)
	if err != nil {
		return nil, err
	}
	return m.Session(cfg)
}

// ImageSize is the number of float32 values of one preprocessed image
// (with Config.From, of one sample of that layer).
func (e *Encoder) ImageSize() int {
	if e.From.Tensor != "" {
		n := 1
		for _, d := range e.From.Dims {
			n *= int(d)
		}
		return n
	}
	return e.C * e.H * e.W
}

func (e *Encoder) inDims() [][]int64 {
	dims := [][]int64{{int64(e.C), int64(e.H), int64(e.W)}}
	switch {
	case e.From.Tensor != "":
		dims = [][]int64{e.From.Dims}
	case e.NHWC:
		dims = [][]int64{{int64(e.H), int64(e.W), int64(e.C)}}
	}
	for _, l := range e.Switchable {
		c := int64(l.Channels)
		switch l.Rank {
		case 4:
			dims = append(dims, []int64{c, 1, 1})
		case 3:
			dims = append(dims, []int64{1, c})
		default:
			dims = append(dims, []int64{c})
		}
	}
	return dims
}

// Batch returns the input buffer of a batch of n images (n*ImageSize
// values, in the model's layout) to fill before Embed(n).
func (e *Encoder) Batch(n int) ([]float32, error) {
	b, err := e.sess.Buffers(int64(n), e.inDims())
	if err != nil {
		return nil, err
	}
	return b[0], nil
}

// Masks returns, for a batch of n, the run-time mask of each Switchable
// layer ([n*Channels]: 1 keeps sample i's channel c, 0 switches it to the
// layer's fill). They are reused between batches of the same n: set every
// value before each Embed(n).
func (e *Encoder) Masks(n int) ([][]float32, error) {
	b, err := e.sess.Buffers(int64(n), e.inDims())
	if err != nil {
		return nil, err
	}
	return b[1:], nil
}

// Embed runs the batch of n filled through Batch and returns the
// embeddings ([n*Dim]) and each layer's per-channel means ([n*Channels]),
// valid until the next Embed of the same n.
func (e *Encoder) Embed(n int) (emb []float32, layers [][]float32, err error) {
	outs, err := e.sess.Run(int64(n))
	if err != nil {
		return nil, nil, err
	}
	return outs[0], outs[1:], nil
}

// Close releases the session.
func (e *Encoder) Close() {
	if e.sess != nil {
		e.sess.Close()
	}
}
