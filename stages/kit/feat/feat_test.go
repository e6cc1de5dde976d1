package feat_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/feat"
)

func TestCountPer(t *testing.T) {
	labels := []int32{0, 2, 2, 1, 2, 0}
	for _, tc := range []struct {
		name string
		mask []bool
		nc   int
		want []int
	}{
		{"nil mask counts every row", nil, 3, []int{2, 1, 3}},
		{"a mask counts only its rows", []bool{true, false, true, false, true, false}, 3, []int{1, 0, 2}},
		{"an empty mask counts nothing", make([]bool, 6), 3, []int{0, 0, 0}},
		{"classes past the labels stay zero", nil, 5, []int{2, 1, 3, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := feat.CountPer(tc.mask, labels, tc.nc); !slices.Equal(got, tc.want) {
				t.Errorf("CountPer(%v) = %v, want %v", tc.mask, got, tc.want)
			}
		})
	}
}

func ExampleCountPer() {
	labels := []int32{0, 1, 1, 2}
	kept := []bool{true, true, false, true}
	fmt.Println(feat.CountPer(nil, labels, 3), feat.CountPer(kept, labels, 3))
	// Output: [1 2 1] [1 1 1]
}
