package knn_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/knn"
)

func data(n, d int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64())*float32(1+i%d) + float32(i%d)
	}
	return x
}

// oracle sorts every candidate by float64 similarity.
func oracle(x []float32, n, d, k int) [][]int32 {
	out := make([][]int32, n)
	for i := 0; i < n; i++ {
		type c struct {
			s float64
			j int32
		}
		var cs []c
		for j := 0; j < n; j++ {
			if j == i {
				continue
			}
			var s float64
			for t := 0; t < d; t++ {
				s += float64(x[i*d+t]) * float64(x[j*d+t])
			}
			cs = append(cs, c{s, int32(j)})
		}
		sort.Slice(cs, func(a, b int) bool { return cs[a].s > cs[b].s })
		for _, v := range cs[:k] {
			out[i] = append(out[i], v.j)
		}
	}
	return out
}

func TestNeighborsAgainstOracle(t *testing.T) {
	ortlib.Init(t)
	for _, tc := range []struct{ n, d, k, block int }{{50, 3, 5, 7}, {300, 17, 10, 64}, {257, 64, 1, 512}} {
		x := knn.Standardize(data(tc.n, tc.d, uint64(tc.n)), tc.n, tc.d)
		want := oracle(x, tc.n, tc.d, tc.k)
		for _, e := range []knn.Engine{knn.EngineGo, knn.EngineORT} {
			t.Run(fmt.Sprintf("%s/n%d_d%d_k%d", e, tc.n, tc.d, tc.k), func(t *testing.T) {
				got, err := knn.Neighbors(x, tc.n, tc.d, tc.k, knn.Options{Engine: e, Block: tc.block})
				if err != nil {
					t.Fatal(err)
				}
				miss := 0
				for i := 0; i < tc.n; i++ {
					set := map[int32]bool{}
					for _, j := range got[i*tc.k : (i+1)*tc.k] {
						if j == int32(i) {
							t.Fatalf("row %d is its own neighbour", i)
						}
						set[j] = true
					}
					for _, j := range want[i] {
						if !set[j] {
							miss++
						}
					}
				}
				// float32 products may swap near-ties at the k-th place.
				if float64(miss) > 0.002*float64(tc.n*tc.k) {
					t.Fatalf("%d of %d neighbours differ from the oracle", miss, tc.n*tc.k)
				}
			})
		}
	}
}

func TestAgreement(t *testing.T) {
	nb := []int32{1, 2, 0, 2, 0, 1}
	got := knn.Agreement(nb, []int32{7, 7, 8}, 2)
	if got[0] != 0.5 || got[1] != 0.5 || got[2] != 0 {
		t.Fatalf("got %v", got)
	}
}

func TestStandardize(t *testing.T) {
	x := knn.Standardize([]float32{1, 5, 3, 5, 5, 5}, 3, 2)
	// Column 1 is constant: zero. Column 0 z-scores -1.22, 0, 1.22, then
	// unit length: -1, 0, 1.
	want := []float32{-1, 0, 0, 0, 1, 0}
	for i := range want {
		if d := x[i] - want[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("got %v, want %v", x, want)
		}
	}
}

// BenchmarkNeighbors compares the engines over a ladder of sizes (d = 480,
// the four probed stages of the fixtures' encoder).
func BenchmarkNeighbors(b *testing.B) {
	ortlib.Init(b)
	for _, n := range []int{2000, 10000} {
		const d, k = 480, 10
		x := knn.Standardize(data(n, d, 1), n, d)
		for _, e := range []knn.Engine{knn.EngineGo, knn.EngineORT} {
			b.Run(fmt.Sprintf("%s/n=%d", e, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if _, err := knn.Neighbors(x, n, d, k, knn.Options{Engine: e}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)*float64(n)*d*2/b.Elapsed().Seconds()*float64(b.N)/1e9, "GFLOP/s")
			})
		}
	}
}
