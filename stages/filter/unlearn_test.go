package filter

import (
	"slices"
	"testing"
)

// TestCarryingSuspects: under sift_suspects "carriers" a sift suspect of
// a class where the class split or the planted check found carriers stays
// a suspect only when it is one of them or carries the data trigger; in a
// class where nothing was found every sift suspect stays.
func TestCarryingSuspects(t *testing.T) {
	// Rows 0-5 are class 1, rows 6-8 class 2.
	labels := []int32{1, 1, 1, 1, 1, 1, 2, 2, 2}
	cases := []struct {
		name                string
		sus, found, carrier []bool
		keep                []bool
		released            int
	}{
		{
			name: "clean rows of a class with found carriers are released",
			// Rows 0-2 carry the found trigger, 3-4 are clean rows sift marked with them.
			sus:      []bool{true, true, true, true, true, false, false, false, false},
			found:    []bool{true, true, true, false, false, false, false, false, false},
			carrier:  make([]bool, 9),
			keep:     []bool{true, true, true, false, false, false, false, false, false},
			released: 2,
		},
		{
			name:     "the data trigger's carriers stay",
			sus:      []bool{true, false, false, true, true, false, false, false, false},
			found:    []bool{true, false, false, false, false, false, false, false, false},
			carrier:  []bool{false, false, false, true, false, false, false, false, false},
			keep:     []bool{true, false, false, true, false, false, false, false, false},
			released: 1,
		},
		{
			name:     "a class with nothing found keeps every suspect",
			sus:      []bool{false, false, false, false, false, false, true, true, false},
			found:    []bool{true, true, false, false, false, false, false, false, false},
			carrier:  make([]bool, 9),
			keep:     []bool{false, false, false, false, false, false, true, true, false},
			released: 0,
		},
		{
			name:     "nothing found anywhere: every suspect stays",
			sus:      []bool{true, true, false, false, false, false, true, false, false},
			found:    make([]bool, 9),
			carrier:  make([]bool, 9),
			keep:     []bool{true, true, false, false, false, false, true, false, false},
			released: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keep, released := CarryingSuspects(tc.sus, tc.found, tc.carrier, labels)
			if !slices.Equal(keep, tc.keep) || released != tc.released {
				t.Errorf("keep %v, released %d; want %v, %d", keep, released, tc.keep, tc.released)
			}
		})
	}
}
