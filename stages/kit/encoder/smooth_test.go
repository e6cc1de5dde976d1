package encoder_test

import (
	"math"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// blurCHW is the reference blur: each channel of a CHW image convolved
// with the Gaussian kernel along rows, then columns, borders reflected
// (index -1 reads index 1).
func blurCHW(x []float32, c, h, w int, sigma float64) []float32 {
	k := onnxgraph.GaussianKernel(sigma)
	r := len(k) / 2
	refl := func(i, n int) int {
		if i < 0 {
			return -i
		}
		if i >= n {
			return 2*(n-1) - i
		}
		return i
	}
	tmp, out := make([]float32, len(x)), make([]float32, len(x))
	for ch := 0; ch < c; ch++ {
		p := x[ch*h*w : (ch+1)*h*w]
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				var s float32
				for j, kv := range k {
					s += kv * p[y*w+refl(xx+j-r, w)]
				}
				tmp[ch*h*w+y*w+xx] = s
			}
		}
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				var s float32
				for j, kv := range k {
					s += kv * tmp[ch*h*w+refl(y+j-r, h)*w+xx]
				}
				out[ch*h*w+y*w+xx] = s
			}
		}
	}
	return out
}

// hwc lays a CHW image out channels last.
func hwc(x []float32, c, h, w int) []float32 {
	out := make([]float32, len(x))
	for ch := 0; ch < c; ch++ {
		for i := 0; i < h*w; i++ {
			out[i*c+ch] = x[ch*h*w+i]
		}
	}
	return out
}

// A smoothed model embeds an image as the model embeds the image blurred
// in Go, for channels-first and channels-last inputs; the model it came
// from does not change, and the blur shows in the metadata.
func TestSmoothedBlursTheInput(t *testing.T) {
	ortlib.Init(t)
	const sigma = 0.8
	n, s := testenc.Size, testenc.Size
	for _, tc := range []struct {
		name string
		g    *onnxgraph.Model
		nhwc bool
	}{
		{"NCHW", testenc.Clean(3).Model(), false},
		{"NHWC", testenc.Clean(3).ModelNHWC(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := encoder.FromGraph(tc.g, "")
			if err != nil {
				t.Fatal(err)
			}
			sm, err := m.Smoothed(sigma)
			if err != nil {
				t.Fatal(err)
			}
			if sm.Smoothing() != sigma || m.Smoothing() != 0 {
				t.Fatalf("smoothing: %v on the copy, %v on the model; want %v and 0", sm.Smoothing(), m.Smoothing(), sigma)
			}
			imgs := images(4, 11)
			var raw, blurred [][]float32
			for _, im := range imgs {
				b := blurCHW(im, 3, n, s, sigma)
				if tc.nhwc {
					im, b = hwc(im, 3, n, s), hwc(b, 3, n, s)
				}
				raw, blurred = append(raw, im), append(blurred, b)
			}
			es, err := sm.Session(encoder.Config{Layers: []string{}})
			if err != nil {
				t.Fatal(err)
			}
			defer es.Close()
			e, err := m.Session(encoder.Config{Layers: []string{}})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			got, _ := embed(t, es, raw)
			want, _ := embed(t, e, blurred)
			plain, _ := embed(t, e, raw)
			var diff, moved float64
			for i := range got {
				diff = math.Max(diff, math.Abs(float64(got[i]-want[i])))
				moved = math.Max(moved, math.Abs(float64(plain[i]-want[i])))
			}
			if diff > 1e-4 {
				t.Errorf("smoothed model vs model on Go-blurred images: max difference %g", diff)
			}
			if moved < 1e-2 {
				t.Errorf("the blur changes the embeddings by at most %g: the test would not see a missing blur", moved)
			}
		})
	}
	m, err := encoder.FromGraph(testenc.Clean(3).Model(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []float64{0, -1, math.Inf(1), math.NaN()} {
		if _, err := m.Smoothed(bad); err == nil {
			t.Errorf("sigma %v: no error", bad)
		}
	}
}
