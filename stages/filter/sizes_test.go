package filter

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
)

// Patterns are painted at the data's resolution when the images are at
// least 1.5 times smaller than the encoder's input, else at the input's.
func TestUpscale(t *testing.T) {
	cases := []struct {
		name         string
		h, w, dh, dw int
		want         float64
	}{
		{"same size", 32, 32, 32, 32, 1},
		{"data larger", 32, 32, 64, 64, 1},
		{"a little smaller", 32, 32, 25, 25, 1},
		{"32-px data, 224-px model", 224, 224, 32, 32, 7},
		{"16-px data, 32-px model", 32, 32, 16, 16, 2},
		{"no size known", 224, 224, 0, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := upscale(tc.h, tc.w, tc.dh, tc.dw); got != tc.want {
				t.Fatalf("scale %g, want %g", got, tc.want)
			}
		})
	}
}

// On upscaled data a painted pattern reaches the encoder exactly as the
// same image would if it carried the pattern in its own pixels: painted at
// the data's size, then resized as embed resizes every image. No edge or
// texture finer than one data pixel reaches the encoder.
func TestPaintAtDataResolution(t *testing.T) {
	const side, model = 8, 56
	data := tabletest.PNG(side, side, 3)
	cases := []struct {
		name string
		p    Pattern
		nhwc bool
	}{
		{"solid", Pattern{Kind: "solid", Size: 3, Row: 1, Col: 4, Colors: [2][3]float32{{1, 0, 1}}}, false},
		{"checker", Pattern{Kind: "checker", Size: 4, Row: 4, Col: 0, Colors: [2][3]float32{{1, 1, 0}, {0, 0, 1}}}, false},
		{"noise patch", Pattern{Kind: "noise", Size: 5, Row: 2, Col: 2, NoiseSeed: 9}, false},
		{"checker, NHWC", Pattern{Kind: "checker", Size: 4, Row: 4, Col: 0, Colors: [2][3]float32{{1, 1, 0}, {0, 0, 1}}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pre := encoder.Preprocess{C: 3, H: model, W: model, NHWC: tc.nhwc}
			b := &bench{pre: pre, canvas: encoder.Preprocess{C: 3, H: side, W: side}, sizeScale: upscale(model, model, side, side)}
			var scratch, resampled []float32
			canon := make([]float32, b.canvas.CanonicalSize())
			if err := b.canvas.Pixels(data, canon, &scratch); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, 3*model*model)
			b.paint(got, canon, &tc.p, &resampled)

			// The data image with the pattern in its pixels (canon now holds
			// it: every value is a multiple of 1/255), through embed's path.
			img := image.NewRGBA(image.Rect(0, 0, side, side))
			for y := 0; y < side; y++ {
				for x := 0; x < side; x++ {
					v := func(c int) uint8 { return uint8(math.Round(float64(canon[c*side*side+y*side+x]) * 255)) }
					img.Set(x, y, color.RGBA{v(0), v(1), v(2), 255})
				}
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				t.Fatal(err)
			}
			want := make([]float32, 3*model*model)
			if err := pre.Image(buf.Bytes(), want, &scratch); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-5 {
					t.Fatalf("value %d: painted %g, the data image carrying the pattern %g", i, got[i], want[i])
				}
			}
			clean := make([]float32, 3*model*model)
			if err := pre.Image(data, clean, &scratch); err != nil {
				t.Fatal(err)
			}
			changed := 0
			for i := range clean {
				if clean[i] != got[i] {
					changed++
				}
			}
			if changed == 0 {
				t.Fatal("the pattern changed nothing")
			}
		})
	}
}

// The scan's images, painted on every core on upscaled data, are each
// what painting that image alone gives.
func TestInputsPaintEachImageAsAlone(t *testing.T) {
	const side, model, n = 8, 56, 5
	canvas := encoder.Preprocess{C: 3, H: side, W: side}
	for _, tc := range []struct {
		name  string
		model int
	}{{"upscaled", model}, {"same size", side}} {
		t.Run(tc.name, func(t *testing.T) {
			pre := encoder.Preprocess{C: 3, H: tc.model, W: tc.model}
			b := &bench{pre: pre, canvas: canvas, sizeScale: upscale(tc.model, tc.model, side, side), n: n}
			rng := rand.New(rand.NewPCG(3, 4))
			b.x = make([]float32, n*canvas.CanonicalSize())
			for i := range b.x {
				b.x[i] = rng.Float32()
			}
			pat := &Pattern{Kind: "checker", Size: 4, Row: 2, Col: 3, Colors: [2][3]float32{{1, 1, 0}, {0, 0, 1}}}
			size := pre.C * pre.H * pre.W
			got := make([]float32, n*size)
			b.inputs(got, pat)
			var scratch []float32
			for i := 0; i < n; i++ {
				canon := append([]float32(nil), b.x[i*canvas.CanonicalSize():(i+1)*canvas.CanonicalSize()]...)
				want := make([]float32, size)
				b.paint(want, canon, pat, &scratch)
				for j := range want {
					if math.Float32bits(got[i*size+j]) != math.Float32bits(want[j]) {
						t.Fatalf("image %d, value %d: %v, painted alone %v", i, j, got[i*size+j], want[j])
					}
				}
			}
		})
	}
}
