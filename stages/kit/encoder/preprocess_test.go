package encoder_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/encoder"
)

// refResample is bilinear resizing with half-pixel centres written pixel
// by pixel, every weight worked out where it is used: the definition
// Resample must reproduce bit for bit.
func refResample(p encoder.Preprocess, dst, src []float32, h, w int) {
	sx, sy := float32(w)/float32(p.W), float32(h)/float32(p.H)
	// source is the two source indices and the second one's weight of
	// output index i, at scale s over n source pixels.
	source := func(i int, s float32, n int) (int, int, float32) {
		f := (float32(i)+0.5)*s - 0.5
		if f < 0 {
			f = 0
		}
		i0 := int(f)
		return i0, min(i0+1, n-1), f - float32(i0)
	}
	for c := 0; c < 3; c++ {
		in, out := src[c*h*w:(c+1)*h*w], dst[c*p.H*p.W:(c+1)*p.H*p.W]
		for y := 0; y < p.H; y++ {
			y0, y1, ty := source(y, sy, h)
			for x := 0; x < p.W; x++ {
				x0, x1, tx := source(x, sx, w)
				a := in[y0*w+x0]*(1-tx) + in[y0*w+x1]*tx
				b := in[y1*w+x0]*(1-tx) + in[y1*w+x1]*tx
				out[y*p.W+x] = a*(1-ty) + b*ty
			}
		}
	}
}

// refLayout is Layout written value by value, pixel after pixel.
func refLayout(p encoder.Preprocess, dst, src []float32) {
	plane := p.H * p.W
	for i := 0; i < plane; i++ {
		r, g, b := src[i], src[plane+i], src[2*plane+i]
		for c := 0; c < p.C; c++ {
			v := [3]float32{r, g, b}[c]
			switch {
			case p.C == 1:
				v = 0.299*r + 0.587*g + 0.114*b
			case p.BGR:
				v = [3]float32{b, g, r}[c]
			}
			if p.Mean != nil {
				v = (v - p.Mean[c]) / p.Std[c]
			}
			if p.NHWC {
				dst[i*p.C+c] = v
			} else {
				dst[c*plane+i] = v
			}
		}
	}
}

func TestResampleAndLayoutMatchTheirDefinition(t *testing.T) {
	mean, std := []float32{0.485, 0.456, 0.406}, []float32{0.229, 0.224, 0.225}
	for _, tc := range []struct {
		h, w int // the source image
		p    encoder.Preprocess
	}{
		{32, 32, encoder.Preprocess{C: 3, H: 224, W: 224}},
		{32, 32, encoder.Preprocess{C: 3, H: 32, W: 32}},
		{224, 224, encoder.Preprocess{C: 3, H: 32, W: 32}},
		{17, 23, encoder.Preprocess{C: 3, H: 48, W: 64, NHWC: true}},
		{32, 32, encoder.Preprocess{C: 3, H: 96, W: 96, Mean: mean, Std: std}},
		{32, 32, encoder.Preprocess{C: 3, H: 40, W: 40, NHWC: true, BGR: true, Mean: mean, Std: std}},
		{32, 32, encoder.Preprocess{C: 3, H: 40, W: 40, BGR: true}},
		{28, 28, encoder.Preprocess{C: 1, H: 32, W: 32, Mean: []float32{0.5}, Std: []float32{0.25}}},
		{28, 28, encoder.Preprocess{C: 1, H: 28, W: 28}},
	} {
		t.Run(fmt.Sprintf("%dx%d to %+v", tc.h, tc.w, tc.p), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.h), uint64(tc.p.W)))
			src := make([]float32, 3*tc.h*tc.w)
			for i := range src {
				src[i] = rng.Float32()
			}
			got, want := make([]float32, tc.p.CanonicalSize()), make([]float32, tc.p.CanonicalSize())
			tc.p.Resample(got, src, tc.h, tc.w)
			refResample(tc.p, want, src, tc.h, tc.w)
			same(t, "Resample", got, want)
			in := tc.p.C * tc.p.H * tc.p.W
			lg, lw := make([]float32, in), make([]float32, in)
			tc.p.Layout(lg, want)
			refLayout(tc.p, lw, want)
			same(t, "Layout", lg, lw)
		})
	}
}

// same fails t unless got and want hold the same bits.
func same(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// BenchmarkPaintInput is what the filter's scan does to each image on a
// 224-px encoder fed 32-px data: resample to the encoder's size, then lay
// it out as the encoder's input; against the per-pixel definition.
func BenchmarkPaintInput(b *testing.B) {
	p := encoder.Preprocess{C: 3, H: 224, W: 224}
	src := make([]float32, 3*32*32)
	for i := range src {
		src[i] = float32(i%255) / 255
	}
	canon, in := make([]float32, p.CanonicalSize()), make([]float32, p.CanonicalSize())
	b.Run("stage", func(b *testing.B) {
		for range b.N {
			p.Resample(canon, src, 32, 32)
			p.Layout(in, canon)
		}
	})
	b.Run("definition", func(b *testing.B) {
		for range b.N {
			refResample(p, canon, src, 32, 32)
			refLayout(p, in, canon)
		}
	})
}
