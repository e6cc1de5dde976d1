package filter

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
)

// augmentedRows builds augment rows in 2-d: pattern k's rows, with the
// share moved[k] of them moved by 5 (the rest by 0.1), orig at the origin
// unless atOrigin.
func augmentedRows(moved []float64, perPattern int, atOrigin bool) *augmented {
	return augmentedRowsBy(moved, perPattern, atOrigin, 0.1)
}

// augmentedRowsBy is augmentedRows with the rest moved by rest.
func augmentedRowsBy(moved []float64, perPattern int, atOrigin bool, rest float32) *augmented {
	a := &augmented{d: 2}
	for k, share := range moved {
		for i := 0; i < perPattern; i++ {
			o := []float32{10, 10}
			if atOrigin {
				o = []float32{0.05, 0}
			}
			f := []float32{o[0] + rest, o[1]}
			if float64(i) < share*float64(perPattern) {
				f[0] = o[0] + 5
			}
			a.pattern, a.label = append(a.pattern, k), append(a.label, int32(i%3))
			a.orig = append(a.orig, o...)
			a.filt = append(a.filt, f...)
		}
	}
	return a
}

func TestGate(t *testing.T) {
	moved := &Moved{Threshold: 1}
	from := &Region{Suspects: 3, Centre: []float64{0, 0}, Threshold: 0.5}
	two := []string{"solid 4x4 at (0,0)", "solid 4x4 at (0,0)", "checker 3x3 at (5,5)"}
	for _, tc := range []struct {
		name    string
		moved   *Moved
		from    *Region
		aug     *augmented
		family  []string
		min     float64
		on      bool
		why     string
		shares  []float64
		origins bool
		thresh  float64 // the gate's move threshold when on
	}{
		// The best pattern sends 70% through at the moved step's
		// threshold: the gate goes below its rows' smaller move, 0.1,
		// and sends them all.
		{"a pattern moves its inputs", moved, nil, augmentedRows([]float64{0.9, 0.5, 0.02}, 20, false), two, 0.25, true, "", []float64{1, 1}, false, 0.1},
		// 97.5% of the best pattern's rows move by 5: the threshold stays.
		{"a pattern moves nearly all its inputs", moved, nil, augmentedRowsBy([]float64{1, 0.95, 0}, 20, false, 0.5), two, 0.25, true, "", []float64{0.975, 0}, false, 1},
		// 80% move by 5, the rest by 2: the gate goes just under 2.
		{"the rest of a pattern's rows move less", &Moved{Threshold: 3}, nil, augmentedRowsBy([]float64{0.8, 0.8, 0}, 20, false, 2), two, 0.25, true, "", []float64{1, 1}, false, 2},
		{"no pattern reaches gate_min", moved, nil, augmentedRows([]float64{0.1, 0.2, 0.05}, 20, false), two, 0.25, false, "best 15.0%", []float64{0.15, 0.05}, false, 0},
		{"the origin sends inputs through", moved, from, augmentedRows([]float64{0, 0, 0}, 20, true), two, 0.25, true, "", []float64{1, 1}, true, 1},
		{"gate_min 0: no gate", moved, nil, augmentedRows([]float64{1, 1, 1}, 20, false), two, 0, false, "gate_min is 0", nil, false, 0},
		{"moved step off", &Moved{Why: "moved_z is 0"}, nil, augmentedRows([]float64{1, 1, 1}, 20, false), two, 0.25, false, "no move threshold (moved_z is 0)", nil, false, 0},
		{"no augment rows", moved, nil, &augmented{}, two, 0.25, false, "no augment rows", nil, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := gate(tc.moved, tc.from, tc.aug, tc.family, tc.min, 0.95, 0, nil, "", false, nil)
			if rep.On != tc.on || (rep.Gate != nil) != tc.on || !strings.Contains(rep.Why, tc.why) {
				t.Fatalf("gate %+v, want on %v, why %q", rep, tc.on, tc.why)
			}
			if len(rep.Patterns) != len(tc.shares) {
				t.Fatalf("checked %+v, want %d patterns", rep.Patterns, len(tc.shares))
			}
			for j, want := range tc.shares {
				if c := rep.Patterns[j]; c.Through != want {
					t.Errorf("pattern %q: %.3f through, want %.3f", c.Pattern, c.Through, want)
				}
			}
			if tc.on && (math.Abs(rep.Moved-tc.thresh) > 1e-3*tc.thresh || rep.Gate.Moved != rep.Moved) {
				t.Errorf("threshold %g (gate %g), want just under or at %g", rep.Moved, rep.Gate.Moved, tc.thresh)
			}
			if tc.on && (rep.Gate.Centre != nil) != tc.origins {
				t.Errorf("gate origin %v, want one: %v", rep.Gate.Centre, tc.origins)
			}
		})
	}
}

