// Package attack is tcore's attack kit: the triggers of docs/ALGORITHM.md (BadNets
// patch, Blended, SIG, WaNet) applied to decoded pixels, and the eval spec
// (trigger + target) that only evaluation sees. The poison stage, the
// evaluate stage and the host's ASR all use it, so a trigger means one thing
// everywhere.
package attack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tcore-dev/tcore/arrowio"
)

// Trigger is a trigger spec. Which fields apply depends on Kind:
//
//	patch: size, row, col, color (default white), checker (two-colour checkerboard)
//	blend: alpha (default 0.2), seed (uniform noise) or image (a PNG/JPEG file)
//	sig:   delta (default 30), freq (default 6)
//	wanet: k (default 4), s (default 1.0), seed
type Trigger struct {
	Kind    string  `json:"kind"`
	Size    int     `json:"size,omitempty"`
	Row     int     `json:"row,omitempty"`
	Col     int     `json:"col,omitempty"`
	Color   []int   `json:"color,omitempty"`
	Checker bool    `json:"checker,omitempty"`
	Alpha   float64 `json:"alpha,omitempty"`
	Seed    uint64  `json:"seed,omitempty"`
	Image   string  `json:"image,omitempty"`
	Delta   float64 `json:"delta,omitempty"`
	Freq    float64 `json:"freq,omitempty"`
	K       int     `json:"k,omitempty"`
	S       float64 `json:"s,omitempty"`

	blendImg image.Image
}

// Spec is an eval spec: the trigger and the class it aims at.
type Spec struct {
	Target  int     `json:"target"`
	Trigger Trigger `json:"trigger"`
}

// fields lists each kind's fields (besides kind).
var fields = map[string][]string{
	"patch": {"size", "row", "col", "color", "checker"},
	"blend": {"alpha", "seed", "image"},
	"sig":   {"delta", "freq"},
	"wanet": {"k", "s", "seed"},
}

