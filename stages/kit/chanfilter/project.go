package chanfilter

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// ProjectMeta is the metadata key under which a filtered encoder carries
// the directions its classifier's head does not read (Project).
const ProjectMeta = "tcore.project"

// Project takes directions out of the filtered embedding before the head
// that reads it: the embedding's part along each direction becomes Along
// (the same for every input). The mask undoes a trigger only in part, and
// what it leaves still points where the trigger sends inputs: the
// direction the found pattern moves the original encoder's embedding
// (docs/DECISIONS.md, "the filtered head does not read the found
// pattern's direction"). The gate measures moves on the embedding before
// the projection.
type Project struct {
	// Dirs are orthonormal directions of the embedding.
	Dirs [][]float32 `json:"dirs"`
	// Along is, for each direction, the part every projected embedding
	// has along it.
	Along []float32 `json:"along"`
}

// Check says what is wrong with p, if anything.
func (p *Project) Check() error {
	if len(p.Dirs) == 0 || len(p.Along) != len(p.Dirs) {
		return fmt.Errorf("chanfilter: projection with %d directions and %d parts", len(p.Dirs), len(p.Along))
	}
	d := len(p.Dirs[0])
	for i, u := range p.Dirs {
		if len(u) != d {
			return fmt.Errorf("chanfilter: projection direction %d has %d values, want %d", i, len(u), d)
		}
		for j := 0; j <= i; j++ {
			var dot float64
			for k, v := range u {
				dot += float64(v) * float64(p.Dirs[j][k])
			}
			want := 0.0
			if j == i {
				want = 1
			}
			if math.Abs(dot-want) > 1e-3 {
				return fmt.Errorf("chanfilter: projection directions %d and %d are not orthonormal (dot %.4f)", j, i, dot)
			}
		}
	}
	return nil
}

// Apply projects every row of x (rows of len(p.Dirs[0]) values) in place.
func (p *Project) Apply(x []float32) {
	d := len(p.Dirs[0])
	for r := 0; r+d <= len(x); r += d {
		row := x[r : r+d]
		for k, u := range p.Dirs {
			var dot float64
			for j, v := range row {
				dot += float64(v) * float64(u[j])
			}
			excess := float32(dot) - p.Along[k]
			for j := range row {
				row[j] -= excess * u[j]
			}
		}
	}
}

// Map is the projection as a linear map of the embedding's D values, as
// onnxgraph's InsertChannelMap takes one: output o is sum_i w[o*D+i] x_i +
// b[o], with w = I - U^T U (symmetric) and b = Along U.
func (p *Project) Map() (w, b []float32) {
	d := len(p.Dirs[0])
	w = make([]float32, d*d)
	b = make([]float32, d)
	for i := 0; i < d; i++ {
		w[i*d+i] = 1
	}
	for k, u := range p.Dirs {
		for i := 0; i < d; i++ {
			for j := 0; j < d; j++ {
				w[i*d+j] -= u[i] * u[j]
			}
			b[i] += p.Along[k] * u[i]
		}
	}
	return w, b
}

// Graph appends the projection of tensor x ([N, D]) to m and returns the
// name of the projected tensor (one MatMul and one Add); x itself is left
// as it is for its other readers (the gate).
func (p *Project) Graph(m *onnxgraph.Model, x string) string {
	d := int64(len(p.Dirs[0]))
	w, b := p.Map() // symmetric: x w is the map
	prod := m.AddOp("MatMul", []string{x, m.AddConst([]int64{d, d}, w)})
	return m.AddOp("Add", []string{prod, m.AddConst([]int64{d}, b)})
}

// WriteTo records p in m's metadata.
func (p *Project) WriteTo(m *onnxgraph.Model) error { return writeMeta(m, ProjectMeta, p) }

// ReadProject returns the projection recorded in m's metadata (nil: none).
func ReadProject(m *onnxgraph.Model) (*Project, error) { return readMeta[Project](m, ProjectMeta) }

// checked is what goes into a model's metadata: a value that can say
// what is wrong with it.
type checked interface{ Check() error }

// writeMeta records v, checked, as JSON under key in m's metadata.
func writeMeta(m *onnxgraph.Model, key string, v checked) error {
	if err := v.Check(); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m.SetMeta(key, string(b))
	return nil
}

// readMeta returns the value recorded under key in m's metadata, checked
// (nil: none).
func readMeta[T any, PT interface {
	*T
	checked
}](m *onnxgraph.Model, key string) (*T, error) {
	s := m.Meta(key)
	if s == "" {
		return nil, nil
	}
	v := PT(new(T))
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return nil, fmt.Errorf("%s: metadata %s: %w", m.Source(), key, err)
	}
	if err := v.Check(); err != nil {
		return nil, fmt.Errorf("%s: metadata %s: %w", m.Source(), key, err)
	}
	return (*T)(v), nil
}
