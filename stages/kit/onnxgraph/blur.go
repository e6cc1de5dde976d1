package onnxgraph

import (
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// SmoothMeta is the metadata key under which a model records the Gaussian
// blur InsertInputBlur put in front of it (its sigma, in input pixels).
const SmoothMeta = "tcore.smooth"

// GaussianKernel returns the normalised 1-D Gaussian kernel of standard
// deviation sigma (in pixels), 2*ceil(2.5 sigma)+1 taps.
func GaussianKernel(sigma float64) []float32 {
	r := int(math.Ceil(2.5 * sigma))
	k := make([]float32, 2*r+1)
	var sum float64
	w := make([]float64, len(k))
	for i := range w {
		d := float64(i - r)
		w[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += w[i]
	}
	for i := range k {
		k[i] = float32(w[i] / sum)
	}
	return k
}

// InsertInputBlur puts a Gaussian blur of standard deviation sigma (input
// pixels) between the image input (channels channels, NHWC when nhwc) and
// everything that reads it: a horizontal and a vertical depthwise
// convolution, the borders reflected, so that each channel is blurred on
// its own. A per-channel affine normalisation commutes with it, so it may
// sit before or after one. The sigma is recorded in the metadata
// (SmoothMeta). It needs opset 11 or later (Pad with its pads as an input).
func (m *Model) InsertInputBlur(nhwc bool, channels int, sigma float64) error {
	if !(sigma > 0) || math.IsInf(sigma, 0) {
		return fmt.Errorf("onnxgraph: %s: blur sigma %v, want > 0", m.source, sigma)
	}
	if m.Opset() < 11 {
		return fmt.Errorf("onnxgraph: %s: %w: a blur needs opset 11 or later, the model has %d", m.source, ErrModel, m.Opset())
	}
	in, err := m.ImageInput()
	if err != nil {
		return err
	}
	k := GaussianKernel(sigma)
	r := int64(len(k) / 2)
	c := int64(channels)
	d := m.detach(in.Name)
	x := d.from
	if nhwc {
		x = m.AddOp("Transpose", []string{x}, intsAttr("perm", 0, 3, 1, 2))
	}
	pads := m.fresh("blur_pads")
	m.addInt64Init(pads, []int64{0, 0, r, r, 0, 0, r, r})
	x = m.AddOp("Pad", []string{x, pads}, strAttr("mode", "reflect"))
	wx := make([]float32, 0, int(c)*len(k))
	for i := int64(0); i < c; i++ {
		wx = append(wx, k...)
	}
	kx := m.AddConst([]int64{c, 1, 1, int64(len(k))}, wx)
	ky := m.AddConst([]int64{c, 1, int64(len(k)), 1}, wx)
	x = m.AddOp("Conv", []string{x, kx}, intAttr("group", c), intsAttr("kernel_shape", 1, int64(len(k))))
	out := d.to
	if nhwc {
		out = m.fresh("blurred")
	}
	m.addNode("Conv", []string{x, ky}, []string{out}, intAttr("group", c), intsAttr("kernel_shape", int64(len(k)), 1))
	if nhwc {
		m.addNode("Transpose", []string{out}, []string{d.to}, intsAttr("perm", 0, 2, 3, 1))
	}
	m.SetMeta(SmoothMeta, fmt.Sprintf("%g", sigma))
	return m.sort()
}

func strAttr(name, v string) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_STRING, S: []byte(v)}
}
