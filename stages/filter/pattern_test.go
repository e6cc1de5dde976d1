package filter

import (
	"fmt"
	"math"
	"testing"
)

func TestNeighbours(t *testing.T) {
	sizes := [2]int{3, 10}
	cases := []struct {
		name string
		p    Pattern
		want int // at least this many neighbours
	}{
		{"inside", Pattern{Kind: "solid", Size: 5, Row: 10, Col: 10}, 14},
		{"corner", Pattern{Kind: "checker", Size: 3, Row: 29, Col: 29}, 3},
		{"smallest", Pattern{Kind: "noise", Size: 3, Row: 0, Col: 0}, 3},
		{"largest", Pattern{Kind: "solid", Size: 10, Row: 5, Col: 5}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := neighbours(tc.p, 32, 32, sizes)
			if len(ns) < tc.want {
				t.Fatalf("%d neighbours, want at least %d", len(ns), tc.want)
			}
			seen := map[string]bool{fmt.Sprintf("%+v", tc.p): true}
			for _, q := range ns {
				if seen[fmt.Sprintf("%+v", q)] {
					t.Fatalf("%+v repeats the pattern or another neighbour", q)
				}
				seen[fmt.Sprintf("%+v", q)] = true
				if q.Size < sizes[0] || q.Size > sizes[1] || q.Row < 0 || q.Col < 0 || q.Row+q.Size > 32 || q.Col+q.Size > 32 {
					t.Fatalf("%+v leaves the image or the size range", q)
				}
				if q.Kind != tc.p.Kind || q.Colors != tc.p.Colors {
					t.Fatalf("%+v changed the pattern's kind or colours", q)
				}
				if d := q.Size - tc.p.Size; d < -1 || d > 2 {
					t.Fatalf("%+v: size changed by %d", q, d)
				}
				// A resized neighbour covers the original or lies inside it.
				if q.Size != tc.p.Size {
					a, b := q, tc.p
					if a.Size < b.Size {
						a, b = b, a
					}
					if b.Row < a.Row || b.Col < a.Col || b.Row+b.Size > a.Row+a.Size || b.Col+b.Size > a.Col+a.Size {
						t.Fatalf("%+v neither covers nor lies inside %+v", q, tc.p)
					}
				}
			}
		})
	}
	b := neighbours(Pattern{Kind: "blend", Alpha: 0.04}, 32, 32, sizes)
	if len(b) != 2 || b[0].Alpha <= 0 || b[1].Alpha <= 0.04 {
		t.Fatalf("blend neighbours %+v, want two with alpha > 0 on both sides", b)
	}
}

// A noise blend is judged by how much more it collapses the scan images
// than a smooth blend of the same alpha: blend_ratio times as much is
// gap_min, as much is 0, whatever the noise blends do among themselves.
func TestSweep(t *testing.T) {
	yellow := [2][3]float32{{1, 1, 0}}
	cases := []struct {
		name string
		ps   []Pattern
		h, w int
		want int      // patterns swept
		must [][3]int // (size, row, col) that must be among them
		not  [][3]int // that must not
	}{
		{"a 3x3 tiles a 32x32 image, its own place left out", []Pattern{{Kind: "solid", Size: 3, Row: 9, Col: 5, Colors: yellow}}, 32, 32, 11*11 - 0,
			[][3]int{{3, 0, 0}, {3, 29, 0}, {3, 29, 29}, {3, 27, 3}}, [][3]int{{3, 9, 5}}},
		{"a 4x4 on a grid point is not swept onto itself", []Pattern{{Kind: "checker", Size: 4, Row: 4, Col: 8, Colors: yellow}}, 32, 32, 8*8 - 1,
			[][3]int{{4, 28, 28}, {4, 0, 0}}, [][3]int{{4, 4, 8}}},
		{"the same look twice is swept once", []Pattern{{Kind: "solid", Size: 4, Row: 0, Col: 0, Colors: yellow}, {Kind: "solid", Size: 4, Row: 1, Col: 1, Colors: yellow}}, 32, 32, 8*8 - 1,
			nil, [][3]int{{4, 0, 0}}},
		{"another colour is another look", []Pattern{{Kind: "solid", Size: 8, Row: 0, Col: 0, Colors: yellow}, {Kind: "solid", Size: 8, Row: 0, Col: 0}}, 32, 32, 2 * (4*4 - 1),
			nil, nil},
		{"blends and data triggers have no place", []Pattern{{Kind: "blend", Alpha: 0.1}, {Kind: "delta"}}, 32, 32, 0, nil, nil},
		{"a patch as large as the image has nowhere to go", []Pattern{{Kind: "solid", Size: 16, Row: 0, Col: 0}}, 16, 16, 0, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sweep(tc.ps, tc.h, tc.w)
			if len(got) != tc.want {
				t.Fatalf("%d patterns swept, want %d", len(got), tc.want)
			}
			at := map[[3]int]bool{}
			for _, q := range got {
				if q.Row < 0 || q.Col < 0 || q.Row+q.Size > tc.h || q.Col+q.Size > tc.w {
					t.Fatalf("%v leaves the %dx%d image", q, tc.h, tc.w)
				}
				at[[3]int{q.Size, q.Row, q.Col}] = true
			}
			for _, m := range tc.must {
				if !at[m] {
					t.Errorf("size %d at (%d,%d) not swept", m[0], m[1], m[2])
				}
			}
			for _, m := range tc.not {
				if at[m] {
					t.Errorf("size %d at (%d,%d) swept, want it left out", m[0], m[1], m[2])
				}
			}
		})
	}
}

