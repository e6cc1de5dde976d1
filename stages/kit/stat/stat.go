// Package stat holds the small statistics the stages and baselines share:
// principal components by power iteration, two-means clustering and robust
// location/scale. Rows are float32 vectors of d values, addressed by index
// into one flat slice.
package stat

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Robust returns the median and the scaled MAD (1.4826 * median absolute
// deviation, the standard deviation for normal data) of xs.
func Robust(xs []float64) (med, mad float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med = s[len(s)/2]
	dev := make([]float64, len(s))
	for i, v := range s {
		dev[i] = math.Abs(v - med)
	}
	sort.Float64s(dev)
	return med, 1.4826 * dev[len(dev)/2]
}

// RobustZ standardises xs by their median and scaled MAD.
func RobustZ(xs []float64) []float32 {
	med, mad := Robust(xs)
	z := make([]float32, len(xs))
	for i, v := range xs {
		z[i] = float32((v - med) / (mad + 1e-9))
	}
	return z
}

// Mean returns the mean of the rows (all n rows when rows is nil).
func Mean(x []float32, d int, rows []int) []float64 {
	m := make([]float64, d)
	n := 0
	each(x, d, rows, func(v []float32) {
		for j, f := range v {
			m[j] += float64(f)
		}
		n++
	})
	for j := range m {
		m[j] /= float64(max(n, 1))
	}
	return m
}

func each(x []float32, d int, rows []int, f func(v []float32)) {
	if rows == nil {
		for i := 0; i+d <= len(x); i += d {
			f(x[i : i+d])
		}
		return
	}
	for _, i := range rows {
		f(x[i*d : (i+1)*d])
	}
}

// Components returns the top k principal directions (unit vectors of d
// values) of the rows, centred on their mean, by power iteration with
// deflation; seeded, so deterministic.
func Components(x []float32, d int, rows []int, k int, seed uint64) [][]float64 {
	mean := Mean(x, d, rows)
	rng := rand.New(rand.NewPCG(seed, 0x706361))
	var comps [][]float64
	for c := 0; c < k; c++ {
		v := make([]float64, d)
		for j := range v {
			v[j] = rng.NormFloat64()
		}
		for it := 0; it < 60; it++ {
			w := make([]float64, d)
			each(x, d, rows, func(r []float32) {
				var dot float64
				for j, f := range r {
					dot += (float64(f) - mean[j]) * v[j]
				}
				for j, f := range r {
					w[j] += dot * (float64(f) - mean[j])
				}
			})
			for _, u := range comps {
				dot := Dot(w, u)
				for j := range w {
					w[j] -= dot * u[j]
				}
			}
			norm := math.Sqrt(Dot(w, w))
			if norm == 0 {
				break
			}
			for j := range w {
				v[j] = w[j] / norm
			}
		}
		comps = append(comps, v)
	}
	return comps
}

// Project returns each row's coordinates along the components, centred on
// mean.
func Project(x []float32, d int, rows []int, mean []float64, comps [][]float64) [][]float64 {
	var out [][]float64
	each(x, d, rows, func(r []float32) {
		p := make([]float64, len(comps))
		for c, u := range comps {
			for j, f := range r {
				p[c] += (float64(f) - mean[j]) * u[j]
			}
		}
		out = append(out, p)
	})
	return out
}

// Dot is the dot product of two equal-length vectors.
func Dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// TwoMeans splits points into two clusters by Lloyd's algorithm, started
// from the two extreme points along each coordinate in turn, and keeps the
// split with the least within-cluster sum of squares. It returns each
// point's cluster, 0 or 1.
func TwoMeans(pts [][]float64) []int {
	n := len(pts)
	best := make([]int, n)
	if n < 2 {
		return best
	}
	bestSSE := math.Inf(1)
	for dim := 0; dim < len(pts[0]); dim++ {
		lo, hi := 0, 0
		for i, p := range pts {
			if p[dim] < pts[lo][dim] {
				lo = i
			}
			if p[dim] > pts[hi][dim] {
				hi = i
			}
		}
		if lo == hi {
			continue
		}
		assign, sse := lloyd(pts, [2][]float64{append([]float64(nil), pts[lo]...), append([]float64(nil), pts[hi]...)})
		if sse < bestSSE {
			best, bestSSE = assign, sse
		}
	}
	return best
}

func lloyd(pts [][]float64, centre [2][]float64) ([]int, float64) {
	assign := make([]int, len(pts))
	for it := 0; it < 100; it++ {
		changed := false
		for i, p := range pts {
			c := 0
			if Dist2(p, centre[1]) < Dist2(p, centre[0]) {
				c = 1
			}
			if c != assign[i] {
				assign[i], changed = c, true
			}
		}
		for c := 0; c < 2; c++ {
			sum := make([]float64, len(pts[0]))
			m := 0
			for i, p := range pts {
				if assign[i] == c {
					for j, v := range p {
						sum[j] += v
					}
					m++
				}
			}
			if m > 0 {
				for j := range sum {
					sum[j] /= float64(m)
				}
				centre[c] = sum
			}
		}
		if !changed && it > 0 {
			break
		}
	}
	var sse float64
	for i, p := range pts {
		sse += Dist2(p, centre[assign[i]])
	}
	return assign, sse
}

// Dist returns the Euclidean distance between a and b (of one length).
func Dist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

// DistTo returns the Euclidean distance from the row v to the point c (of
// one length), such as a mean from Mean.
func DistTo(v []float32, c []float64) float64 {
	var s float64
	for i, x := range v {
		d := float64(x) - c[i]
		s += d * d
	}
	return math.Sqrt(s)
}

// Dist2 returns the squared Euclidean distance between a and b (of one
// length).
func Dist2(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += (a[i] - b[i]) * (a[i] - b[i])
	}
	return s
}