// A gate that would send most training rows through the filtered encoder
// is turned off: it is no gate.
func TestCountTrainingTurnsAWideGateOff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		moved   []float32
		on      bool
		through float64
	}{
		{"a third through", []float32{0.5, 0.6, 3}, true, 1.0 / 3},
		{"two thirds through", []float32{0.5, 2, 3}, true, 2.0 / 3},
		{"all through", []float32{1.5, 2, 3}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := gate(&Moved{Threshold: 1}, nil, augmentedRows([]float64{1}, 20, false), []string{"solid 4x4 at (0,0)"}, 0.25, 0.95, 0, nil, "", false, nil)
			if !rep.On {
				t.Fatalf("gate off before counting: %+v", rep)
			}
			rep.countTraining(tc.moved, make([]float32, 2*len(tc.moved)), 2)
			if rep.On != tc.on || (rep.Gate != nil) != tc.on || math.Abs(rep.TrainingThrough-tc.through) > 1e-9 {
				t.Errorf("on %v (gate %v), %.3f through; want %v, %.3f (%s)", rep.On, rep.Gate != nil, rep.TrainingThrough, tc.on, tc.through, rep.Why)
			}
		})
	}
}

// With gate_through 0 the gate keeps the moved step's threshold.
func TestGateThroughZeroKeepsTheThreshold(t *testing.T) {
	rep := gate(&Moved{Threshold: 1}, nil, augmentedRows([]float64{0.5}, 20, false), []string{"solid 4x4 at (0,0)"}, 0.25, 0, 0, nil, "", false, nil)
	if !rep.On || rep.Moved != 1 || rep.Patterns[0].Through != 0.5 {
		t.Errorf("gate %+v, want on at threshold 1 with half the rows through", rep)
	}
}

// The shift check's pattern (shifted) must go through: the threshold is
// lowered until shiftThrough of its rows do, even with gate_through 0 and
// when another pattern sends more through; a name that no augment row
// carries changes nothing.
func TestGateLowersForTheShiftedPattern(t *testing.T) {
	fams := []string{"solid 4x4 at (0,0)", "solid 3x3 at (14,0)"}
	for _, tc := range []struct {
		name    string
		shifted string
		thresh  float64 // at most this
		through float64 // the shifted family's share, at least
	}{
		{"none", "", 1, 0},
		{"not among the rows", "checker 3x3 at (1,1)", 1, 0},
		{"the second family", fams[1], 0.11, shiftThrough},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := gate(&Moved{Threshold: 1}, nil, augmentedRows([]float64{0.9, 0.5}, 40, false), fams, 0.25, 0, 0, nil, tc.shifted, false, nil)
			if !rep.On {
				t.Fatalf("gate off: %s", rep.Why)
			}
			if rep.Moved > tc.thresh || (tc.thresh == 1 && rep.Moved != 1) {
				t.Errorf("threshold %.3f, want %v", rep.Moved, tc.thresh)
			}
			if got := rep.Patterns[1].Through; got < tc.through || (tc.through == 0 && got != 0.5) {
				t.Errorf("shifted family's share through %.3f, want at least %.2f", got, tc.through)
			}
		})
	}
}

// A class gate's probe is the rows carrying the found pattern (pattern 0),
// at most probeRows of them, each with its own label.
func TestClassGateProbe(t *testing.T) {
	aug := augmentedRows([]float64{0.5, 0.5}, probeRows+8, false)
	rep := classGate(aug, 0.25)
	if !rep.On || !rep.Class || rep.ProbeRows != probeRows {
		t.Fatalf("class gate %+v, want on with %d probe rows", rep, probeRows)
	}
	g := rep.Gate
	if len(g.ProbeLabels) != len(g.Probe) {
		t.Fatalf("%d probe labels for %d probe rows", len(g.ProbeLabels), len(g.Probe))
	}
	for i, l := range g.ProbeLabels {
		if l != i%3 {
			t.Fatalf("probe row %d has label %d, want its own %d", i, l, i%3)
		}
	}
	if off := classGate(aug, 0); off.On {
		t.Error("a class gate with gate_min 0")
	}
}

