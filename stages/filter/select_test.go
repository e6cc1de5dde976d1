package filter

import "testing"

// On a patch trojan a rescan's best is its best pattern that is not a
// noise blend: the refined one when one made the top ten, else the best
// such candidate; a search whose best is a patch is left as it is.
func TestPatchesOnly(t *testing.T) {
	stats := groupStats{groups: map[int][2]float64{0: {0.1, 0.01}, 3: {0.1, 0.01}, 5: {0.1, 0.02}}}
	blend := Pattern{Kind: "blend", Alpha: 0.1, NoiseSeed: 7}
	p3 := Pattern{Kind: "solid", Size: 3, Row: 1, Col: 2}
	p5 := Pattern{Kind: "solid", Size: 5, Row: 9, Col: 4}
	search := func(best cand, top []cand, patch cand) *scanResult {
		r := &scanResult{stats: stats, top: top, bestPatch: patch.p, bestPatchC: patch.c, bestPatchZ: stats.z(patch.p, patch.c)}
		r.Pattern, r.BestCollapse, r.BestZ = best.p, best.c, stats.z(best.p, best.c)
		return r
	}
	cases := []struct {
		name  string
		in    *scanResult
		want  Pattern
		wantZ float64
	}{
		{"a patch is best", search(cand{p3, 0.2}, []cand{{p3, 0.2}, {blend, 0.18}}, cand{p3, 0.2}), p3, 10},
		{"a refined patch in the top ten", search(cand{blend, 0.3}, []cand{{blend, 0.3}, {p5, 0.22}, {p3, 0.15}}, cand{p3, 0.15}), p5, 6},
		{"no patch in the top ten", search(cand{blend, 0.3}, []cand{{blend, 0.3}}, cand{p3, 0.13}), p3, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.patchesOnly()
			if got.Pattern.String() != tc.want.String() {
				t.Fatalf("best %v, want %v", got.Pattern, tc.want)
			}
			if d := got.BestZ - tc.wantZ; d > 1e-9 || d < -1e-9 {
				t.Fatalf("z %.3f, want %.3f", got.BestZ, tc.wantZ)
			}
			if tc.in.Pattern.Kind == "blend" && got == tc.in {
				t.Fatal("the search's own result was changed in place")
			}
			if tc.in.Pattern.Kind == "blend" && tc.in.Pattern.String() != blend.String() {
				t.Fatal("the search's result was modified")
			}
		})
	}
}

// TestRescanPick: the search's best comes first unless rescan_first
// "neighbours" puts a neighbour that reached its bar before it.
func TestRescanPick(t *testing.T) {
	for _, tc := range []struct {
		first, search, neighbour bool
		want                     string
	}{
		{false, true, true, "search"},
		{false, true, false, "search"},
		{false, false, true, "neighbour"},
		{false, false, false, ""},
		{true, true, true, "neighbour"},
		{true, true, false, "search"},
		{true, false, true, "neighbour"},
		{true, false, false, ""},
	} {
		if got := rescanPick(tc.first, tc.search, tc.neighbour); got != tc.want {
			t.Errorf("rescanPick(first %v, search %v, neighbour %v) = %q, want %q", tc.first, tc.search, tc.neighbour, got, tc.want)
		}
	}
}