// SpectralNorm returns the largest singular value of the rows x cols
// matrix m (row-major), by power iteration on m^T m.
func SpectralNorm(m []float32, rows, cols int) float64 {
	v := make([]float64, cols)
	for j := range v {
		v[j] = 1 / math.Sqrt(float64(cols))
	}
	var sigma float64
	u := make([]float64, rows)
	for it := 0; it < 50; it++ {
		for i := 0; i < rows; i++ {
			u[i] = 0
			for j := 0; j < cols; j++ {
				u[i] += float64(m[i*cols+j]) * v[j]
			}
		}
		nv := make([]float64, cols)
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				nv[j] += float64(m[i*cols+j]) * u[i]
			}
		}
		norm := math.Sqrt(Dot(nv, nv))
		if norm == 0 {
			return 0
		}
		sigma = math.Sqrt(norm)
		for j := range v {
			v[j] = nv[j] / norm
		}
	}
	return sigma
}

// SolveRidge solves (a + lambda*I) x = b for a symmetric positive
// semi-definite n x n matrix a (row-major) and an n x m right-hand side b
// (row-major), by Cholesky; lambda > 0 keeps it positive definite. It
// returns x (n x m) and leaves a and b unchanged.
func SolveRidge(a []float64, n int, b []float64, m int, lambda float64) ([]float64, error) {
	if len(a) != n*n || len(b) != n*m {
		panic(fmt.Sprintf("stat: SolveRidge: len(a)=%d, len(b)=%d for n=%d, m=%d", len(a), len(b), n, m))
	}
	l, err := Cholesky(a, n, lambda)
	if err != nil {
		return nil, fmt.Errorf("stat: SolveRidge: %w", err)
	}
	x := append([]float64(nil), b...)
	for c := 0; c < m; c++ {
		for i := 0; i < n; i++ { // forward: L y = b
			s := x[i*m+c]
			for k := 0; k < i; k++ {
				s -= l[i*n+k] * x[k*m+c]
			}
			x[i*m+c] = s / l[i*n+i]
		}
		for i := n - 1; i >= 0; i-- { // back: L^T x = y
			s := x[i*m+c]
			for k := i + 1; k < n; k++ {
				s -= l[k*n+i] * x[k*m+c]
			}
			x[i*m+c] = s / l[i*n+i]
		}
	}
	return x, nil
}

// Cholesky returns the lower triangular factor l (n x n, row-major) of a +
// lambda*I = l l^T, for a symmetric n x n matrix a (row-major; only its
// lower triangle is read). It fails when a + lambda*I is not positive
// definite.
func Cholesky(a []float64, n int, lambda float64) ([]float64, error) {
	if len(a) != n*n {
		panic(fmt.Sprintf("stat: Cholesky: len(a)=%d for n=%d", len(a), n))
	}
	l := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			s := a[i*n+j]
			if i == j {
				s += lambda
			}
			for k := 0; k < j; k++ {
				s -= l[i*n+k] * l[j*n+k]
			}
			if i == j {
				if s <= 0 {
					return nil, fmt.Errorf("matrix not positive definite at row %d (raise lambda)", i)
				}
				l[i*n+i] = math.Sqrt(s)
			} else {
				l[i*n+j] = s / l[j*n+j]
			}
		}
	}
	return l, nil
}

// TraceCov returns the trace of the covariance of n rows of d values
// (population form: sum over columns of the mean square minus the squared
// mean).
func TraceCov(x []float32, n, d int) float64 {
	var tr float64
	for j := 0; j < d; j++ {
		var s, sq float64
		for i := 0; i < n; i++ {
			v := float64(x[i*d+j])
			s += v
			sq += v * v
		}
		m := s / float64(n)
		tr += sq/float64(n) - m*m
	}
	return tr
}

// Count returns how many of b are true.
func Count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// QuantileSorted returns the q quantile of v, sorted ascending and not
// empty, as the stages take it: the value at index ⌊q·len(v)⌋, the
// largest for q 1 (so under 1/(1-q) values it is always the largest).
func QuantileSorted(v []float32, q float64) float32 {
	return v[min(len(v)-1, int(q*float64(len(v))))]
}
