// Package synth makes features/v1 tables with planted poison for the
// T-Core stage tests: clean samples whose class signal grows with depth,
// and poison that behaves like dataset poison under a clean encoder (T2:
// gathered by the trigger in shallow layers, back with its source class at
// the embedding) or like an encoder backdoor (T3: gathered from the middle
// layer on, and carried to the target at the embedding).
package synth

import (
	"math/rand/v2"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/stages/kit/feat"
)

// Kind is the threat the poison imitates.
type Kind int

// The kinds.
const (
	Clean Kind = iota
	T2
	T3
	// CleanLabel is T2 with clean-label poison (SIG-style): target-class
	// rows whose shallow features the trigger dominates, labels kept.
	CleanLabel
)

// Spec describes a synthetic set.
type Spec struct {
	Kind      Kind
	PerClass  int // clean rows per class
	Classes   int
	Poison    int // poisoned rows, labelled Target
	Target    int32
	Dim       int // values per layer
	Seed      uint64
	NoiseGain float64 // noise scale (default 1)
}

// Set is a synthetic table and its ground truth.
type Set struct {
	Table    *feat.Table
	IsPoison []bool
	Source   []int32 // true class
}

// Make builds the set: layers stage1..stage3 and an embedding (not the
// mean of stage3). Rows are shuffled.
func Make(s Spec) *Set {
	rng := rand.New(rand.NewPCG(s.Seed, 11))
	if s.Dim == 0 {
		s.Dim = 24
	}
	if s.NoiseGain == 0 {
		s.NoiseGain = 1
	}
	d := s.Dim
	proto := func() [][]float32 {
		out := make([][]float32, s.Classes)
		for c := range out {
			out[c] = make([]float32, d)
			for j := range out[c] {
				out[c][j] = float32(rng.NormFloat64())
			}
		}
		return out
	}
	// Per layer: class prototypes and the signal strength of the class.
	const L = 4
	protos := [L][][]float32{proto(), proto(), proto(), proto()}
	signal := [L]float32{0.2, 0.4, 0.7, 2.5}
	trigger := [L][]float32{}
	for l := range trigger {
		trigger[l] = proto()[0]
	}
	n := s.PerClass*s.Classes + s.Poison
	set := &Set{Table: &feat.Table{}, IsPoison: make([]bool, n), Source: make([]int32, n)}
	mats := make([][]float32, L)
	order := rng.Perm(n)
	for k := 0; k < n; k++ {
		var y, src int32
		poison := k >= s.PerClass*s.Classes
		if poison && s.Kind == CleanLabel {
			src, y = s.Target, s.Target
		} else if poison {
			src = int32(rng.IntN(s.Classes))
			for src == s.Target {
				src = int32(rng.IntN(s.Classes))
			}
			y = s.Target
		} else {
			src = int32(k % s.Classes)
			y = src
		}
		set.IsPoison[k], set.Source[k] = poison, src
		set.Table.Labels = append(set.Table.Labels, y)
		set.Table.IDs = append(set.Table.IDs, uint64(len(set.Table.IDs)))
		for l := 0; l < L; l++ {
			for j := 0; j < d; j++ {
				v := signal[l]*protos[l][src][j] + float32(rng.NormFloat64()*s.NoiseGain)
				if poison {
					switch {
					case (s.Kind == T2 || s.Kind == CleanLabel) && l < 2:
						// The trigger dominates shallow features.
						v = 3*trigger[l][j] + 0.3*float32(rng.NormFloat64())
					case s.Kind == T3 && l >= 1:
						// The backdoor gathers triggered inputs from the
						// middle on, and maps them to the target.
						v = 3*trigger[l][j] + 0.3*float32(rng.NormFloat64())
						if l == L-1 {
							v = signal[l]*protos[l][s.Target][j] + 0.3*float32(rng.NormFloat64())
						}
					}
				}
				mats[l] = append(mats[l], v)
			}
		}
	}
	// Shuffle the rows: row order[k] of the result is generated row k, so
	// that poison is not the last ids (ties go to lower ids).
	isP := make([]bool, n)
	srcs := make([]int32, n)
	labels := make([]int32, n)
	for k := 0; k < n; k++ {
		isP[order[k]], srcs[order[k]], labels[order[k]] = set.IsPoison[k], set.Source[k], set.Table.Labels[k]
	}
	for l := range mats {
		m := make([]float32, len(mats[l]))
		for k := 0; k < n; k++ {
			copy(m[order[k]*d:(order[k]+1)*d], mats[l][k*d:(k+1)*d])
		}
		mats[l] = m
	}
	set.IsPoison, set.Source, set.Table.Labels = isP, srcs, labels
	for l := 0; l < L-1; l++ {
		set.Table.Layers = append(set.Table.Layers, feat.Matrix{Name: []string{"stage1", "stage2", "stage3"}[l], D: d, X: mats[l]})
	}
	set.Table.Embedding = feat.Matrix{Name: arrowio.ColEmbedding, D: d, X: mats[L-1]}
	return set
}

// Record returns the set as one features/v1 record.
func (s *Set) Record() arrow.Record {
	t := s.Table
	var layers []arrowio.Layer
	cols := [][]float32{t.Embedding.X}
	for _, l := range t.Layers {
		layers = append(layers, arrowio.Layer{Name: l.Name, Channels: l.D})
		cols = append(cols, l.X)
	}
	return arrowio.NewFeaturesRecord(arrowio.FeaturesSchema(t.Embedding.D, layers), t.IDs, t.Labels, cols)
}
