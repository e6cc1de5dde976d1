package encoder

import (
	"fmt"

	"github.com/tcore-dev/tcore/arrowio"
)

// Preprocess turns image bytes into an encoder's input: decode, convert to
// float32 in [0, 1], resize (bilinear, half-pixel centres) to H x W,
// optionally normalise per channel ((x - mean) / std), and lay out as CHW
// or HWC in RGB or BGR order.
type Preprocess struct {
	C, H, W   int
	NHWC      bool
	Mean, Std []float32 // nil: no normalisation (the graph normalises)
	BGR       bool
	// RejectGray refuses grey images for a 3-channel model instead of
	// repeating the grey plane.
	RejectGray bool
}

// ForEncoder returns the preprocessing an encoder's input shape implies.
func ForEncoder(e *Encoder) Preprocess {
	return Preprocess{C: e.C, H: e.H, W: e.W, NHWC: e.NHWC}
}

// Check validates the parameters.
func (p Preprocess) Check() error {
	if p.C != 1 && p.C != 3 {
		return fmt.Errorf("encoder: %d input channels, want 1 or 3", p.C)
	}
	for _, v := range [][]float32{p.Mean, p.Std} {
		if v != nil && len(v) != p.C {
			return fmt.Errorf("encoder: mean/std need %d values, got %d", p.C, len(v))
		}
	}
	for _, s := range p.Std {
		if s == 0 {
			return fmt.Errorf("encoder: std of 0")
		}
	}
	return nil
}

// CanonicalSize is the number of values of an image in canonical form:
// 3 x H x W, RGB planes, values in [0, 1], whatever the encoder's channel
// count, order, normalisation and layout. The filter paints its patterns
// in this form, where a pixel means the same for every encoder.
func (p Preprocess) CanonicalSize() int { return 3 * p.H * p.W }

// Image preprocesses one image into dst (C*H*W values): Pixels, then
// Layout. The scratch slice is reused between calls (pass the same
// pointer per goroutine).
func (p Preprocess) Image(data []byte, dst []float32, scratch *[]float32) error {
	// scratch holds the canonical image, then Pixels' decoding buffer.
	need := p.CanonicalSize()
	if cap(*scratch) < need {
		*scratch = make([]float32, need)
	}
	buf := (*scratch)[:cap(*scratch)]
	canon, dec := buf[:need], buf[need:need]
	if err := p.Pixels(data, canon, &dec); err != nil {
		return err
	}
	p.Layout(dst, canon)
	if cap(dec) > len(buf)-need { // Pixels grew its buffer: keep room for it
		*scratch = make([]float32, need+cap(dec))
	}
	return nil
}

// Pixels decodes one image into dst in canonical form (CanonicalSize
// values): RGB planes resized (bilinear, half-pixel centres) to H x W, in
// [0, 1]; a grey image fills all three planes.
func (p Preprocess) Pixels(data []byte, dst []float32, scratch *[]float32) error {
	img, err := arrowio.DecodeImage(data)
	if err != nil {
		return err
	}
	if p.C == 3 && p.RejectGray && arrowio.IsGray(img) {
		return fmt.Errorf("grey image for a 3-channel model (gray: reject)")
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	need := 3 * w * h
	if cap(*scratch) < need {
		*scratch = make([]float32, need)
	}
	src := (*scratch)[:need]
	arrowio.ToCHW(src, img)
	p.Resample(dst, src, h, w)
	return nil
}

// Resample resizes an image in canonical form of h x w (src, 3*h*w
// values) to the encoder's H x W (dst, CanonicalSize values), bilinear with
// half-pixel centres as Pixels resizes: an image painted at the data's
// resolution reaches the encoder as the data's own images do.
func (p Preprocess) Resample(dst, src []float32, h, w int) {
	plane := p.H * p.W
	for c := 0; c < 3; c++ {
		in, out := src[c*h*w:(c+1)*h*w], dst[c*plane:(c+1)*plane]
		if w == p.W && h == p.H {
			copy(out, in)
		} else {
			resize(out, p.W, p.H, in, w, h)
		}
	}
}

// Layout turns an image in canonical form (src) into the encoder's input
// (dst, C*H*W values): luminance (ITU-R 601) for a 1-channel encoder, the
// channel order, the normalisation, CHW or HWC.
func (p Preprocess) Layout(dst, src []float32) {
	plane := p.H * p.W
	for c := 0; c < p.C; c++ {
		sc := c
		if p.BGR {
			sc = 2 - c
		}
		m, s := float32(0), float32(1)
		if p.Mean != nil {
			m, s = p.Mean[c], p.Std[c]
		}
		in := src[sc*plane : (sc+1)*plane]
		switch {
		case p.C == 1:
			r, g, b := src[:plane], src[plane:2*plane], src[2*plane:3*plane]
			for i := range r {
				v := 0.299*r[i] + 0.587*g[i] + 0.114*b[i]
				dst[i] = (v - m) / s
			}
		case p.NHWC:
			for i, v := range in {
				dst[i*p.C+c] = (v - m) / s
			}
		case p.Mean == nil:
			// (v - 0) / 1 is v itself.
			copy(dst[c*plane:(c+1)*plane], in)
		default:
			out := dst[c*plane : (c+1)*plane]
			for i, v := range in {
				out[i] = (v - m) / s
			}
		}
	}
}

// resize scales a w x h plane to dw x dh by bilinear interpolation with
// half-pixel centres (as PyTorch's align_corners=False). Each output
// column's source columns and weight are worked out once, not per row.
func resize(dst []float32, dw, dh int, src []float32, w, h int) {
	sx := float32(w) / float32(dw)
	sy := float32(h) / float32(dh)
	x0s, x1s, txs := make([]int, dw), make([]int, dw), make([]float32, dw)
	for x := range dw {
		fx := (float32(x)+0.5)*sx - 0.5
		if fx < 0 {
			fx = 0
		}
		x0s[x] = int(fx)
		x1s[x] = min(x0s[x]+1, w-1)
		txs[x] = fx - float32(x0s[x])
	}
	for y := 0; y < dh; y++ {
		fy := (float32(y)+0.5)*sy - 0.5
		if fy < 0 {
			fy = 0
		}
		y0 := int(fy)
		y1 := min(y0+1, h-1)
		ty := fy - float32(y0)
		r0, r1, out := src[y0*w:(y0+1)*w], src[y1*w:(y1+1)*w], dst[y*dw:(y+1)*dw]
		for x, tx := range txs {
			x0, x1 := x0s[x], x1s[x]
			a := r0[x0]*(1-tx) + r0[x1]*tx
			b := r1[x0]*(1-tx) + r1[x1]*tx
			out[x] = a*(1-ty) + b*ty
		}
	}
}
