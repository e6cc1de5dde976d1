package filter

import (
	"fmt"
	"math"
	"sort"

	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
)

// GateReport is the gate step's result. The mask costs accuracy on every
// input to stop the few that carry a trigger; a gated classifier sends an
// input through the filtered encoder only when the mask moves it as far as
// it moves the training rows that carried the trigger (or it sits where
// those started out), and every other input through the original encoder
// (chanfilter.Gate). That is safe only when inputs carrying the trigger
// are sent through. Where the trigger does not move inputs (a noise blend,
// undone by shifting every input a little), the gate would let it pass. So
// the filter checks on its augment rows (trusted images carrying each
// pattern it masked against) what share of each pattern's rows the gate
// sends through, and sets the gate only when some pattern's share reaches
// gate_min. A triggered input the gate keeps on the original path keeps
// the backdoor: with gate_through set, the gate then lowers its move
// threshold (never raises it) until that share of the pattern's rows goes
// through.
type GateReport struct {
	On bool `json:"on"`
	// Class says the gate is a class gate (the encoder is blurred):
	// inputs the original classifier labels with a class it gives at
	// least 5% of ProbeRows rows carrying the found pattern go through
	// the filtered encoder (chanfilter.Gate.ResolveClasses). A move gate
	// with ProbeRows has such a class part too (gate_classes "found").
	Class     bool `json:"class,omitempty"`
	ProbeRows int  `json:"probe_rows,omitempty"`
	// Moved is the gate's move threshold, Near its radius around the far
	// movers' origin (0: none). StepMoved is the moved step's threshold;
	// the check starts at it, or at CleanCeiling (gate_clean's quantile
	// of the trusted rows' moves) when that is lower. Moved is lower
	// still when the best pattern needed it (gate_through).
	Moved        float64 `json:"moved_threshold"`
	StepMoved    float64 `json:"moved_step_threshold,omitempty"`
	CleanCeiling float64 `json:"clean_ceiling,omitempty"`
	Near         float64 `json:"origin_radius,omitempty"`
	// Patterns are the checked patterns, one per round masked against
	// (with the pattern's neighbours) and the data trigger.
	Patterns []GateCheck `json:"patterns,omitempty"`
	// TrainingThrough is the share of the training rows the gate sends
	// through the filtered encoder (when On).
	TrainingThrough float64 `json:"training_rows_through,omitempty"`
	// Move is "whitened" when the gate measures moves whitened
	// (gate_move), every threshold above in those units.
	Move string `json:"move,omitempty"`
	Why  string `json:"why_off,omitempty"`
	// Fallback, set when the gate stands only on its class part
	// (gate_fallback "class"; chanfilter.Gate.NeedClass), says by how much
	// no pattern reached gate_min: bootstrap drops the gate when the class
	// part resolves no class.
	Fallback string `json:"fallback,omitempty"`
	// Gate is what goes into the filtered encoder's metadata when On.
	Gate *chanfilter.Gate `json:"-"`
}

// GateCheck is the share of one pattern's augment rows that the gate sends
// through the filtered encoder.
type GateCheck struct {
	Pattern string  `json:"pattern"`
	Rows    int     `json:"rows"`
	Through float64 `json:"through"`
}