func TestBlendJudgedAgainstSmoothControls(t *testing.T) {
	var alphas, cs []float64
	for i := 0; i < 40; i++ {
		a := 0.1 + 0.1*float64(i)/39
		alphas, cs = append(alphas, a), append(cs, 2*math.Pow(a, 1.7))
	}
	g := groupStats{groups: map[int][2]float64{0: {0.9, 0.01}, 3: {0.1, 0.02}}, control: fitPower(alphas, cs), ratio: 4, gap: 6}
	ref := func(a float64) float64 { return 2 * math.Pow(a, 1.7) }
	for _, tc := range []struct {
		name     string
		p        Pattern
		collapse float64
		want     float64
	}{
		{"blend as strong as smooth", Pattern{Kind: "blend", Alpha: 0.15}, ref(0.15), 0},
		{"blend twice smooth (a clean encoder)", Pattern{Kind: "blend", Alpha: 0.12}, 2 * ref(0.12), 2},
		{"blend blend_ratio times smooth", Pattern{Kind: "blend", Alpha: 0.2}, 4 * ref(0.2), 6},
		{"blend ten times smooth (a noise trojan)", Pattern{Kind: "blend", Alpha: 0.1}, 10 * ref(0.1), 18},
		{"alpha outside the controls' range", Pattern{Kind: "blend", Alpha: 0.25}, 4 * ref(0.25), 6},
		{"patch: its size group", Pattern{Kind: "solid", Size: 3}, 0.3, 10},
		{"delta: the noise blends' group", Pattern{Kind: "delta"}, 0.95, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if z := g.z(tc.p, tc.collapse); math.Abs(z-tc.want) > 1e-6 {
				t.Fatalf("z %.6f, want %.6f", z, tc.want)
			}
		})
	}
	if fitPower([]float64{0.1, 0.1}, []float64{1, 2}) != nil {
		t.Fatal("a fit from one alpha")
	}
}

// A smooth blend changes every pixel by at most alpha, and neighbouring
// pixels alike.
func TestSmoothBlendIsSmooth(t *testing.T) {
	const h, w = 32, 32
	x := make([]float32, 3*h*w)
	Pattern{Kind: "smooth", Alpha: 0.2, NoiseSeed: 7}.Apply(x, h, w)
	for c := 0; c < 3; c++ {
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				v := x[c*h*w+y*w+xx]
				if v < 0 || v > 0.2+1e-6 {
					t.Fatalf("value %v at %d,%d,%d outside [0, alpha]", v, c, y, xx)
				}
				if xx > 0 && math.Abs(float64(v-x[c*h*w+y*w+xx-1])) > 0.2/float64(w)*(smoothGrid-1)+1e-6 {
					t.Fatalf("jump at %d,%d,%d", c, y, xx)
				}
			}
		}
	}
}

