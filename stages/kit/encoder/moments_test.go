package encoder

import (
	"math"
	"strings"
	"testing"
)

// The spread tells embeddings that vary across images from ones that do
// not; NaNs are counted, and each case gets the warnings it should.
func TestEmbeddingSpread(t *testing.T) {
	const dim = 4
	rows := func(f func(i, d int) float32) []float32 {
		var out []float32
		for i := 0; i < 50; i++ {
			for d := 0; d < dim; d++ {
				out = append(out, f(i, d))
			}
		}
		return out
	}
	cases := []struct {
		name     string
		emb      []float32
		min, max float64
		warn     string
	}{
		{"varied", rows(func(i, d int) float32 { return float32(math.Sin(float64(i*dim + d))) }), 0.5, 1.1, ""},
		{"constant", rows(func(i, d int) float32 { return float32(d + 1) }), 0, 1e-9, "hardly vary"},
		{"a constant with noise far below it", rows(func(i, d int) float32 { return 10 + 1e-5*float32(i%3) }), 0, DegenerateSpread, "hardly vary"},
		{"all zero", make([]float32, 50*dim), 0, 0, "hardly vary"},
		{"a NaN", append(rows(func(i, d int) float32 { return float32(i % 7) }), float32(math.NaN()), 1, 2, 3), 0.1, 1.1, "NaN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m moments
			half := len(tc.emb) / 2 / dim * dim // two batches, as a stream has
			m.add(tc.emb[:half], dim)
			m.add(tc.emb[half:], dim)
			st := StreamStats{Rows: m.n, Spread: m.spread(), NonFinite: m.nonFinite}
			if st.Spread < tc.min || st.Spread > tc.max {
				t.Errorf("spread %.3g, want in [%g, %g]", st.Spread, tc.min, tc.max)
			}
			w := strings.Join(st.Warnings(), "; ")
			if (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
				t.Errorf("warnings %q, want %q", w, tc.warn)
			}
		})
	}
}