// Kinds lists the trigger kinds.
func Kinds() []string {
	var out []string
	for k := range fields {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// FieldError names the field of a trigger or eval spec that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ParseTrigger decodes and checks a trigger spec; prefix names it in errors
// (e.g. "trigger"). Fields that do not belong to the kind are errors.
func ParseTrigger(data []byte, prefix string) (Trigger, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Trigger{}, fieldErr(prefix, "not a JSON object: %v", err)
	}
	var kind string
	if k, ok := raw["kind"]; !ok {
		return Trigger{}, fieldErr(prefix+".kind", "missing (one of %s)", strings.Join(Kinds(), ", "))
	} else if err := json.Unmarshal(k, &kind); err != nil {
		return Trigger{}, fieldErr(prefix+".kind", "not a string")
	}
	allowed, ok := fields[kind]
	if !ok {
		return Trigger{}, fieldErr(prefix+".kind", "%q is not a trigger kind (one of %s)", kind, strings.Join(Kinds(), ", "))
	}
	for name := range raw {
		if name != "kind" && !contains(allowed, name) {
			return Trigger{}, fieldErr(prefix+"."+name, "not a field of a %s trigger (fields: %s)", kind, strings.Join(allowed, ", "))
		}
	}
	t := Trigger{Kind: kind}
	for name, v := range raw {
		var dst any
		switch name {
		case "kind":
			continue
		case "size":
			dst = &t.Size
		case "row":
			dst = &t.Row
		case "col":
			dst = &t.Col
		case "color":
			dst = &t.Color
		case "checker":
			dst = &t.Checker
		case "alpha":
			dst = &t.Alpha
		case "seed":
			dst = &t.Seed
		case "image":
			dst = &t.Image
		case "delta":
			dst = &t.Delta
		case "freq":
			dst = &t.Freq
		case "k":
			dst = &t.K
		case "s":
			dst = &t.S
		}
		dec := json.NewDecoder(bytes.NewReader(v))
		if err := dec.Decode(dst); err != nil {
			return Trigger{}, fieldErr(prefix+"."+name, "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if err := t.defaults(prefix, raw); err != nil {
		return Trigger{}, err
	}
	return t, nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func (t *Trigger) defaults(prefix string, raw map[string]json.RawMessage) error {
	has := func(n string) bool { _, ok := raw[n]; return ok }
	switch t.Kind {
	case "patch":
		for _, n := range []string{"size", "row", "col"} {
			if !has(n) {
				return fieldErr(prefix+"."+n, "missing (a patch needs size, row and col)")
			}
		}
		if t.Size < 1 {
			return fieldErr(prefix+".size", "%d, want >= 1", t.Size)
		}
		if t.Row < 0 || t.Col < 0 {
			return fieldErr(prefix+".row", "row %d, col %d: want >= 0", t.Row, t.Col)
		}
		if !has("color") {
			t.Color = []int{255, 255, 255}
		}
		if len(t.Color) != 3 {
			return fieldErr(prefix+".color", "%v, want [r, g, b]", t.Color)
		}
		for _, c := range t.Color {
			if c < 0 || c > 255 {
				return fieldErr(prefix+".color", "%v, want values in 0..255", t.Color)
			}
		}
	case "blend":
		if !has("alpha") {
			t.Alpha = 0.2
		}
		if t.Alpha <= 0 || t.Alpha > 1 {
			return fieldErr(prefix+".alpha", "%v, want (0, 1]", t.Alpha)
		}
		if has("seed") && has("image") {
			return fieldErr(prefix+".image", "give a noise seed or an image, not both")
		}
		if t.Image != "" {
			data, err := os.ReadFile(t.Image)
			if err != nil {
				return fieldErr(prefix+".image", "%v", err)
			}
			img, err := arrowio.DecodeImage(data)
			if err != nil {
				return fieldErr(prefix+".image", "%s: %v", t.Image, err)
			}
			t.blendImg = img
		}
	case "sig":
		if !has("delta") {
			t.Delta = 30
		}
		if !has("freq") {
			t.Freq = 6
		}
		if t.Delta <= 0 || t.Delta > 255 {
			return fieldErr(prefix+".delta", "%v, want (0, 255]", t.Delta)
		}
		if t.Freq <= 0 {
			return fieldErr(prefix+".freq", "%v, want > 0", t.Freq)
		}
	case "wanet":
		if !has("k") {
			t.K = 4
		}
		if !has("s") {
			t.S = 1
		}
		if t.K < 2 {
			return fieldErr(prefix+".k", "%d, want >= 2", t.K)
		}
		if t.S <= 0 {
			return fieldErr(prefix+".s", "%v, want > 0", t.S)
		}
	}
	return nil
}

// UnmarshalJSON decodes and checks a trigger (field names in errors start
// with "trigger").
func (t *Trigger) UnmarshalJSON(data []byte) error {
	v, err := ParseTrigger(data, "trigger")
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ParseSpec decodes and checks an eval spec.
func ParseSpec(data []byte) (Spec, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Spec{}, fieldErr("spec", "not a JSON object: %v", err)
	}
	for name := range raw {
		if name != "target" && name != "trigger" {
			return Spec{}, fieldErr(name, "not a field of an eval spec (fields: target, trigger)")
		}
	}
	var s Spec
	tr, ok := raw["target"]
	if !ok {
		return Spec{}, fieldErr("target", "missing")
	}
	if err := json.Unmarshal(tr, &s.Target); err != nil || s.Target < 0 {
		return Spec{}, fieldErr("target", "%s, want a class index >= 0", tr)
	}
	tg, ok := raw["trigger"]
	if !ok {
		return Spec{}, fieldErr("trigger", "missing")
	}
	t, err := ParseTrigger(tg, "trigger")
	if err != nil {
		return Spec{}, err
	}
	s.Trigger = t
	return s, nil
}

// ReadSpec reads an eval spec from a file; errors name the file. A blend
// trigger's relative image path is relative to the spec's folder.
func ReadSpec(path string) (Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, err
	}
	if data, err = ResolveImage(data, filepath.Dir(path)); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", path, fieldErr("spec", "not a JSON object: %v", err))
	}
	s, err := ParseSpec(data)
	if err != nil {
		return Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ResolveImage makes a blend trigger's relative image path, in the
// "trigger" of an eval spec or a poison recipe, relative to base. Anything
// else comes back as it was, for the spec's own checks to name.
func ResolveImage(raw json.RawMessage, base string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var trig map[string]json.RawMessage
	if json.Unmarshal(m["trigger"], &trig) != nil {
		return raw, nil
	}
	var img string
	if json.Unmarshal(trig["image"], &img) != nil || img == "" || filepath.IsAbs(img) {
		return raw, nil
	}
	trig["image"], _ = json.Marshal(filepath.Join(base, img))
	m["trigger"], _ = json.Marshal(trig)
	return json.Marshal(m)
}

// Fits checks that the trigger fits images of w x h pixels.
func (t *Trigger) Fits(w, h int) error {
	if t.Kind == "patch" && (t.Row+t.Size > h || t.Col+t.Size > w) {
		return fieldErr("trigger.size", "a %dx%d patch at row %d, col %d does not fit a %dx%d image", t.Size, t.Size, t.Row, t.Col, w, h)
	}
	return nil
}

// Apply returns img with the trigger applied, as 8-bit RGB(A) pixels.
// Pixels the trigger does not touch keep their values exactly.
func (t *Trigger) Apply(img image.Image) (*image.NRGBA, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if err := t.Fits(w, h); err != nil {
		return nil, err
	}
	src := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(src, src.Bounds(), img, b.Min, draw.Src)
	dst := image.NewNRGBA(src.Bounds())
	copy(dst.Pix, src.Pix)
	px := func(m *image.NRGBA, x, y int) []uint8 { o := y*m.Stride + 4*x; return m.Pix[o : o+3] }
	switch t.Kind {
	case "patch":
		for y := t.Row; y < t.Row+t.Size; y++ {
			for x := t.Col; x < t.Col+t.Size; x++ {
				p := px(dst, x, y)
				for c := 0; c < 3; c++ {
					v := uint8(t.Color[c])
					if t.Checker {
						v = uint8(255 * ((x - t.Col + y - t.Row) % 2))
					}
					p[c] = v
				}
			}
		}
	case "blend":
		pat := t.blendPattern(w, h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p := px(dst, x, y)
				for c := 0; c < 3; c++ {
					p[c] = toByte((1-t.Alpha)*float64(p[c]) + t.Alpha*pat[(y*w+x)*3+c])
				}
			}
		}
	case "sig":
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				d := t.Delta * math.Sin(2*math.Pi*float64(x)*t.Freq/float64(w))
				p := px(dst, x, y)
				for c := 0; c < 3; c++ {
					p[c] = toByte(float64(p[c]) + d)
				}
			}
		}
	case "wanet":
		gy, gx := t.warpField(w, h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				sy := clampInt(int(math.RoundToEven(float64(y)+t.S*gy[y*w+x])), 0, h-1)
				sx := clampInt(int(math.RoundToEven(float64(x)+t.S*gx[y*w+x])), 0, w-1)
				copy(px(dst, x, y), px(src, sx, sy))
			}
		}
	}
	return dst, nil
}

