package knn_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/knn"
)

// An index answers as the all-pairs oracle does for a row of its own set
// (which comes first, its own nearest), and rejects bad shapes.
func TestIndexNearest(t *testing.T) {
	const n, d, k = 120, 16, 5
	x := data(n, d, 3)
	ix, err := knn.NewIndex(x, d)
	if err != nil {
		t.Fatal(err)
	}
	// The oracle works on unit rows; cosine does not depend on length.
	want := oracle(unit(x, d), n, d, k-1)
	for _, i := range []int{0, 17, 119} {
		got, err := ix.Nearest(x[i*d:(i+1)*d], k)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != int32(i) || fmt.Sprint(got[1:]) != fmt.Sprint(want[i]) {
			t.Errorf("row %d: %v, want itself then %v", i, got, want[i])
		}
	}
	if _, err := ix.Nearest(x[:d-1], k); err == nil {
		t.Error("a query of the wrong length is accepted")
	}
	if _, err := knn.NewIndex(x[:d+1], d); err == nil {
		t.Error("values that are not whole rows are accepted")
	}
	if got, _ := ix.Nearest(x[:d], n+10); len(got) != n {
		t.Errorf("k over the rows: %d answers, want %d", len(got), n)
	}
}

func unit(x []float32, d int) []float32 {
	out := make([]float32, len(x))
	for i := 0; i < len(x); i += d {
		var s float64
		for _, v := range x[i : i+d] {
			s += float64(v) * float64(v)
		}
		for j, v := range x[i : i+d] {
			out[i+j] = float32(float64(v) / math.Sqrt(s))
		}
	}
	return out
}
