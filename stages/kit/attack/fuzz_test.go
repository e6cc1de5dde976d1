package attack

import (
	"bytes"
	"image"
	"testing"
)

// FuzzParseSpec: any eval spec is parsed and checked, or refused with an
// error; a spec that parses and fits an image can be applied to it.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		`{"target": 0, "trigger": {"kind": "patch", "size": 3, "row": 29, "col": 29}}`,
		`{"target": 2, "trigger": {"kind": "patch", "size": 3, "row": 0, "col": 0, "checker": true}}`,
		`{"target": 1, "trigger": {"kind": "patch", "size": 4, "row": 1, "col": 2, "color": [255, 255, 0]}}`,
		`{"target": 5, "trigger": {"kind": "blend", "alpha": 0.15, "seed": 3}}`,
		`{"target": 3, "trigger": {"kind": "sig", "amplitude": 20, "frequency": 6}}`,
		`{"target": 4, "trigger": {"kind": "wanet", "strength": 1, "grid": 4, "seed": 2}}`,
		`{"target": -1, "trigger": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.Contains(data, []byte(`"image"`)) {
			return // a file path: reading arbitrary files is not the parser's job
		}
		s, err := ParseSpec(data)
		if err != nil {
			return
		}
		const w, h = 8, 6
		if s.Trigger.Fits(w, h) != nil {
			return
		}
		out, err := s.Trigger.Apply(image.NewNRGBA(image.Rect(0, 0, w, h)))
		if err != nil {
			return
		}
		if b := out.Bounds(); b.Dx() != w || b.Dy() != h {
			t.Fatalf("applying %s gave a %dx%d image from %dx%d", data, b.Dx(), b.Dy(), w, h)
		}
	})
}
