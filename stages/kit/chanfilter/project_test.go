package chanfilter_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// unit returns v scaled to length 1.
func unit(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / math.Sqrt(s))
	}
	return out
}

// The projection built into a graph gives what Apply gives, and every
// projected row has the recorded part along each direction, whatever its
// part was before.
func TestProjectGraphMatchesApply(t *testing.T) {
	ortlib.Init(t)
	const h, w = 2, 3
	const d = 3 * h * w
	rng := rand.New(rand.NewPCG(5, 6))
	u1, u2 := make([]float32, d), make([]float32, d)
	for j := range u1 {
		u1[j] = float32(rng.NormFloat64())
	}
	u1 = unit(u1)
	// u2: a draw made orthogonal to u1.
	var dot float32
	for j := range u2 {
		u2[j] = float32(rng.NormFloat64())
		dot += u2[j] * u1[j]
	}
	for j := range u2 {
		u2[j] -= dot * u1[j]
	}
	u2 = unit(u2)
	for _, p := range []*chanfilter.Project{
		{Dirs: [][]float32{u1}, Along: []float32{0.7}},
		{Dirs: [][]float32{u1, u2}, Along: []float32{-1.5, 2}},
	} {
		if err := p.Check(); err != nil {
			t.Fatal(err)
		}
		b := onnxgraph.NewBuilder("image", []int64{-1, 3, h, w}, 17)
		flat := b.Op("Flatten", "flat", []string{"image"})
		m := b.Model()
		b.Output(p.Graph(m, flat), 2)
		imgs := make([][]float32, 7)
		for i := range imgs {
			imgs[i] = make([]float32, d)
			for j := range imgs[i] {
				imgs[i][j] = float32(rng.NormFloat64() * 3)
			}
		}
		got := run(t, m, imgs)
		for i, im := range imgs {
			want := append([]float32(nil), im...)
			p.Apply(want)
			for j := range want {
				if math.Abs(float64(got[i][j]-want[j])) > 1e-4 {
					t.Fatalf("%d directions, row %d value %d: graph %v, Apply %v", len(p.Dirs), i, j, got[i][j], want[j])
				}
			}
			for k, u := range p.Dirs {
				var along float64
				for j, v := range want {
					along += float64(v) * float64(u[j])
				}
				if math.Abs(along-float64(p.Along[k])) > 1e-4 {
					t.Fatalf("%d directions, row %d: part %v along direction %d, want %v", len(p.Dirs), i, along, k, p.Along[k])
				}
			}
			// The rest of the row is untouched: Apply on a projected row
			// changes nothing.
			again := append([]float32(nil), want...)
			p.Apply(again)
			for j := range again {
				if math.Abs(float64(again[j]-want[j])) > 1e-5 {
					t.Fatalf("projecting twice moved value %d from %v to %v", j, want[j], again[j])
				}
			}
		}
	}
}

// A projection goes into a model's metadata and comes back the same; one
// whose directions are not orthonormal, or whose parts do not match them,
// is refused on both ways.
func TestProjectMetadata(t *testing.T) {
	good := &chanfilter.Project{Dirs: [][]float32{{1, 0, 0}, {0, 0, 1}}, Along: []float32{0.5, -2}}
	m := onnxgraph.NewBuilder("image", []int64{-1, 3, 1, 1}, 17).Model()
	if got, err := chanfilter.ReadProject(m); got != nil || err != nil {
		t.Fatalf("a model without the metadata: %v, %v", got, err)
	}
	if err := good.WriteTo(m); err != nil {
		t.Fatal(err)
	}
	got, err := chanfilter.ReadProject(m)
	if err != nil || len(got.Dirs) != 2 || got.Along[1] != -2 || got.Dirs[1][2] != 1 {
		t.Fatalf("read back %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		p    *chanfilter.Project
		want string
	}{
		{"no directions", &chanfilter.Project{}, "0 directions"},
		{"a part missing", &chanfilter.Project{Dirs: [][]float32{{1, 0}}, Along: nil}, "1 directions and 0 parts"},
		{"not unit", &chanfilter.Project{Dirs: [][]float32{{2, 0}}, Along: []float32{0}}, "not orthonormal"},
		{"not orthogonal", &chanfilter.Project{Dirs: [][]float32{{1, 0}, {0.6, 0.8}}, Along: []float32{0, 0}}, "not orthonormal"},
		{"sizes differ", &chanfilter.Project{Dirs: [][]float32{{1, 0}, {0, 0, 1}}, Along: []float32{0, 0}}, "has 3 values, want 2"},
	} {
		if err := tc.p.WriteTo(m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: WriteTo gave %v, want %q", tc.name, err, tc.want)
		}
		m.SetMeta(chanfilter.ProjectMeta, `{"dirs":[[1,1]],"along":[0]}`)
		if _, err := chanfilter.ReadProject(m); err == nil || !strings.Contains(err.Error(), chanfilter.ProjectMeta) {
			t.Errorf("%s: reading a bad projection gave %v", tc.name, err)
		}
	}
}
