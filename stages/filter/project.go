package filter

import (
	"math"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// ProjectReport is the direction the filtered classifier's head does not
// read (project "scan").
type ProjectReport struct {
	Pattern string `json:"pattern"`
	// MoveLength is the length of the pattern's mean move over the scan
	// images under the original encoder.
	MoveLength float64 `json:"move_length"`
	// Along is every projected embedding's part along the direction: the
	// trusted rows' mean part under the original encoder.
	Along float64 `json:"along"`
	Why   string  `json:"why_none,omitempty"`
}

// projection is the direction in which p moves the original encoder's
// embedding of the scan images (their mean move), for the filtered head to
// leave out (chanfilter.Project); nil, with the report saying why, when
// there is none.
func (b *bench) projection(p Pattern) (*chanfilter.Project, *ProjectReport, error) {
	rep := &ProjectReport{Pattern: p.String()}
	d := b.sess.Dim
	if d != b.t.Embedding.D {
		rep.Why = "the features' embedding is not the encoder's"
		return nil, rep, nil
	}
	e, err := b.embed(nil, nil, &p)
	if err != nil {
		return nil, nil, err
	}
	c0, c1 := stat.Mean(e[0], d, nil), stat.Mean(e[1], d, nil)
	u := make([]float64, d)
	for j := range u {
		u[j] = c1[j] - c0[j]
	}
	rep.MoveLength = math.Sqrt(stat.Dot(u, u))
	if rep.MoveLength == 0 {
		rep.Why = "the pattern does not move the scan images"
		return nil, rep, nil
	}
	dir := make([]float32, d)
	for j := range u {
		u[j] /= rep.MoveLength
		dir[j] = float32(u[j])
	}
	var sum float64
	var n int
	for i, ok := range b.trusted {
		if ok {
			for j, v := range b.t.Embedding.X[i*d : (i+1)*d] {
				sum += float64(v) * u[j]
			}
			n++
		}
	}
	if n == 0 {
		rep.Why = "no trusted rows"
		return nil, rep, nil
	}
	rep.Along = sum / float64(n)
	return &chanfilter.Project{Dirs: [][]float32{dir}, Along: []float32{float32(rep.Along)}}, rep, nil
}
