package attack

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math/rand/v2"
	"strings"
	"testing"
)

// noisy returns a deterministic random w x h image.
func noisy(w, h int, seed uint64) *image.NRGBA {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetNRGBA(x, y, color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255})
		}
	}
	return img
}

func mustTrigger(t *testing.T, spec string) Trigger {
	t.Helper()
	tr, err := ParseTrigger([]byte(spec), "trigger")
	if err != nil {
		t.Fatalf("%s: %v", spec, err)
	}
	return tr
}

// changed returns the pixels (x, y) whose RGB differ.
func changed(a, b *image.NRGBA) map[[2]int]bool {
	out := map[[2]int]bool{}
	r := a.Bounds()
	for y := 0; y < r.Dy(); y++ {
		for x := 0; x < r.Dx(); x++ {
			if a.NRGBAAt(x, y) != b.NRGBAAt(x, y) {
				out[[2]int{x, y}] = true
			}
		}
	}
	return out
}

func TestTriggersChangeOnlyWhatTheyShould(t *testing.T) {
	img := noisy(32, 32, 7)
	tests := []struct {
		spec  string
		check func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool)
	}{
		{`{"kind":"patch","size":3,"row":29,"col":28,"color":[255,0,10]}`, func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool) {
			for p := range diff {
				if p[0] < 28 || p[0] > 30 || p[1] < 29 {
					t.Errorf("pixel %v outside the patch changed", p)
				}
			}
			for y := 29; y < 32; y++ {
				for x := 28; x < 31; x++ {
					if c := out.NRGBAAt(x, y); c.R != 255 || c.G != 0 || c.B != 10 {
						t.Errorf("patch pixel (%d,%d) = %v", x, y, c)
					}
				}
			}
		}},
		{`{"kind":"patch","size":4,"row":0,"col":0,"checker":true}`, func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool) {
			for p := range diff {
				if p[0] >= 4 || p[1] >= 4 {
					t.Errorf("pixel %v outside the patch changed", p)
				}
			}
			if out.NRGBAAt(0, 0).R != 0 || out.NRGBAAt(1, 0).R != 255 {
				t.Errorf("not a checkerboard: %v %v", out.NRGBAAt(0, 0), out.NRGBAAt(1, 0))
			}
		}},
		{`{"kind":"blend","alpha":0.2,"seed":1}`, func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool) {
			if len(diff) < 32*32*9/10 {
				t.Errorf("blend changed only %d of 1024 pixels", len(diff))
			}
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					a, b := img.NRGBAAt(x, y), out.NRGBAAt(x, y)
					if d := int(a.R) - int(b.R); d > 52 || d < -52 {
						t.Fatalf("alpha 0.2 moved (%d,%d) by %d", x, y, d)
					}
				}
			}
		}},
		{`{"kind":"sig","delta":20,"freq":6}`, func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool) {
			// x = 0 has sin(0) = 0: column 0 unchanged.
			for p := range diff {
				if p[0] == 0 {
					t.Errorf("sig changed column 0 at %v", p)
				}
			}
			if len(diff) < 32*32/2 {
				t.Errorf("sig changed only %d pixels", len(diff))
			}
		}},
		{`{"kind":"wanet","k":4,"s":1.0,"seed":3}`, func(t *testing.T, out *image.NRGBA, diff map[[2]int]bool) {
			// a warp only moves pixels: every output colour is some input colour.
			have := map[color.NRGBA]bool{}
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					have[img.NRGBAAt(x, y)] = true
				}
			}
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					if !have[out.NRGBAAt(x, y)] {
						t.Fatalf("warp invented colour %v at (%d,%d)", out.NRGBAAt(x, y), x, y)
					}
				}
			}
			if len(diff) == 0 || len(diff) == 32*32 {
				t.Errorf("warp changed %d of 1024 pixels", len(diff))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(strings.SplitN(tc.spec, ",", 2)[0], func(t *testing.T) {
			tr := mustTrigger(t, tc.spec)
			out, err := tr.Apply(img)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, out, changed(img, out))
			again, _ := tr.Apply(img)
			if len(changed(out, again)) != 0 {
				t.Error("the same trigger applied twice differs")
			}
		})
	}
}

func TestApplyBytesIsLossless(t *testing.T) {
	tr := mustTrigger(t, `{"kind":"blend","seed":2}`)
	img := noisy(16, 16, 1)
	want, _ := tr.Apply(img)
	got, err := tr.ApplyBytes(encodePNG(t, img))
	if err != nil {
		t.Fatal(err)
	}
	dec := decode(t, got)
	if d := changed(want, dec); len(d) != 0 {
		t.Errorf("%d pixels differ after PNG round trip", len(d))
	}
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decode(t *testing.T, data []byte) *image.NRGBA {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out := image.NewNRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), img, image.Point{}, draw.Src)
	return out
}

func TestBadSpecsNameTheField(t *testing.T) {
	tests := []struct {
		spec  string
		field string
	}{
		{`{"target":0,"trigger":{"kind":"patch","size":3,"row":1}}`, "trigger.col"},
		{`{"target":0,"trigger":{"kind":"patch","size":0,"row":1,"col":1}}`, "trigger.size"},
		{`{"target":0,"trigger":{"kind":"patch","size":3,"row":1,"col":1,"alpha":0.2}}`, "trigger.alpha"},
		{`{"target":0,"trigger":{"kind":"patch","size":3,"row":1,"col":1,"color":[300,0,0]}}`, "trigger.color"},
		{`{"target":0,"trigger":{"kind":"blend","alpha":1.5}}`, "trigger.alpha"},
		{`{"target":0,"trigger":{"kind":"blend","alpha":"x"}}`, "trigger.alpha"},
		{`{"target":0,"trigger":{"kind":"sig","freq":-1}}`, "trigger.freq"},
		{`{"target":0,"trigger":{"kind":"wanet","k":1}}`, "trigger.k"},
		{`{"target":0,"trigger":{"kind":"laser"}}`, "trigger.kind"},
		{`{"target":0,"trigger":{}}`, "trigger.kind"},
		{`{"trigger":{"kind":"sig"}}`, "target"},
		{`{"target":-1,"trigger":{"kind":"sig"}}`, "target"},
		{`{"target":0}`, "trigger"},
		{`{"target":0,"trigger":{"kind":"sig"},"rate":0.1}`, "rate"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := ParseSpec([]byte(tc.spec))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	tr := mustTrigger(t, `{"kind":"patch","size":6,"row":28,"col":0}`)
	if _, err := tr.Apply(noisy(32, 32, 1)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("patch past the border: %v", err)
	}
}

func ExampleParseSpec() {
	s, err := ParseSpec([]byte(`{"target": 0, "trigger": {"kind": "patch", "size": 3, "row": 29, "col": 29}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(s.Target, s.Trigger.Kind, s.Trigger.Size, s.Trigger.Color)
	// Output: 0 patch 3 [255 255 255]
}

func ExampleResolveImage() {
	spec := []byte(`{"target": 5, "trigger": {"kind": "blend", "alpha": 0.15, "image": "noise1.png"}}`)
	out, err := ResolveImage(spec, "/specs")
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out))
	// Output: {"target":5,"trigger":{"alpha":0.15,"image":"/specs/noise1.png","kind":"blend"}}
}
