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
