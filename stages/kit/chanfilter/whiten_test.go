package chanfilter_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Clean rows move along a few directions; a move across them stands out
// whitened although it is shorter than a typical clean move.
func TestWhitenSeparatesAnOffDirectionMove(t *testing.T) {
	const d, n = 16, 400
	rng := rand.New(rand.NewPCG(1, 2))
	m := &chanfilter.Moves{Length: make([]float32, n), Vec: make([]float32, n*d), D: d}
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
		for j := 0; j < d; j++ {
			sd := 0.02
			if j < 2 {
				sd = 1
			}
			m.Vec[i*d+j] = float32(0.5 + rng.NormFloat64()*sd)
		}
	}
	wh, err := chanfilter.FitWhiten(m, rows, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	orig := make([]float32, d)
	for j := range orig {
		orig[j] = float32(j)
	}
	shift := func(dir int, by float32) []float32 {
		f := make([]float32, d)
		for j := range f {
			f[j] = orig[j] + 0.5
		}
		f[dir] += by
		return f
	}
	// With shrink 0.1 a direction the clean rows hardly move along keeps
	// a variance of about 0.1 of the mean one (0.125 here): an sd of 0.11.
	cases := []struct {
		name string
		filt []float32
	}{
		{"along the clean moves, two sds", shift(0, 2)},
		{"across them, under a sixth of that", shift(5, 0.3)},
	}
	got := make([]float64, len(cases))
	for i, c := range cases {
		got[i] = wh.Length(orig, c.filt)
		if l := stat.Dist(orig, c.filt); l < 0.1 {
			t.Fatalf("%s: move of length %v", c.name, l)
		}
	}
	if !(got[1] > got[0]) {
		t.Fatalf("whitened lengths %v: the move across the clean moves (over 6x shorter) should stand out more than the one along them", got)
	}
	// The mean clean move itself is at 0.
	if l := wh.Length(orig, shift(0, 0)); l > 0.2 {
		t.Fatalf("the mean clean move's whitened length is %v, want about 0", l)
	}
	// Lengths agrees with Length row by row (the moves from the origin).
	ls := wh.Lengths(m)
	zero := make([]float32, d)
	for _, i := range []int{0, 17, n - 1} {
		if w := wh.Length(zero, m.Vec[i*d:(i+1)*d]); math.Abs(w-float64(ls[i])) > 1e-4*max(1, w) {
			t.Fatalf("row %d: Lengths %v, Length %v", i, ls[i], w)
		}
	}
}

func TestFitWhitenRejects(t *testing.T) {
	m := &chanfilter.Moves{Length: make([]float32, 3), Vec: make([]float32, 6), D: 2}
	for _, tc := range []struct {
		name   string
		rows   []int
		shrink float64
	}{
		{"one row", []int{0}, 0.1},
		{"no shrink", []int{0, 1, 2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := chanfilter.FitWhiten(m, tc.rows, tc.shrink); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// BenchmarkWhitenedGate is what gate_move "whitened" adds to a filter run
// on 50,000 rows of 512: fitting the whitening on half of 14,000 trusted
// rows' moves and measuring every row's whitened move.
func BenchmarkWhitenedGate(b *testing.B) {
	const n, d, trustedRows = 50000, 512, 14000
	rng := rand.New(rand.NewPCG(3, 4))
	m := &chanfilter.Moves{Length: make([]float32, n), Vec: make([]float32, n*d), D: d}
	for i := range m.Vec {
		m.Vec[i] = float32(rng.NormFloat64())
	}
	trusted := make([]bool, n)
	for i := 0; i < trustedRows; i++ {
		trusted[i*n/trustedRows] = true
	}
	b.ResetTimer()
	for range b.N {
		wh, _, err := chanfilter.FitWhitenHalves(m, trusted, 0.1)
		if err != nil {
			b.Fatal(err)
		}
		wh.Lengths(m)
	}
}
