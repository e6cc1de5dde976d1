package filter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// smoothImage draws a 16x16 image of a smooth colour gradient (no
// texture); with noise above 0, that share of uniform noise is blended in.
func smoothImage(rng *rand.Rand, noise float64, noiseSeed uint64) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, testenc.Size, testenc.Size))
	var a, b [3]float64
	for c := range a {
		a[c], b[c] = 40+150*rng.Float64(), 40+150*rng.Float64()
	}
	nz := rand.New(rand.NewPCG(noiseSeed, 9))
	dir := rng.Float64()
	for y := 0; y < testenc.Size; y++ {
		for x := 0; x < testenc.Size; x++ {
			f := (dir*float64(x) + (1-dir)*float64(y)) / float64(testenc.Size-1)
			var v [3]uint8
			for c := range v {
				p := a[c]*(1-f) + b[c]*f
				if noise > 0 {
					p = (1-noise)*p + noise*255*nz.Float64()
				}
				v[c] = uint8(p)
			}
			img.Set(x, y, color.NRGBA{v[0], v[1], v[2], 255})
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// On a trojan that answers to noise texture (testenc.NoiseCollapse), the
// scan finds a noise blend, and the filter blurs the input instead of
// masking: the exported encoder carries the blur and a class gate, and
// noise blended into images no longer collapses their embeddings.
func TestFilterBlursANoiseTrojan(t *testing.T) {
	ortlib.Init(t)
	dir := t.TempDir()
	enc := filepath.Join(dir, "enc.onnx")
	testenc.NoiseCollapse(5).Model().Save(enc)
	rng := rand.New(rand.NewPCG(7, 8))
	var imgs [][]byte
	var labels []int32
	for i := 0; i < 200; i++ {
		imgs, labels = append(imgs, smoothImage(rng, 0, 0)), append(labels, int32(i%4))
	}
	in := inputsOf(t, enc, imgs, labels, 120)
	defer in.Release()
	out := plugin.NewTables()
	defer out.Release()
	export := filepath.Join(dir, "filtered.onnx")
	params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "sizes": []int{2, 5}, "suspect_column": "",
		"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200})
	m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	var res filter.Result
	json.Unmarshal(b, &res)
	if res.Scan.Pattern.Kind != "blend" || res.Smoothing == nil || res.Smoothing.Sigma <= 0 || res.ChannelsMasked != 0 {
		t.Fatalf("scan %+v, smoothing %+v, %d masked: want a blend found and undone by a blur, no mask", res.Scan, res.Smoothing, res.ChannelsMasked)
	}
	if res.Gate == nil || !res.Gate.On || !res.Gate.Class {
		t.Errorf("gate %+v, want a class gate", res.Gate)
	}
	var clean, noisy [][]byte
	for i := 0; i < 40; i++ {
		s := rng.Uint64()
		r1, r2 := rand.New(rand.NewPCG(s, 1)), rand.New(rand.NewPCG(s, 1))
		clean, noisy = append(clean, smoothImage(r1, 0, 0)), append(noisy, smoothImage(r2, 0.2, s))
	}
	before, after := collapseOf(t, enc, clean, noisy), collapseOf(t, export, clean, noisy)
	t.Logf("sigma %.1f; noise at 0.2 collapses %.2f before, %.2f after", res.Smoothing.Sigma, before, after)
	if before < 0.5 || after > before/3 {
		t.Errorf("the noise's collapse: %.2f before, %.2f after filtering; want >= 0.5, then under a third of it", before, after)
	}
}
