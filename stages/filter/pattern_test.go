package filter

import (
	"fmt"
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
