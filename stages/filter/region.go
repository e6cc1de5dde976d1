package filter

import (
	"math"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Region is where the found trigger sends inputs in embedding space, and
// which training rows sit there.
type Region struct {
	Radius        float64 `json:"radius"`                  // 90th percentile distance of the triggered scan images to their centroid
	TrustedMedian float64 `json:"trusted_median_distance"` // median distance of the trusted rows
	TrustedQ01    float64 `json:"trusted_q01_distance"`    // 1st percentile
	Threshold     float64 `json:"threshold"`               // rows closer are suspects
	Suspects      int     `json:"suspects"`
	Why           string  `json:"why_none,omitempty"`
	// Centre is the region's centre in the original encoder's embedding.
	Centre []float64 `json:"-"`
}

// region finds the rows an encoder backdoor explains: the found pattern
// collapses inputs onto one point of the embedding space, and inputs that
// carry the real trigger land near it. Rows (under the original encoder)
// closer to it than 99% of the trusted rows, or than most triggered scan
// images, are taken for such inputs. Nothing is flagged when the region is
// not clearly apart from the trusted rows. It returns each row's distance
// and whether it is a suspect.
func (b *bench) region(p Pattern) (*Region, []float32, []bool, error) {
	n := b.t.N()
	dist, suspect := make([]float32, n), make([]bool, n)
	d := b.sess.Dim
	if d != b.t.Embedding.D {
		return &Region{Why: "the features' embedding is not the encoder's"}, dist, suspect, nil
	}
	e, err := b.embed(nil, &p)
	if err != nil {
		return nil, nil, nil, err
	}
	c := stat.Mean(e[0], d, nil)
	var scan []float64
	for i := 0; i < b.n; i++ {
		scan = append(scan, stat.DistTo(e[0][i*d:(i+1)*d], c))
	}
	sort.Float64s(scan)
	reg, dist, suspect := near(b.t.Embedding.X, d, c, scan[int(0.9*float64(len(scan)-1))], b.trusted, 0.5, "the found trigger's region is not apart from the trusted rows")
	return reg, dist, suspect, nil
}

// near flags the rows of x (n x d) that sit within a region of the
// embedding space: centre c, radius the spread of the inputs known to land
// there. A row is a suspect when it is closer to c than 99% of the trusted
// rows, or than the radius. Nothing is flagged (why says so) when the
// region is not clearly apart from the trusted rows: its radius is over
// apart times their median distance. It returns each row's distance to c.
func near(x []float32, d int, c []float64, radius float64, trusted []bool, apart float64, why string) (*Region, []float32, []bool) {
	n := len(x) / d
	dist, suspect := make([]float32, n), make([]bool, n)
	reg := &Region{Radius: radius, Centre: c}
	var tr []float64
	for i := range dist {
		dist[i] = float32(stat.DistTo(x[i*d:(i+1)*d], c))
		if trusted[i] {
			tr = append(tr, float64(dist[i]))
		}
	}
	if len(tr) == 0 {
		reg.Why = "no trusted rows"
		return reg, dist, suspect
	}
	reg.TrustedMedian, _ = stat.Robust(tr)
	sort.Float64s(tr)
	reg.TrustedQ01 = tr[int(0.01*float64(len(tr)-1))]
	if reg.Radius > apart*reg.TrustedMedian {
		reg.Why = why
		return reg, dist, suspect
	}
	reg.Threshold = math.Max(reg.Radius, reg.TrustedQ01)
	for i := range dist {
		suspect[i] = float64(dist[i]) <= reg.Threshold
		if suspect[i] {
			reg.Suspects++
		}
	}
	return reg, dist, suspect
}
