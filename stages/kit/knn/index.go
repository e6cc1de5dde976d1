package knn

import (
	"fmt"
	"math"
)

// Index answers nearest-neighbour queries (cosine, on the rows as given:
// no standardisation) against a fixed set of reference rows, in Go. It is
// for a few queries; Neighbors is for every row against every row.
type Index struct {
	unit []float32
	d    int
}

// NewIndex holds the rows of x (d values each) for queries.
func NewIndex(x []float32, d int) (*Index, error) {
	if d <= 0 || len(x)%d != 0 {
		return nil, fmt.Errorf("knn: %d values are not rows of %d", len(x), d)
	}
	return &Index{unit: unitRows(x, d), d: d}, nil
}

// Len is how many reference rows the index holds.
func (ix *Index) Len() int { return len(ix.unit) / ix.d }

// Nearest returns the indices of the k reference rows most similar to q
// (d values), best first; ties by lower index.
func (ix *Index) Nearest(q []float32, k int) ([]int32, error) {
	if len(q) != ix.d {
		return nil, fmt.Errorf("knn: a query of %d values, the index holds rows of %d", len(q), ix.d)
	}
	k = min(k, ix.Len())
	if k <= 0 {
		return nil, nil
	}
	u := unitRows(q, ix.d)
	t := topK{v: make([]float32, k), i: make([]int32, k)}
	for j := range t.v {
		t.v[j], t.i[j] = float32(math.Inf(-1)), math.MaxInt32
	}
	for c := 0; c < ix.Len(); c++ {
		t.push(dot(u, ix.unit[c*ix.d:(c+1)*ix.d]), int32(c))
	}
	return t.i, nil
}

// unitRows returns x's rows (d values each) scaled to unit length (a zero
// row stays zero).
func unitRows(x []float32, d int) []float32 {
	out := make([]float32, len(x))
	for i := 0; i+d <= len(x); i += d {
		var s float64
		for _, v := range x[i : i+d] {
			s += float64(v) * float64(v)
		}
		if s == 0 {
			continue
		}
		n := float32(1 / math.Sqrt(s))
		for k, v := range x[i : i+d] {
			out[i+k] = v * n
		}
	}
	return out
}
