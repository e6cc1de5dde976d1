package bootstrap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// tinted draws a noise image of testenc's size whose colour says its
// class (0-2: red, green or blue raised), as PNG and as [0, 1] CHW pixels.
func tinted(rng *rand.Rand, class int) ([]byte, []float32) {
	const s = testenc.Size
	img := image.NewNRGBA(image.Rect(0, 0, s, s))
	px := make([]float32, 3*s*s)
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			var c [3]uint8
			for k := range c {
				v := rng.IntN(150)
				if k == class {
					v += 100
				}
				c[k] = uint8(v)
				px[k*s*s+y*s+x] = float32(c[k]) / 255
			}
			img.Set(x, y, color.NRGBA{c[0], c[1], c[2], 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes(), px
}

// An encoder that carries a projection (chanfilter.Project, as the filter
// records it with project "scan") gets a head trained on projected
// features and a classifier that projects too: the exported classifier
// labels the training images as bootstrap's own final head labelled their
// features. The projection sets the part along its direction to 1,000,
// far from any embedding's, so a classifier that skipped it would not
// agree. A projection of another size than the features is refused.
func TestProjectionReachesTheClassifier(t *testing.T) {
	ortlib.Init(t)
	dir := t.TempDir()
	m := testenc.Clean(5).Model()
	rng := rand.New(rand.NewPCG(9, 10))
	var imgs [][]byte
	var pixels [][]float32
	var labels []int32
	for i := 0; i < 150; i++ {
		b, px := tinted(rng, i%3)
		imgs, pixels, labels = append(imgs, b), append(pixels, px), append(labels, int32(i%3))
	}
	plain := filepath.Join(dir, "plain.onnx")
	if err := m.Save(plain); err != nil {
		t.Fatal(err)
	}
	in := synth.EmbeddedImagesOf(t, embed.New(), plain, imgs, labels)
	defer in.Release()
	tab, err := feat.Open(in, "features")
	if err != nil {
		t.Fatal(err)
	}
	d := tab.Embedding.D
	// The direction: from class 1's mean embedding to class 0's; the part
	// every projected row gets: ten standard deviations above the rows'
	// mean part along it.
	u := make([]float32, d)
	for i, l := range labels {
		for j, v := range tab.Embedding.X[i*d : (i+1)*d] {
			switch l {
			case 0:
				u[j] += v
			case 1:
				u[j] -= v
			}
		}
	}
	var norm float64
	for _, v := range u {
		norm += float64(v) * float64(v)
	}
	var sum, sum2 float64
	for j := range u {
		u[j] = float32(float64(u[j]) / math.Sqrt(norm))
	}
	for i := range labels {
		var a float64
		for j, v := range tab.Embedding.X[i*d : (i+1)*d] {
			a += float64(v) * float64(u[j])
		}
		sum, sum2 = sum+a, sum2+a*a
	}
	n := float64(len(labels))
	along := float32(sum/n + 10*math.Sqrt(sum2/n-(sum/n)*(sum/n)))
	withProject := func(name string, dim int) string {
		v := append(append([]float32(nil), u...), make([]float32, dim-d)...)
		if dim > d {
			v[d-1], v[d] = 0, u[d-1] // still a unit vector
		}
		g := m.Clone()
		if err := (&chanfilter.Project{Dirs: [][]float32{v}, Along: []float32{along}}).WriteTo(g); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := g.Save(path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	run := func(enc, export string, heads int) (*plugin.Tables, error) {
		out := plugin.NewTables()
		params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "epochs": 5, "final_epochs": 20, "hidden": []int{32}, "final_heads": heads})
		_, err := plugin.Local(bootstrap.New()).Run(context.Background(), params, in, out, nil)
		return out, err
	}
	// One final head, and the mean of two exported as one wider head.
	for _, heads := range []int{1, 2} {
		export := filepath.Join(dir, fmt.Sprintf("clean_model_%d.onnx", heads))
		out, err := run(withProject("projected.onnx", d), export, heads)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := feat.OpenScores(out, "scores", tab, "bootstrap.pred")
		if err != nil {
			t.Fatal(err)
		}
		pred := sc["bootstrap.pred"].I
		out.Release()
		e, err := encoder.Open(export, encoder.Config{Layers: []string{}, Embedding: "logits"})
		if err != nil {
			t.Fatal(err)
		}
		x, err := e.Batch(len(pixels))
		if err != nil {
			t.Fatal(err)
		}
		for i, px := range pixels {
			copy(x[i*len(px):], px)
		}
		logits, _, err := e.Embed(len(pixels))
		if err != nil {
			t.Fatal(err)
		}
		agree, right := 0, 0
		for i := range pixels {
			row := logits[i*e.Dim : (i+1)*e.Dim]
			best := 0
			for k, v := range row {
				if v > row[best] {
					best = k
				}
			}
			if int32(best) == pred[i] {
				agree++
			}
			if int32(best) == labels[i] {
				right++
			}
		}
		e.Close()
		if agree < len(pixels)-1 {
			t.Errorf("final_heads %d: the exported classifier agrees with the final head on %d of %d training images", heads, agree, len(pixels))
		}
		// The projection takes out the direction that parts classes 0
		// and 1, so those two are close to a coin toss by design; a head
		// that still knows class 2 and something of the others labels
		// more than half right, a collapsed one (all one class) a third.
		if right <= len(pixels)/2 {
			t.Errorf("final_heads %d: the exported classifier labels %d of %d training images right, want more than half", heads, right, len(pixels))
		}
	}
	_, err = run(withProject("other.onnx", d+1), filepath.Join(dir, "other_model.onnx"), 1)
	var pe *plugin.Error
	if !errors.As(err, &pe) || pe.Port != "features" || pe.Code != plugin.CodeBadInput {
		t.Fatalf("a projection of %d values on features of %d: got %v, want a bad input on port features", d+1, d, err)
	}
}