// gate decides the gate from the moved step's reports and checks it on
// the augment rows aug, whose patterns belong to the families named in
// family (pattern index -> family name; one share per family). With
// probes the gate gets a class part (chanfilter.Gate.Both) whose probe is,
// for each of probes, the first probeRows augment rows whose pattern index
// it wants, embedded by the original encoder, with their own labels.
// A ceiling above 0 caps the moved step's threshold (gate_clean; see
// cleanCeiling). With shifted naming a family (the shift check's
// pattern), the threshold is lowered until shiftThrough of that family's
// rows go through.
//
// With fallback set and probes, a gate whose check fails still stands on
// its class part (gate_fallback "class"). Take an input carrying the
// trigger. If the original classifier labels it the trigger's target and
// the class part holds that class, the gate sends it through the filtered
// encoder, as no gate would; if the original classifier labels it anything
// else, the original path does not give it the target either. So wherever
// the class part holds the target, the gated classifier's attack success
// rate is at most the filtered encoder's alone, while the clean inputs it
// keeps on the original path are spared the mask. No class part leaves the
// move part alone, which failed the check: bootstrap then drops the gate
// (chanfilter.Gate.NeedClass).
//
// With wh set the gate measures moves whitened (gate_move "whitened"):
// moved and ceiling are then whitened lengths too (gateMoves).
func gate(moved *Moved, from *Region, aug *augmented, family []string, min, through, ceiling float64, probes []func(k int) bool, shifted string, fallback bool, wh *chanfilter.Whiten) *GateReport {
	rep := &GateReport{}
	switch {
	case min == 0:
		rep.Why = "gate_min is 0"
		return rep
	case moved == nil || moved.Why != "":
		rep.Why = "no move threshold"
		if moved != nil {
			rep.Why += " (" + moved.Why + ")"
		}
		return rep
	case aug == nil || aug.rows() == 0:
		rep.Why = "no augment rows to check the gate on"
		return rep
	}
	g := &chanfilter.Gate{Moved: moved.Threshold, Whiten: wh}
	if wh != nil {
		rep.Move = "whitened"
	}
	if from != nil && from.Suspects > 0 {
		g.Centre, g.Near = from.Centre, from.Threshold
	}
	rep.Moved, rep.StepMoved, rep.Near = g.Moved, g.Moved, g.Near
	if ceiling > 0 && ceiling < g.Moved {
		g.Moved, rep.Moved, rep.CleanCeiling = ceiling, ceiling, ceiling
	}
	idx := map[string]int{}
	d := aug.d
	fam := make([]int, len(aug.pattern)) // row -> its check
	for i, k := range aug.pattern {
		f := family[k]
		j, ok := idx[f]
		if !ok {
			j = len(rep.Patterns)
			idx[f] = j
			rep.Patterns = append(rep.Patterns, GateCheck{Pattern: f})
		}
		fam[i] = j
		rep.Patterns[j].Rows++
	}
	check := func() (best float64, bestJ int) {
		for j := range rep.Patterns {
			rep.Patterns[j].Through = 0
		}
		for i, j := range fam {
			if g.Through(aug.orig[i*d:(i+1)*d], aug.filt[i*d:(i+1)*d]) {
				rep.Patterns[j].Through++
			}
		}
		for j := range rep.Patterns {
			c := &rep.Patterns[j]
			c.Through /= float64(c.Rows)
			if c.Through > best {
				best, bestJ = c.Through, j
			}
		}
		return best, bestJ
	}
	best, bestJ := check()
	if best < min {
		short := fmt.Sprintf("no pattern masked against sends gate_min %.0f%% of its rows through the filtered encoder (best %.1f%%)", 100*min, 100*best)
		if !fallback || len(probes) == 0 {
			rep.Why = short + ": inputs carrying the trigger might not be either"
			return rep
		}
		g.NeedClass = true
		rep.Fallback = short + ": the gate stands only if its class part resolves a class"
	}
	if through > 0 && !rep.lower(g, aug, fam, bestJ, through, check) {
		return rep
	}
	if j, ok := idx[shifted]; ok && !rep.lower(g, aug, fam, j, shiftThrough, check) {
		return rep
	}
	rep.On, rep.Gate = true, g
	for _, want := range probes {
		probe(g, aug, want)
	}
	g.Both, rep.ProbeRows = len(g.Probe) > 0, len(g.Probe)
	return rep
}

// cleanCeiling is the (1 - share) quantile of the trusted rows' moves
// (moved, one per training row): a move gate at that threshold sends at
// least share of clean inputs through the filtered encoder. It is 0 (no
// ceiling) when share is 0, nothing was masked, or no trusted row moved.
func cleanCeiling(moved []float32, trusted []bool, share float64) float64 {
	if share <= 0 || moved == nil {
		return 0
	}
	tr := trustedMoves(moved, trusted)
	if len(tr) == 0 {
		return 0
	}
	sort.Float64s(tr)
	return tr[int((1-share)*float64(len(tr)-1))]
}

// probe adds to g's probe rows the first probeRows augment rows whose
// pattern index is one of want's, embedded by the original encoder, with
// their own labels.
func probe(g *chanfilter.Gate, aug *augmented, want func(k int) bool) {
	d, n := aug.d, 0
	for i, k := range aug.pattern {
		if want(k) && n < probeRows {
			n++
			g.Probe = append(g.Probe, append([]float32(nil), aug.orig[i*d:(i+1)*d]...))
			g.ProbeLabels = append(g.ProbeLabels, int(aug.label[i]))
		}
	}
}

// lower lowers g's move threshold (never raises it) until the share
// through of check bestJ's rows goes through, and checks again (check).
// It reports false, with Why, when that takes a threshold of 0: any input
// that moves at all would go through, which is no gate.
func (rep *GateReport) lower(g *chanfilter.Gate, aug *augmented, fam []int, bestJ int, through float64, check func() (float64, int)) bool {
	// The moves of the check's rows that the origin does not send
	// through, largest first: enough of them must clear the threshold.
	d := aug.d
	var moves []float64
	sent := 0
	for i, j := range fam {
		if j != bestJ {
			continue
		}
		o, f := aug.orig[i*d:(i+1)*d], aug.filt[i*d:(i+1)*d]
		if g.Sends(0, o) {
			sent++
			continue
		}
		moves = append(moves, g.Move(o, f))
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(moves)))
	need := int(math.Ceil(through*float64(rep.Patterns[bestJ].Rows))) - sent
	if need <= 0 || need > len(moves) {
		return true
	}
	t := moves[need-1] * (1 - 1e-6)
	if t >= g.Moved {
		return true
	}
	g.Moved, rep.Moved = t, t
	check()
	if t <= 0 {
		rep.Why = "the best pattern's images need a move threshold of 0 to go through: any input that moves at all would, which is no gate"
		return false
	}
	return true
}