func toByte(v float64) uint8 {
	return uint8(math.Max(0, math.Min(255, math.RoundToEven(v))))
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

// blendPattern is the blend image as h*w*3 values in [0, 255]: uniform
// noise from the seed (tcore's own definition), or the given image
// resized (nearest) to w x h.
func (t *Trigger) blendPattern(w, h int) []float64 {
	pat := make([]float64, w*h*3)
	if t.blendImg != nil {
		b := t.blendImg.Bounds()
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				r, g, bl, _ := t.blendImg.At(b.Min.X+x*b.Dx()/w, b.Min.Y+y*b.Dy()/h).RGBA()
				pat[(y*w+x)*3], pat[(y*w+x)*3+1], pat[(y*w+x)*3+2] = float64(r>>8), float64(g>>8), float64(bl>>8)
			}
		}
		return pat
	}
	rng := rand.New(rand.NewPCG(t.Seed, 0x626c656e64))
	for i := range pat {
		pat[i] = float64(rng.IntN(256))
	}
	return pat
}

// warpField is WaNet's warping field: a k x k grid of uniform(-1, 1)
// offsets per axis, normalised by its mean absolute value, upsampled
// bilinearly to h x w (in pixels).
func (t *Trigger) warpField(w, h int) (gy, gx []float64) {
	rng := rand.New(rand.NewPCG(t.Seed, 0x77616e6574))
	k := t.K
	grid := [2][]float64{make([]float64, k*k), make([]float64, k*k)}
	for d := range grid {
		var s float64
		for i := range grid[d] {
			grid[d][i] = rng.Float64()*2 - 1
			s += math.Abs(grid[d][i])
		}
		for i := range grid[d] {
			grid[d][i] /= s / float64(k*k)
		}
	}
	up := func(g []float64) []float64 {
		out := make([]float64, w*h)
		for y := 0; y < h; y++ {
			fy := (float64(y)+0.5)*float64(k)/float64(h) - 0.5
			y0 := clampInt(int(math.Floor(fy)), 0, k-1)
			y1 := clampInt(y0+1, 0, k-1)
			ay := math.Max(0, math.Min(1, fy-float64(y0)))
			for x := 0; x < w; x++ {
				fx := (float64(x)+0.5)*float64(k)/float64(w) - 0.5
				x0 := clampInt(int(math.Floor(fx)), 0, k-1)
				x1 := clampInt(x0+1, 0, k-1)
				ax := math.Max(0, math.Min(1, fx-float64(x0)))
				top := g[y0*k+x0]*(1-ax) + g[y0*k+x1]*ax
				bot := g[y1*k+x0]*(1-ax) + g[y1*k+x1]*ax
				out[y*w+x] = top*(1-ay) + bot*ay
			}
		}
		return out
	}
	return up(grid[0]), up(grid[1])
}

// ApplyBytes decodes a PNG or JPEG image, applies the trigger and encodes
// the result as PNG (lossless, so the trigger survives).
func (t *Trigger) ApplyBytes(data []byte) ([]byte, error) {
	img, err := arrowio.DecodeImage(data)
	if err != nil {
		return nil, err
	}
	out, err := t.Apply(img)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
