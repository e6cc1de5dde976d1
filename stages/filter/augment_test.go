package filter

import (
	"slices"
	"testing"
)

// TestTurns: without families every pattern takes its turn; with them each
// family does, going round its own patterns, so that a lone pattern (a
// trigger found in the data) gets as many rows as a found pattern's
// neighbours together.
func TestTurns(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		by   []string
		want []int
	}{
		{"patterns", 4, nil, []int{0, 1, 2, 3}},
		{"one family", 3, []string{"a", "a", "a"}, []int{0, 1, 2}},
		{"a family and a lone pattern", 4, []string{"a", "a", "a", "p"}, []int{0, 3, 1, 3, 2, 3}},
		{"two families, interleaved names", 5, []string{"a", "b", "a", "b", "c"}, []int{0, 1, 4, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := turns(tc.n, tc.by); !slices.Equal(got, tc.want) {
				t.Errorf("turns(%d, %q) = %v, want %v", tc.n, tc.by, got, tc.want)
			}
		})
	}
}