// gate_classes "found": a move gate gets a class part whose probe is the
// rows carrying the patterns masked against (pattern index < 2), not a data
// trigger's, each with its own label; "planted" adds up to probeRows rows
// of a planted patch (pattern 3); without either, none.
func TestMoveGateClassPart(t *testing.T) {
	masked := func(k int) bool { return k < 2 }
	planted := func(k int) bool { return k == 3 }
	for _, tc := range []struct {
		name   string
		probes []func(int) bool
		per    int
		rows   int
	}{
		{"off", nil, 10, 0},
		{"the patterns masked against", []func(int) bool{masked}, probeRows, probeRows},
		{"one pattern of few rows", []func(int) bool{func(k int) bool { return k < 1 }}, 10, 10},
		{"and the planted patch", []func(int) bool{masked, planted}, probeRows, 2 * probeRows},
		{"and the planted patch, few rows", []func(int) bool{masked, planted}, 10, 20 + 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aug := augmentedRows([]float64{1, 1, 1, 1}, tc.per, false)
			for i, k := range aug.pattern {
				switch k {
				case 2: // a data trigger's rows
					aug.orig[2*i], aug.orig[2*i+1] = 99, 99
				case 3: // a planted patch's
					aug.orig[2*i+1] = 7
				}
			}
			rep := gate(&Moved{Threshold: 1}, nil, aug, []string{"a", "b", "data", "planted"}, 0.25, 0, 0, tc.probes, "", false, nil)
			if !rep.On {
				t.Fatalf("gate off: %s", rep.Why)
			}
			g := rep.Gate
			if g.Both != (tc.rows > 0) || len(g.Probe) != tc.rows || rep.ProbeRows != tc.rows || g.IsMove() != true {
				t.Fatalf("both %v with %d probe rows (report %d), want %d", g.Both, len(g.Probe), rep.ProbeRows, tc.rows)
			}
			fromPlanted := 0
			for i, e := range g.Probe {
				if e[0] == 99 || g.ProbeLabels[i] != i%tc.per%3 {
					t.Fatalf("probe row %d: %v label %d: a data trigger's row, or not its own label", i, e, g.ProbeLabels[i])
				}
				if e[1] == 7 {
					fromPlanted++
				}
			}
			if want := 0; len(tc.probes) == 2 {
				want = min(tc.per, probeRows)
				if fromPlanted != want {
					t.Fatalf("%d probe rows carry the planted patch, want %d", fromPlanted, want)
				}
			} else if fromPlanted != want {
				t.Fatalf("%d probe rows carry the planted patch, want none", fromPlanted)
			}
			if err := g.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// gate_clean caps the moved step's threshold at a quantile of the trusted
// rows' moves: a pattern whose rows move by 2, under the step's 3, goes
// through only under the cap; the cap never raises the threshold and 0
// (no quantile) leaves it alone.
func TestGateCleanCeiling(t *testing.T) {
	// Trusted rows moved 0.1, 0.2, ..., 1.0; row 10 (untrusted) by 9.
	moved := []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 9}
	trusted := []bool{true, true, true, true, true, true, true, true, true, true, false}
	for _, tc := range []struct {
		name    string
		share   float64
		step    float64
		ceiling float64 // cleanCeiling's value
		thresh  float64 // the gate's threshold
		through float64 // the pattern's rows through
	}{
		{"off", 0, 3, 0, 3, 0},
		{"a tenth of clean rows through", 0.1, 3, 0.9, 0.9, 1},
		{"a fifth", 0.2, 3, 0.8, 0.8, 1},
		{"never raised", 0.1, 0.5, 0.9, 0.5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cleanCeiling(moved, trusted, tc.share)
			if math.Abs(c-tc.ceiling) > 1e-6 {
				t.Fatalf("cleanCeiling %g, want %g", c, tc.ceiling)
			}
			rep := gate(&Moved{Threshold: tc.step}, nil, augmentedRowsBy([]float64{0}, 20, false, 2), []string{"solid 4x4 at (0,0)"}, 0.25, 0, c, nil, "", false, nil)
			if tc.through == 0 {
				if rep.On {
					t.Fatalf("gate on at %g without a ceiling: %+v", rep.Moved, rep)
				}
				return
			}
			if !rep.On || math.Abs(rep.Moved-tc.thresh) > 1e-6 || rep.Gate.Moved != rep.Moved || rep.StepMoved != tc.step || rep.Patterns[0].Through != tc.through {
				t.Errorf("gate %+v, want on at %g (step %g) with %g through", rep, tc.thresh, tc.step, tc.through)
			}
		})
	}
	if c := cleanCeiling(make([]float32, len(moved)), trusted, 0.1); c != 0 {
		t.Errorf("no trusted row moved: ceiling %g, want 0", c)
	}
	if c := cleanCeiling(nil, trusted, 0.1); c != 0 {
		t.Errorf("nothing masked: ceiling %g, want 0", c)
	}
}

// gate_fallback "class": a gate whose check fails stands on its class part
// alone, marked so that bootstrap drops it when the part resolves no
// class; without a class part, or with the fallback off, the failed check
// still turns the gate off, and a gate that passes is not marked.
func TestGateFallback(t *testing.T) {
	fams := []string{"solid 4x4 at (0,0)"}
	all := []func(k int) bool{func(int) bool { return true }}
	for _, tc := range []struct {
		name      string
		moved     float64 // the pattern's share of rows the mask moves far
		probes    []func(k int) bool
		fallback  bool
		on, needs bool
	}{
		{"check fails, class part: stands on it", 0.15, all, true, true, true},
		{"check fails, no class part: off", 0.15, nil, true, false, false},
		{"check fails, fallback off: off", 0.15, all, false, false, false},
		{"check passes: not marked", 0.5, all, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := gate(&Moved{Threshold: 1}, nil, augmentedRows([]float64{tc.moved}, 20, false), fams, 0.25, 0, 0, tc.probes, "", tc.fallback, nil)
			if rep.On != tc.on || (rep.Fallback != "") != tc.needs || (tc.on && rep.onClassPart() != tc.needs) {
				t.Fatalf("gate on %v, fallback %q, want %v, on its class part %v; why %q", rep.On, rep.Fallback, tc.on, tc.needs, rep.Why)
			}
			if !tc.on {
				if !strings.Contains(rep.Why, "best 15.0%") {
					t.Errorf("why %q does not give the best share", rep.Why)
				}
				return
			}
			g := rep.Gate
			if g.NeedClass != tc.needs || !g.Both || len(g.Probe) != 20 {
				t.Fatalf("gate need_class %v, both %v, %d probe rows", g.NeedClass, g.Both, len(g.Probe))
			}
			if tc.needs && !strings.Contains(rep.Fallback, "best 15.0%") {
				t.Errorf("fallback %q does not give the best share", rep.Fallback)
			}
			if err := g.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// gateMoves keeps the lengths for "length"; for "whitened" it fits on
// every other trusted row, reads the thresholds on the others, and a row
// moved across the trusted rows' moves passes the moved step's threshold
// although its length is under theirs.
func TestGateMoves(t *testing.T) {
	const d, n = 8, 201
	rng := rand.New(rand.NewPCG(3, 9))
	m := &chanfilter.Moves{Length: make([]float32, n), Vec: make([]float32, n*d), D: d}
	trusted := make([]bool, n)
	for i := 0; i < n; i++ {
		trusted[i] = i < n-1
		for j := 0; j < d; j++ {
			sd := 0.02
			if j == 0 {
				sd = 1
			}
			m.Vec[i*d+j] = float32(rng.NormFloat64() * sd)
		}
	}
	// The last row moves across: short, but off the trusted rows' line.
	for j := 0; j < d; j++ {
		m.Vec[(n-1)*d+j] = 0
	}
	m.Vec[(n-1)*d+3] = 0.5
	for i := 0; i < n; i++ {
		var s float64
		for _, v := range m.Vec[i*d : (i+1)*d] {
			s += float64(v) * float64(v)
		}
		m.Length[i] = float32(math.Sqrt(s))
	}
	_, step := MovedSuspects(m.Length, trusted, 2.5)
	for _, tc := range []struct {
		how      string
		whitened bool
		passes   bool // the last row passes the moved step's threshold
	}{
		{"length", false, false},
		{"whitened", true, true},
	} {
		t.Run(tc.how, func(t *testing.T) {
			gm, err := gateMoves(tc.how, m, trusted, step, 2.5)
			if err != nil {
				t.Fatal(err)
			}
			if (gm.whiten != nil) != tc.whitened {
				t.Fatalf("whiten %v, want %v", gm.whiten != nil, tc.whitened)
			}
			if got := float64(gm.moved[n-1]) > gm.step.Threshold; got != tc.passes {
				t.Fatalf("the row moved across: %v against threshold %v: passes %v, want %v", gm.moved[n-1], gm.step.Threshold, got, tc.passes)
			}
			if !tc.whitened {
				return
			}
			calib := 0
			for i, c := range gm.trusted {
				if c && (!trusted[i] || i%2 == 0) {
					t.Fatalf("row %d reads the thresholds: it is untrusted or one the whitening was fitted on", i)
				}
				if c {
					calib++
				}
			}
			if calib != (n-1)/2 {
				t.Fatalf("%d rows read the thresholds, want %d", calib, (n-1)/2)
			}
		})
	}
	if _, err := gateMoves("whitened", m, make([]bool, n), step, 2.5); err == nil {
		t.Fatal("no trusted rows: no error")
	}
}
