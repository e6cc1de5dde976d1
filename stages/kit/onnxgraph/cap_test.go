package onnxgraph_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// A direction cap leaves a row whose part along each direction is at or
// under its cap as it is, and takes the excess off the others, along that
// direction only.
func TestInsertDirectionCap(t *testing.T) {
	ortlib.Init(t)
	const d = 3 * 2 * 2
	b := onnxgraph.NewBuilder("image", []int64{-1, 3, 2, 2}, 17)
	b.Output(b.Op("Flatten", "embedding", []string{"image"}), 2)
	m := b.Model()
	u := [][]float32{make([]float32, d), make([]float32, d)}
	u[0][0], u[0][1] = 0.6, 0.8 // unit, orthogonal to u[1]
	u[1][5] = 1
	hi := []float32{1, -0.5}
	if err := m.InsertDirectionCap("embedding", u, hi); err != nil {
		t.Fatal(err)
	}
	if err := m.InsertDirectionCap("nothing", u, hi); err == nil {
		t.Fatal("a cap on a tensor the graph lacks was accepted")
	}
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	e, err := encoder.Open(path, encoder.Config{Layers: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 50
	x, err := e.Batch(n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range x[:n*d] {
		x[i] = float32(rng.NormFloat64() * 2)
	}
	in := append([]float32(nil), x[:n*d]...)
	out, _, err := e.Embed(n)
	if err != nil {
		t.Fatal(err)
	}
	capped := 0
	for i := 0; i < n; i++ {
		want := append([]float32(nil), in[i*d:(i+1)*d]...)
		for k, v := range u {
			var along float32
			for j := range v {
				along += want[j] * v[j]
			}
			if along > hi[k] {
				capped++
				for j := range v {
					want[j] -= (along - hi[k]) * v[j]
				}
			}
		}
		for j := range want {
			if math.Abs(float64(out[i*d+j]-want[j])) > 1e-5 {
				t.Fatalf("row %d value %d: %v, want %v", i, j, out[i*d+j], want[j])
			}
		}
	}
	if capped == 0 || capped == 2*n {
		t.Fatalf("%d of %d parts over their caps: the draw tests nothing", capped, 2*n)
	}
}
