package filter

import "testing"

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
		alike[i] = 1
	}
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
		{"all alike", alike, 3, nil, true},
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