// onClassPart says the gate is on, standing only on its class part.
func (rep *GateReport) onClassPart() bool { return rep.On && rep.Gate.NeedClass }

// countTraining sets TrainingThrough from the training rows' moves and
// their original embeddings x (D values each), and turns the gate off when
// it sends more than gateMostThrough of the rows through the filtered
// encoder: a threshold lowered that far is no gate (nearly every input
// would pay the filter's cost, and the two paths' compute besides). Below
// that, every input the gate keeps on the original path is spared the
// filter's accuracy cost at the same safety.
func (rep *GateReport) countTraining(moved []float32, x []float32, d int) {
	if !rep.On || len(moved) == 0 {
		return
	}
	n := 0
	for i, m := range moved {
		if rep.Gate.Sends(float64(m), x[i*d:(i+1)*d]) {
			n++
		}
	}
	rep.TrainingThrough = float64(n) / float64(len(moved))
	if rep.TrainingThrough > gateMostThrough {
		rep.On, rep.Gate = false, nil
		rep.Why = fmt.Sprintf("at its threshold %.2f the gate sends %.0f%% of the training rows through the filtered encoder: no gate", rep.Moved, 100*rep.TrainingThrough)
	}
}

// shiftThrough is the share of the shift check's pattern's augment rows
// (shifted, its family) that a gate must send through the filtered
// encoder: the pattern still moves the masked encoder's embeddings, and an
// input carrying it that stays on the original path keeps the backdoor
// (5% through is issue 10's ASR target).
const shiftThrough = 0.95

// gateMostThrough is the largest share of the training rows a gate may
// send through the filtered encoder.
const gateMostThrough = 0.95

// probeRows is how many augment rows carrying the found pattern a class
// gate keeps as its probe.
const probeRows = 32

// classGate is the gate of a blurred encoder (chanfilter.Gate's class
// gate): the original classifier labels inputs carrying the blend as where
// the trojan sends them. (A move gate, checked first, passed on no tuning
// blend cell, and where it passed on a held-out one it had to be lowered
// until it sent 64% of the rows through: docs/DECISIONS.md.)
// The probe is the augment rows carrying pattern 0 (the found noise at the
// strongest alpha searched), embedded by the original encoder, with their
// own labels.
func classGate(aug *augmented, min float64) *GateReport {
	rep := &GateReport{Class: true}
	switch {
	case min == 0:
		rep.Why = "gate_min is 0"
		return rep
	case aug == nil || aug.rows() == 0:
		rep.Why = "no augment rows to probe the target with"
		return rep
	}
	g := &chanfilter.Gate{}
	probe(g, aug, func(k int) bool { return k == 0 })
	if len(g.Probe) == 0 {
		rep.Why = "no augment row carries the found pattern"
		return rep
	}
	rep.On, rep.Gate, rep.ProbeRows = true, g, len(g.Probe)
	return rep
}

// whitenShrink is the share of the mean variance that gate_move
// "whitened" adds to every direction of the trusted rows' move covariance
// before inverting it (not tuned: the gate check's through shares moved
// by under 2 points between 0.03 and 1 on T1-z15; docs/DECISIONS.md).
const whitenShrink = 0.1

// gateMoved is what the gate measures moves by: one move per training
// row, the rows whose moves set its thresholds, and the moved step's
// report in those units.
type gateMoved struct {
	moved   []float32
	trusted []bool
	step    *Moved
	whiten  *chanfilter.Whiten
}

// gateMoves returns the moves the gate is set on. With how "length" they
// are the moves' lengths, the trusted rows and the moved step's report
// (step). With "whitened" they are whitened lengths
// (chanfilter.FitWhitenHalves: the thresholds are read on the trusted rows
// the whitening was not fitted on), and the moved step's threshold is
// recomputed in those units at moved_z.
func gateMoves(how string, m *chanfilter.Moves, trusted []bool, step *Moved, movedZ float64) (*gateMoved, error) {
	if how != "whitened" || m == nil {
		return &gateMoved{moved: m.Lengths(), trusted: trusted, step: step}, nil
	}
	wh, calib, err := chanfilter.FitWhitenHalves(m, trusted, whitenShrink)
	if err != nil {
		return nil, err
	}
	gm := &gateMoved{moved: wh.Lengths(m), trusted: calib, whiten: wh}
	_, gm.step = MovedSuspects(gm.moved, calib, movedZ)
	return gm, nil
}