func TestAnchored(t *testing.T) {
	cases := []struct {
		name  string
		h, w  int
		sizes [2]int
		// borders leaves out the centre
		borders bool
		want    int       // patterns
		must    []Pattern // that must be among them
	}{
		{"three sizes, nine places, ten looks", 32, 32, [2]int{3, 10}, false, 3 * 9 * 10, []Pattern{
			{Kind: "checker", Size: 3, Row: 29, Col: 29, Colors: [2][3]float32{{}, {1, 1, 1}}},
			{Kind: "checker", Size: 3, Row: 29, Col: 0, Colors: [2][3]float32{{1, 1, 1}, {}}},
			{Kind: "solid", Size: 3, Row: 14, Col: 0, Colors: [2][3]float32{{0, 1, 1}}},
			{Kind: "solid", Size: 5, Row: 27, Col: 27, Colors: [2][3]float32{{1, 1, 1}}},
			{Kind: "solid", Size: 4, Row: 14, Col: 14},
		}},
		{"a range of two sizes gives two", 32, 32, [2]int{3, 4}, false, 2 * 9 * 10, nil},
		{"a small image: places once, sizes larger than it left out", 4, 4, [2]int{3, 10}, false, 4*10 + 1*10, nil},
		{"borders: eight places", 32, 32, [2]int{3, 10}, true, 3 * 8 * 10, []Pattern{
			{Kind: "checker", Size: 3, Row: 29, Col: 29, Colors: [2][3]float32{{}, {1, 1, 1}}},
			{Kind: "solid", Size: 3, Row: 14, Col: 0, Colors: [2][3]float32{{0, 1, 1}}},
			{Kind: "solid", Size: 4, Row: 0, Col: 14},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := anchored(tc.h, tc.w, tc.sizes, !tc.borders)
			if len(got) != tc.want {
				t.Fatalf("%d patterns, want %d", len(got), tc.want)
			}
			key := func(p Pattern) string { return fmt.Sprintf("%s %v", p.String(), p.Colors) }
			seen := map[string]bool{}
			for _, p := range got {
				if p.Row < 0 || p.Col < 0 || p.Row+p.Size > tc.h || p.Col+p.Size > tc.w || p.Size < tc.sizes[0] || p.Size > tc.sizes[1] {
					t.Fatalf("%v leaves the %dx%d image or the sizes %v", p, tc.h, tc.w, tc.sizes)
				}
				if seen[key(p)] {
					t.Fatalf("%s twice", key(p))
				}
				seen[key(p)] = true
				if tc.borders && p.Row == (tc.h-p.Size)/2 && p.Col == (tc.w-p.Size)/2 {
					t.Errorf("borders: %s at the centre", key(p))
				}
			}
			for _, m := range tc.must {
				if !seen[key(m)] {
					t.Errorf("%s missing", key(m))
				}
			}
		})
	}
}

// TestClimbReachesTheTrigger: with a judge that scores a patch by how
// well it paints a hidden trigger (pixels it paints as the trigger does,
// less those it paints otherwise), the climb goes from a patch near the
// trigger in another look to the trigger itself, judges no pattern twice,
// and stays where it is when it starts on the trigger or has no steps.
func TestClimbReachesTheTrigger(t *testing.T) {
	const h, w = 32, 32
	black, white, red := [3]float32{}, [3]float32{1, 1, 1}, [3]float32{1, 0, 0}
	checker := Pattern{Kind: "checker", Size: 8, Row: 12, Col: 10, Colors: [2][3]float32{white, black}}
	redCorner := Pattern{Kind: "solid", Size: 5, Row: 0, Col: 0, Colors: [2][3]float32{red}}
	for _, tc := range []struct {
		name    string
		trigger Pattern
		from    Pattern
		steps   int
		want    Pattern
	}{
		{"a noise patch inside a checkerboard", checker, Pattern{Kind: "noise", Size: 4, Row: 14, Col: 12, NoiseSeed: 9}, 8, checker},
		{"a magenta patch beside a red corner", redCorner, Pattern{Kind: "solid", Size: 3, Row: 1, Col: 1, Colors: [2][3]float32{{1, 0, 1}}}, 8, redCorner},
		{"on the trigger", checker, checker, 8, checker},
		{"no steps", checker, Pattern{Kind: "noise", Size: 4, Row: 14, Col: 12, NoiseSeed: 9}, 0, Pattern{Kind: "noise", Size: 4, Row: 14, Col: 12, NoiseSeed: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			score := overlapScore(tc.trigger, h, w)
			seen := map[string]bool{}
			judge := func(ps []Pattern) (cand, float64, error) {
				best, bz := cand{}, math.Inf(-1)
				for _, p := range ps {
					k := patchKey(p)
					if seen[k] {
						t.Errorf("%s judged twice", p)
					}
					seen[k] = true
					if z := score(p); z > bz {
						best, bz = cand{p: p}, z
					}
				}
				return best, bz, nil
			}
			got, z, judged, err := climb(cand{p: tc.from}, score(tc.from), tc.steps, h, w, [2]int{3, 10}, judge)
			if err != nil {
				t.Fatal(err)
			}
			if patchKey(got.p) != patchKey(tc.want) {
				t.Errorf("climbed to %s %v, want %s %v", got.p, got.p.Colors, tc.want, tc.want.Colors)
			}
			if z != score(got.p) || judged != len(seen) {
				t.Errorf("z %.0f for a patch scoring %.0f; %d judged, %d seen", z, score(got.p), judged, len(seen))
			}
		})
	}
}

