package stat_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

func TestRobust(t *testing.T) {
	for _, tc := range []struct {
		name     string
		xs       []float64
		med, mad float64
	}{
		{"empty", nil, 0, 0},
		{"outlier", []float64{1, 2, 3, 4, 100}, 3, 1.4826},
		{"constant", []float64{5, 5, 5}, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			med, mad := stat.Robust(tc.xs)
			if math.Abs(med-tc.med) > 1e-12 || math.Abs(mad-tc.mad) > 1e-12 {
				t.Fatalf("Robust(%v) = %v, %v; want %v, %v", tc.xs, med, mad, tc.med, tc.mad)
			}
		})
	}
}

// The outlier stands far out, the median row at zero.
func ExampleRobustZ() {
	z := stat.RobustZ([]float64{1, 2, 3, 4, 100})
	fmt.Printf("%.2f %.2f\n", z[2], z[4])
	// Output: 0.00 65.43
}

// SolveRidge recovers known coefficients of a noiseless linear map, and
// lambda shrinks them.
func TestSolveRidge(t *testing.T) {
	// x: 50 rows of 3 features; y = x*w for two columns of w.
	w := []float64{1, -2, 0.5, 3, -1, 0}
	var a [9]float64
	var b [6]float64
	for r := 0; r < 50; r++ {
		x := []float64{math.Sin(float64(r)), math.Cos(float64(3 * r)), float64(r%7) - 3}
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				a[i*3+j] += x[i] * x[j]
			}
			for c := 0; c < 2; c++ {
				b[i*2+c] += x[i] * (x[0]*w[0*2+c] + x[1]*w[1*2+c] + x[2]*w[2*2+c])
			}
		}
	}
	for _, tc := range []struct {
		lambda float64
		shrunk bool
	}{{1e-9, false}, {1e3, true}} {
		got, err := stat.SolveRidge(a[:], 3, b[:], 2, tc.lambda)
		if err != nil {
			t.Fatal(err)
		}
		var norm, want float64
		for i := range w {
			norm += got[i] * got[i]
			want += w[i] * w[i]
			if !tc.shrunk && math.Abs(got[i]-w[i]) > 1e-6 {
				t.Fatalf("lambda %g: coefficient %d = %v, want %v", tc.lambda, i, got[i], w[i])
			}
		}
		if tc.shrunk && norm >= want {
			t.Errorf("lambda %g: |w|^2 %v not below the unregularised %v", tc.lambda, norm, want)
		}
	}
	if _, err := stat.SolveRidge([]float64{-1}, 1, []float64{1}, 1, 1e-9); err == nil {
		t.Error("a negative matrix: no error")
	}
}

// Ridge regression of y on x from their cross-products: (x'x + λI) w = x'y.
func ExampleSolveRidge() {
	xtx := []float64{2, 0, 0, 8} // two uncorrelated features
	xty := []float64{2, 4}       // y = x0 + 0.5*x1
	w, _ := stat.SolveRidge(xtx, 2, xty, 1, 1e-9)
	fmt.Printf("%.3f %.3f\n", w[0], w[1])
	// Output: 1.000 0.500
}

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		in   []bool
		want int
	}{{nil, 0}, {[]bool{false}, 0}, {[]bool{true, false, true}, 2}} {
		if got := stat.Count(tc.in); got != tc.want {
			t.Errorf("Count(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestDistances(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []float32
		want float64
	}{
		{"3-4-5", []float32{0, 0}, []float32{3, 4}, 5},
		{"same", []float32{1, -2, 3}, []float32{1, -2, 3}, 0},
		{"one value", []float32{-1}, []float32{2}, 3},
	} {
		c := make([]float64, len(tc.b))
		for i, v := range tc.b {
			c[i] = float64(v)
		}
		if got := stat.Dist(tc.a, tc.b); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: Dist %g, want %g", tc.name, got, tc.want)
		}
		if got := stat.DistTo(tc.a, c); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: DistTo %g, want %g", tc.name, got, tc.want)
		}
	}
}

func TestQuantileSorted(t *testing.T) {
	ten := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for _, tc := range []struct {
		v    []float32
		q    float64
		want float32
	}{
		{ten, 0, 0},
		{ten, 0.5, 5},
		{ten, 0.95, 9},
		{ten, 0.99, 9}, // under 100 values the 0.99 quantile is the largest
		{ten, 1, 9},
		{[]float32{3}, 0.5, 3},
	} {
		if got := stat.QuantileSorted(tc.v, tc.q); got != tc.want {
			t.Errorf("QuantileSorted(%v, %v) = %v, want %v", tc.v, tc.q, got, tc.want)
		}
	}
}
