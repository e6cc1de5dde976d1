package chanfilter

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// GateMeta is the metadata key under which a filtered encoder carries its
// gate (JSON of Gate).
const GateMeta = "tcore.gate"

// Gate sends an input through the filtered encoder only when it behaves as
// inputs carrying the trigger do: the mask moves its embedding far (more
// than Moved), or the original encoder puts it within Near of Centre, where
// the training rows the mask moved far started out. Every other input goes
// through the original encoder, which the mask's accuracy cost never
// touches. A filter sets a gate only when it has checked that inputs
// carrying the patterns it masked against are sent through.
type Gate struct {
	Moved  float64   `json:"moved"`
	Centre []float64 `json:"centre,omitempty"` // nil: no origin
	Near   float64   `json:"near,omitempty"`
}

// Through says whether the gate sends an input, embedded as orig by the
// original encoder and as filt by the filtered one, through the filtered
// encoder.
func (g *Gate) Through(orig, filt []float32) bool { return g.Sends(stat.Dist(orig, filt), orig) }

// Sends is Through for an input the mask moved by moved (the distance
// between its two embeddings), embedded as orig by the original encoder.
func (g *Gate) Sends(moved float64, orig []float32) bool {
	return moved > g.Moved || (g.Centre != nil && stat.DistTo(orig, g.Centre) <= g.Near)
}

// Check says what is wrong with g, if anything.
func (g *Gate) Check() error {
	if !(g.Moved >= 0) || math.IsInf(g.Moved, 0) {
		return fmt.Errorf("gate: moved threshold %v, want a number >= 0", g.Moved)
	}
	if g.Centre != nil && !(g.Near > 0) {
		return fmt.Errorf("gate: radius %v around the origin, want > 0", g.Near)
	}
	return nil
}

// WriteTo records g in m's metadata.
func (g *Gate) WriteTo(m *onnxgraph.Model) error {
	if err := g.Check(); err != nil {
		return err
	}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	m.SetMeta(GateMeta, string(b))
	return nil
}

// ReadGate returns the gate recorded in m's metadata (nil: none).
func ReadGate(m *onnxgraph.Model) (*Gate, error) {
	s := m.Meta(GateMeta)
	if s == "" {
		return nil, nil
	}
	var g Gate
	if err := json.Unmarshal([]byte(s), &g); err != nil {
		return nil, fmt.Errorf("%s: metadata %s: %w", m.Source(), GateMeta, err)
	}
	if err := g.Check(); err != nil {
		return nil, fmt.Errorf("%s: metadata %s: %w", m.Source(), GateMeta, err)
	}
	return &g, nil
}

// Compose builds the gated classifier into orig: orig is the original
// encoder with a head (its embedding tensor emb, its logits logits), filt
// the filtered encoder with its own head (filtEmb, filtLogits), both
// reading the same image input. filt's computation is merged into orig
// (their shared weights once), and out becomes the only output: filt's
// logits where the gate sends the input through the filtered encoder,
// orig's elsewhere. The gate is recorded in the metadata.
func (g *Gate) Compose(orig *onnxgraph.Model, emb, logits string, filt *onnxgraph.Model, filtEmb, filtLogits, out string) error {
	if err := g.Check(); err != nil {
		return err
	}
	name, err := orig.Merge(filt, "tcore_filtered/")
	if err != nil {
		return err
	}
	fe, fl := name(filtEmb), name(filtLogits)
	if fe == "" || fl == "" {
		return fmt.Errorf("gate: the filtered classifier has no tensor %q or %q", filtEmb, filtLogits)
	}
	moved := orig.AddSquaredNorm(orig.AddOp("Sub", []string{fe, emb}))
	through := orig.AddOp("Greater", []string{moved, orig.AddConst([]int64{1}, []float32{float32(g.Moved * g.Moved)})})
	if g.Centre != nil {
		c := make([]float32, len(g.Centre))
		for i, v := range g.Centre {
			c[i] = float32(v)
		}
		far := orig.AddSquaredNorm(orig.AddOp("Sub", []string{emb, orig.AddConst([]int64{1, int64(len(c))}, c)}))
		outside := orig.AddOp("Greater", []string{far, orig.AddConst([]int64{1}, []float32{float32(g.Near * g.Near)})})
		through = orig.AddOp("Or", []string{through, orig.AddOp("Not", []string{outside})})
	}
	if err := orig.Select(through, fl, logits, out); err != nil {
		return err
	}
	return g.WriteTo(orig)
}