// TestBestPlace: the called patch, screened over every place of the image
// and its best places judged, lands on the trigger's own place wherever
// the trigger sits (an odd place, flush with the far corner, a
// checkerboard), never screens its own place, judges only its best
// screened places (a screen that ranks decoys first hides the trigger
// when fewer are kept than decoys), and finds nothing to screen when the
// patch fills the image.
func TestBestPlace(t *testing.T) {
	const h, w = 32, 32
	black, white := [3]float32{}, [3]float32{1, 1, 1}
	solid := func(size, row, col int) Pattern {
		return Pattern{Kind: "solid", Size: size, Row: row, Col: col, Colors: [2][3]float32{white}}
	}
	checker := func(row, col int) Pattern {
		return Pattern{Kind: "checker", Size: 8, Row: row, Col: col, Colors: [2][3]float32{white, black}}
	}
	decoys := map[[2]int]bool{{0, 1}: true, {5, 5}: true, {9, 20}: true, {20, 3}: true}
	for _, tc := range []struct {
		name          string
		trigger, call Pattern
		keep, decoys  int     // places kept after the screen; decoys: the screen ranks four decoys first
		want          Pattern // zero Kind: no place beats the call
		screened      int
	}{
		{"a white patch at an odd place", solid(3, 27, 27), solid(3, 10, 17), 16, 0, solid(3, 27, 27), 30*30 - 1},
		{"flush with the far corner", solid(3, 29, 29), solid(3, 0, 0), 16, 0, solid(3, 29, 29), 30*30 - 1},
		{"a checkerboard", checker(12, 10), checker(0, 0), 16, 0, checker(12, 10), 25*25 - 1},
		{"decoys ranked first, 16 kept", solid(3, 27, 27), solid(3, 10, 17), 16, 4, solid(3, 27, 27), 30*30 - 1},
		{"decoys ranked first, 4 kept", solid(3, 27, 27), solid(3, 10, 17), 4, 4, Pattern{}, 30*30 - 1},
		{"the call on the trigger", solid(3, 27, 27), solid(3, 27, 27), 16, 0, Pattern{}, 30*30 - 1},
		{"a patch that fills the image", solid(32, 0, 0), solid(32, 0, 0), 16, 0, Pattern{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			score := overlapScore(tc.trigger, h, w)
			seen := map[[2]int]bool{}
			screen := func(ps []Pattern) ([]float64, error) {
				out := make([]float64, len(ps))
				for i, p := range ps {
					k := [2]int{p.Row, p.Col}
					if seen[k] || (p.Row == tc.call.Row && p.Col == tc.call.Col) {
						t.Errorf("%s screened twice, or the call's own place", p)
					}
					if p.Kind != tc.call.Kind || p.Size != tc.call.Size || p.Colors != tc.call.Colors {
						t.Errorf("screened %s %v, not the call's look", p, p.Colors)
					}
					seen[k] = true
					out[i] = score(p)
					if tc.decoys > 0 && decoys[k] {
						out[i] += 1000
					}
				}
				return out, nil
			}
			judged := 0
			judge := func(ps []Pattern) (cand, float64, error) {
				judged += len(ps)
				best, bz := cand{}, math.Inf(-1)
				for _, p := range ps {
					if z := score(p); z > bz {
						best, bz = cand{p: p}, z
					}
				}
				return best, bz, nil
			}
			got, z, screened, err := bestPlace(tc.call, h, w, tc.keep, screen, judge)
			if err != nil {
				t.Fatal(err)
			}
			if screened != tc.screened || screened != len(seen) {
				t.Errorf("%d places screened (%d seen), want %d", screened, len(seen), tc.screened)
			}
			if want := min(tc.keep, screened); judged != want {
				t.Errorf("%d places judged, want %d", judged, want)
			}
			if screened > 0 && z != score(got.p) {
				t.Errorf("z %.0f for a place scoring %.0f", z, score(got.p))
			}
			beats := screened > 0 && z > score(tc.call)
			if tc.want.Kind == "" {
				if beats {
					t.Errorf("%s (z %.0f) beats the call (%.0f)", got.p, z, score(tc.call))
				}
				return
			}
			if !beats || got.p.String() != tc.want.String() {
				t.Errorf("best place %s (z %.0f, beats the call: %v), want %s", got.p, z, beats, tc.want)
			}
		})
	}
}

// overlapScore scores a pattern by how it paints a grey h x w image
// against trigger: each value it paints as trigger does counts one, each
// other value it paints counts minus one.
func overlapScore(trigger Pattern, h, w int) func(Pattern) float64 {
	paint := func(p Pattern) []float32 {
		x := make([]float32, 3*h*w)
		for i := range x {
			x[i] = 0.5
		}
		p.Apply(x, h, w)
		return x
	}
	ref := paint(trigger)
	return func(p Pattern) float64 {
		x, s := paint(p), 0.0
		for i := range x {
			switch {
			case x[i] == 0.5:
			case x[i] == ref[i]:
				s++
			default:
				s--
			}
		}
		return s
	}
}
