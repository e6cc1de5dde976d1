package filter

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestMovedSuspects(t *testing.T) {
	// 20 trusted rows that moved 1.0-1.9, then rows outside the core.
	moved := []float32{}
	trusted := []bool{}
	for i := 0; i < 20; i++ {
		moved = append(moved, 1+float32(i%10)/10)
		trusted = append(trusted, true)
	}
	moved = append(moved, 1.5, 9, 9, 9) // one ordinary row, three that moved far
	trusted = append(trusted, false, false, false, false)
	withTrustedOutlier := append([]float32(nil), moved...)
	withTrustedOutlier[0] = 9 // poison inside the trusted core is flagged too
	alike := make([]float32, len(moved))
	for i := range alike {
		alike[i] = 0 // a trojan silent on clean inputs
	}
	alike[22], alike[23] = 3, 1e-6
	for _, tc := range []struct {
		name  string
		moved []float32
		z     float64
		want  []int // flagged rows
		why   bool  // a reason for flagging nothing
	}{
		{"far rows", moved, 3, []int{21, 22, 23}, false},
		{"poison in the trusted core", withTrustedOutlier, 3, []int{0, 21, 22, 23}, false},
		{"a higher bar", moved, 30, nil, false},
		{"off", moved, 0, nil, true},
		{"nothing masked", nil, 3, nil, true},
		{"trusted rows all alike: any further move", alike, 3, []int{22, 23}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := trusted
			if tc.moved == nil {
				tr = nil
			}
			sus, rep := MovedSuspects(tc.moved, tr, tc.z)
			var got []int
			for i, s := range sus {
				if s {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.want) || rep.Suspects != len(tc.want) {
				t.Fatalf("flagged %v (report %d), want %v; %+v", got, rep.Suspects, tc.want, rep)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("flagged %v, want %v", got, tc.want)
				}
			}
			if (rep.Why != "") != tc.why {
				t.Errorf("why_none %q", rep.Why)
			}
		})
	}
}

func TestMovedFrom(t *testing.T) {
	// 10 overlapping classes of 100 rows (d 16, centres 3 from the origin,
	// sd 1) and 60 poisoned rows gathered around one point (sd 0.1), as a
	// trojan's trigger gathers its inputs. Rows 0-499 are trusted.
	const d, per, nPoison = 16, 100, 60
	rng := rand.New(rand.NewPCG(1, 2))
	var x []float32
	centre := func() []float64 {
		c := make([]float64, d)
		var n float64
		for j := range c {
			c[j] = rng.NormFloat64()
			n += c[j] * c[j]
		}
		for j := range c {
			c[j] *= 3 / math.Sqrt(n)
		}
		return c
	}
	row := func(c []float64, sd float64) {
		for j := range c {
			x = append(x, float32(c[j]+sd*rng.NormFloat64()))
		}
	}
	for k := 0; k < 10; k++ {
		c := centre()
		for i := 0; i < per; i++ {
			row(c, 1)
		}
	}
	p := centre()
	for i := 0; i < nPoison; i++ {
		row(p, 0.1)
	}
	n := len(x) / d
	trusted := make([]bool, n)
	for i := 0; i < 500; i++ {
		trusted[i] = i%2 == 0
	}
	poison := func(i int) bool { return i >= 10*per }
	mark := func(rows ...[2]int) []bool {
		f := make([]bool, n)
		for _, r := range rows {
			for i := r[0]; i < r[1]; i++ {
				f[i] = true
			}
		}
		return f
	}
	for _, tc := range []struct {
		name       string
		far        []bool
		wantPoison int // poisoned rows flagged, at least
		maxClean   int // clean rows flagged, at most
		why        bool
	}{
		// two thirds of the poison moved far, with 30 clean rows of one class
		{"poison gathered", mark([2]int{1000, 1040}, [2]int{100, 130}), nPoison, 20, false},
		// only clean rows of one class moved far: they did not start gathered
		{"clean rows of one class", mark([2]int{100, 160}), 0, 0, true},
		{"clean rows of every class", mark([2]int{0, 1000}), 0, 0, true},
		{"too few", mark([2]int{1000, 1010}), 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sus, reg := MovedFrom(x, d, tc.far, trusted)
			var gotP, gotC int
			for i, s := range sus {
				switch {
				case s && poison(i):
					gotP++
				case s:
					gotC++
				}
			}
			if gotP < tc.wantPoison || gotC > tc.maxClean || reg.Suspects != gotP+gotC {
				t.Fatalf("flagged %d poisoned, %d clean (report %d); want ≥ %d poisoned, ≤ %d clean; %+v", gotP, gotC, reg.Suspects, tc.wantPoison, tc.maxClean, reg)
			}
			if (reg.Why != "") != tc.why {
				t.Errorf("why_none %q", reg.Why)
			}
		})
	}
}
