package chanfilter

import (
	"fmt"
	"math"
	"slices"
	"sort"

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
//
// A class gate (Probe set) works in label space instead: for a filtered
// encoder that changes every input a little (a blurred input), the move
// says nothing. Probe holds original embeddings of inputs carrying the
// found trigger; the classes the original classifier gives them are where
// a trigger sends inputs (Classes, resolved by whoever trains that
// classifier), and an input goes through the filtered encoder exactly
// when the original classifier gives it one of those classes: a triggered
// input is labelled so, and inputs of every other class never pay the
// filter's cost.
//
// With Both, a move gate has a class part too: an input goes through when
// either sends it. A triggered input the mask does not move far enough
// still goes through when the original classifier already gives it the
// class the trigger sends inputs to, so that the gated classifier's attack
// success is never above the filtered path's own; a clean input pays the
// mask's cost only when it moves far or is labelled with such a class.
type Gate struct {
	Moved  float64   `json:"moved"`
	Centre []float64 `json:"centre,omitempty"` // nil: no origin
	Near   float64   `json:"near,omitempty"`
	// Probe, for a class gate: original embeddings of inputs carrying
	// the found trigger.
	Probe [][]float32 `json:"probe,omitempty"`
	// ProbeLabels, when set, are the probe rows' own labels: a probe row
	// the original classifier (or its neighbourhood) still gives its own
	// label says nothing about where the trigger sends inputs, and does
	// not count (ResolveClasses, NeighbourShares).
	ProbeLabels []int `json:"probe_labels,omitempty"`
	// Classes, for a class gate: the classes whose inputs go through the
	// filtered encoder (empty until resolved; see ResolveClasses).
	Classes []int `json:"classes,omitempty"`
	// Both makes a gate with Probe a move gate with a class part: Moved,
	// Centre and Near apply as well as Classes (none resolved: the move
	// gate alone).
	Both bool `json:"both,omitempty"`
	// NeedClass, for a move gate with a class part, says the move part
	// alone failed the filter's check (no pattern masked against sent
	// enough of its inputs through): the gate stands only when its class
	// part resolves a class. Without one, the classifier is the filtered
	// encoder's alone.
	NeedClass bool `json:"need_class,omitempty"`
	// VetoMoved, for a move gate with a class part, holds one move
	// threshold per class of Classes: an input the mask moved more than
	// Classes[i]'s threshold (and Moved) that the filtered classifier
	// still gives Classes[i] gets the filtered classifier's best class
	// outside Classes. The mask undid its trigger only in part, and the
	// class the trigger sends inputs to is then the attack's answer, not
	// the image's. Empty: no veto.
	VetoMoved []float64 `json:"veto_moved,omitempty"`
	// Region, when set, is where the original encoder sends the found
	// pattern (RegionCentre, within RegionNear): the filter records it
	// when it found the region apart from the trusted rows. With it, the
	// veto also needs the input's original embedding inside the region.
	RegionCentre []float64 `json:"region_centre,omitempty"`
	RegionNear   float64   `json:"region_near,omitempty"`
	// VetoNever are the classes a vetoed input never gets (empty:
	// Classes); it holds Classes.
	VetoNever []int `json:"veto_never,omitempty"`
	// VetoBelow, when above 0, also needs a vetoed input's filtered
	// classifier to be unsure: its probability (softmax) of the class it
	// gives under VetoBelow. A trigger the mask undid in part leaves the
	// filtered classifier torn between the image's class and the
	// trigger's; a clean image of that class, moved as far, is given it
	// with near certainty.
	VetoBelow float64 `json:"veto_below,omitempty"`
	// ClassMoved, when set, holds a move threshold per class of the
	// original classifier (index: class), each at least Moved: the move
	// part sends an input through when the mask moves it more than the
	// threshold of the class the original classifier gives it. Clean
	// inputs of some classes move farther than others'; one threshold for
	// all sends many of those through the filtered encoder, where they pay
	// the mask's cost. Whoever trains the original classifier sets it
	// (bootstrap's gate_class_quantile). Sends and Through, which know no
	// class, use Moved.
	ClassMoved []float64 `json:"class_moved,omitempty"`
	// Whiten, when set, is how the gate measures a move (Move): Moved is
	// then a whitened length.
	Whiten *Whiten `json:"whiten,omitempty"`
}

// IsClass says whether g has a class part (probe rows whose classes the
// classifier's trainer resolves): a class gate, or a move gate with Both.
func (g *Gate) IsClass() bool { return len(g.Probe) > 0 }

// IsMove says whether g has a move part: a move gate, with or without a
// class part.
func (g *Gate) IsMove() bool { return len(g.Probe) == 0 || g.Both }

// ClassShare is one class's share of a class gate's probe rows.
type ClassShare struct {
	Class int     `json:"class"`
	Share float64 `json:"share"`
}

// ResolveClasses sets a class gate's Classes to every class that label
// (the original classifier) gives at least minRows of the probe rows,
// most rows first (ties: the lower class), and returns every class's
// share of the probe rows in that order. A class left out holds fewer
// than minRows of the inputs carrying the found trigger: the part of a
// trigger's inputs that the gate lets past the filtered encoder into any
// one class is bounded by that. Nothing is set when no class reaches
// minRows. With ProbeLabels, a row given its own label is not counted
// (the shares then sum to the share of rows moved to another class): a
// found trigger that only partly works leaves rows of many classes where
// they were, and each such class would otherwise send all its inputs
// through the filtered encoder and pay its cost.
func (g *Gate) ResolveClasses(label func(emb []float32) int, minRows int) []ClassShare {
	count := map[int]int{}
	for i, e := range g.Probe {
		if l := label(e); !g.own(i, l) {
			count[l]++
		}
	}
	shares := sortedShares(count, len(g.Probe))
	g.Classes = nil
	for _, s := range shares {
		if count[s.Class] >= max(1, minRows) {
			g.Classes = append(g.Classes, s.Class)
		}
	}
	return shares
}

// NeighbourShares returns each class's share of the labels near gives the
// probe rows (several per row: the labels of a row's nearest training
// rows), most first (ties: the lower class). With ProbeLabels, a row's
// own label among its neighbours' is not counted (as in ResolveClasses).
func (g *Gate) NeighbourShares(near func(emb []float32) []int) []ClassShare {
	count, total := map[int]int{}, 0
	for i, e := range g.Probe {
		for _, c := range near(e) {
			if !g.own(i, c) {
				count[c]++
			}
			total++
		}
	}
	return sortedShares(count, total)
}

// AddClasses widens a class gate by its probe's neighbourhood: when the
// class that most of the probe rows' neighbour labels name (near, from
// NeighbourShares) is not the one the classifier gave most of them (head,
// from ResolveClasses), every class of near with at least minShare joins
// Classes (in near's order, each once), and it says so. The original
// classifier's label for an input off the data is arbitrary: the same
// found trigger lands in different classes under heads that differ only in
// their seed, while its nearest training rows do not move; where the two
// agree, the classifier's classes stand (docs/DECISIONS.md).
func (g *Gate) AddClasses(head, near []ClassShare, minShare float64) bool {
	if len(near) == 0 || len(head) > 0 && head[0].Class == near[0].Class {
		return false
	}
	in := map[int]bool{}
	for _, c := range g.Classes {
		in[c] = true
	}
	for _, s := range near {
		if s.Share >= minShare && !in[s.Class] {
			g.Classes = append(g.Classes, s.Class)
			in[s.Class] = true
		}
	}
	return true
}

// own says whether class c is probe row i's own label (false without
// ProbeLabels).
func (g *Gate) own(i, c int) bool { return i < len(g.ProbeLabels) && g.ProbeLabels[i] == c }

// sortedShares turns counts out of total into shares, most first (ties:
// the lower class).
func sortedShares(count map[int]int, total int) []ClassShare {
	var shares []ClassShare
	for c, n := range count {
		shares = append(shares, ClassShare{c, float64(n) / float64(total)})
	}
	sort.Slice(shares, func(a, b int) bool {
		if shares[a].Share != shares[b].Share {
			return shares[a].Share > shares[b].Share
		}
		return shares[a].Class < shares[b].Class
	})
	return shares
}

// Through says whether the gate sends an input, embedded as orig by the
// original encoder and as filt by the filtered one, through the filtered
// encoder. Through and Sends are for move gates; a class gate needs the
// original classifier's label.
func (g *Gate) Through(orig, filt []float32) bool { return g.Sends(g.Move(orig, filt), orig) }

// Move is how far the filter moved an input, as the gate measures it: the
// whitened length of the move when the gate has a Whiten, else its length.
func (g *Gate) Move(orig, filt []float32) float64 {
	if g.Whiten != nil {
		return g.Whiten.Length(orig, filt)
	}
	return stat.Dist(orig, filt)
}

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
	for i, e := range g.Probe {
		if len(e) == 0 || len(e) != len(g.Probe[0]) {
			return fmt.Errorf("gate: probe row %d has %d values, row 0 has %d", i, len(e), len(g.Probe[0]))
		}
	}
	if g.Both && len(g.Probe) == 0 {
		return fmt.Errorf("gate: a move gate with a class part but no probe rows")
	}
	if g.NeedClass && !g.Both {
		return fmt.Errorf("gate: need_class on a gate that is not a move gate with a class part")
	}
	if len(g.VetoMoved) > 0 && (!g.Both || len(g.VetoMoved) != len(g.Classes)) {
		return fmt.Errorf("gate: %d veto thresholds for a gate with class part %v (both %v): want one per class of a move gate's class part", len(g.VetoMoved), g.Classes, g.Both)
	}
	if !(g.VetoBelow >= 0 && g.VetoBelow <= 1) || (g.VetoBelow > 0 && len(g.VetoMoved) == 0) {
		return fmt.Errorf("gate: veto_below %v, want a probability in [0, 1], and 0 without veto thresholds", g.VetoBelow)
	}
	for _, v := range g.VetoMoved {
		if !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("gate: veto threshold %v, want a number >= 0", v)
		}
	}
	if len(g.ClassMoved) > 0 && !g.IsMove() {
		return fmt.Errorf("gate: %d class move thresholds on a gate without a move part", len(g.ClassMoved))
	}
	for c, v := range g.ClassMoved {
		if !(v >= g.Moved) || math.IsInf(v, 0) {
			return fmt.Errorf("gate: class %d's move threshold %v, want a number >= the gate's %v", c, v, g.Moved)
		}
	}
	if g.RegionCentre != nil && !(g.RegionNear > 0) {
		return fmt.Errorf("gate: region radius %v, want > 0", g.RegionNear)
	}
	for _, c := range g.Classes {
		if len(g.VetoNever) > 0 && !slices.Contains(g.VetoNever, c) {
			return fmt.Errorf("gate: veto_never %v leaves out class %d of the class part", g.VetoNever, c)
		}
	}
	if g.Whiten != nil {
		d := 0
		if len(g.Probe) > 0 {
			d = len(g.Probe[0])
		}
		if err := g.Whiten.check(d); err != nil {
			return err
		}
	}
	if len(g.ProbeLabels) > 0 && len(g.ProbeLabels) != len(g.Probe) {
		return fmt.Errorf("gate: %d probe labels for %d probe rows", len(g.ProbeLabels), len(g.Probe))
	}
	seen := map[int]bool{}
	for _, c := range g.Classes {
		if !g.IsClass() || c < 0 || seen[c] {
			return fmt.Errorf("gate: classes %v: without probe rows, negative or repeated", g.Classes)
		}
		seen[c] = true
	}
	return nil
}

// WriteTo records g in m's metadata.
func (g *Gate) WriteTo(m *onnxgraph.Model) error { return writeMeta(m, GateMeta, g) }

// ReadGate returns the gate recorded in m's metadata (nil: none).
func ReadGate(m *onnxgraph.Model) (*Gate, error) { return readMeta[Gate](m, GateMeta) }

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
	if v := filt.Meta(onnxgraph.SmoothMeta); v != "" {
		orig.SetMeta(onnxgraph.SmoothMeta, v) // the filtered path blurs its input
	}
	fe, fl := name(filtEmb), name(filtLogits)
	if fe == "" || fl == "" {
		return fmt.Errorf("gate: the filtered classifier has no tensor %q or %q", filtEmb, filtLogits)
	}
	if g.IsClass() && !g.Both && len(g.Classes) == 0 {
		return fmt.Errorf("gate: a class gate whose classes are not resolved")
	}
	through, moved, label := "", "", ""
	// origLabel is the original logits' class ([N, 1] int64), made once.
	origLabel := func() string {
		if label == "" {
			label = orig.AddOp("ArgMax", []string{logits}, onnxgraph.IntAttr("axis", 1), onnxgraph.IntAttr("keepdims", 1))
		}
		return label
	}
	if g.IsMove() {
		mv := orig.AddOp("Sub", []string{fe, emb})
		if w := g.Whiten; w != nil {
			d := int64(len(w.Mean))
			mean := make([]float32, d)
			for i, v := range w.Mean {
				mean[i] = float32(v)
			}
			mv = orig.AddOp("MatMul", []string{orig.AddOp("Sub", []string{mv, orig.AddConst([]int64{1, d}, mean)}), orig.AddConst([]int64{d, d}, w.Factor)})
		}
		moved = orig.AddSquaredNorm(mv)
		through = orig.AddOp("Greater", []string{moved, g.moveBar(orig, origLabel)})
		if g.Centre != nil {
			through = or(orig, through, within(orig, emb, g.Centre, g.Near))
		}
	}
	if g.IsClass() && len(g.Classes) > 0 {
		for _, c := range g.Classes {
			through = or(orig, through, orig.AddOp("Equal", []string{origLabel(), orig.AddInt64Const(int64(c))}))
		}
	}
	if len(g.VetoMoved) > 0 && moved != "" {
		fl = g.veto(orig, emb, fl, moved)
	}
	if err := orig.Select(through, fl, logits, out); err != nil {
		return err
	}
	return g.WriteTo(orig)
}

// moveBar appends to m the squared move threshold the move part holds an
// input to, and returns its name: Moved's ([1]), or with ClassMoved the
// threshold of the class the original logits give each input ([N, 1];
// label makes that class's tensor).
func (g *Gate) moveBar(m *onnxgraph.Model, label func() string) string {
	if len(g.ClassMoved) == 0 {
		return m.AddConst([]int64{1}, []float32{float32(g.Moved * g.Moved)})
	}
	sq := make([]float32, len(g.ClassMoved))
	for c, v := range g.ClassMoved {
		sq[c] = float32(v * v)
	}
	return m.AddOp("Gather", []string{m.AddConst([]int64{int64(len(sq))}, sq), label()}, onnxgraph.IntAttr("axis", 0))
}

// within appends to m whether emb (the original embedding, [N, D]) lies
// within near of centre, and returns its name (bool, [N, 1]).
func within(m *onnxgraph.Model, emb string, centre []float64, near float64) string {
	c := make([]float32, len(centre))
	for i, v := range centre {
		c[i] = float32(v)
	}
	far := m.AddSquaredNorm(m.AddOp("Sub", []string{emb, m.AddConst([]int64{1, int64(len(c))}, c)}))
	return m.AddOp("Not", []string{m.AddOp("Greater", []string{far, m.AddConst([]int64{1}, []float32{float32(near * near)})})})
}

// or appends a || b to m and returns its name; b alone when a is "".
func or(m *onnxgraph.Model, a, b string) string { return combine(m, "Or", a, b) }

// combine appends op(a, b) to m and returns its name; b alone when a is
// "" (the first term of a sum or a disjunction).
func combine(m *onnxgraph.Model, op, a, b string) string {
	if a == "" {
		return b
	}
	return m.AddOp(op, []string{a, b})
}

// vetoPenalty is what the veto takes off a vetoed class's logit: enough
// that no other class's logit is below it.
const vetoPenalty = 1e9

// veto appends to m the filtered logits fl with VetoNever's (or Classes')
// logits lowered by vetoPenalty on the inputs that fl gives Classes[i],
// that moved (the squared move, [N, 1]) puts past VetoMoved[i] and Moved,
// with a region, whose original embedding emb lies inside it, and with
// VetoBelow, whose softmax of fl gives that class under VetoBelow; and
// returns their name.
func (g *Gate) veto(m *onnxgraph.Model, emb, fl, moved string) string {
	depth := m.AddOp("Gather", []string{m.AddOp("Shape", []string{fl}), m.AddInt64Const(1)}, onnxgraph.IntAttr("axis", 0))
	values := m.AddConst([]int64{2}, []float32{0, -vetoPenalty})
	label := m.AddOp("ArgMax", []string{fl}, onnxgraph.IntAttr("axis", 1), onnxgraph.IntAttr("keepdims", 1))
	vetoed := ""
	for i, c := range g.Classes {
		th := max(g.Moved, g.VetoMoved[i])
		far := m.AddOp("Greater", []string{moved, m.AddConst([]int64{1}, []float32{float32(th * th)})})
		vetoed = or(m, vetoed, m.AddOp("And", []string{far, m.AddOp("Equal", []string{label, m.AddInt64Const(int64(c))})}))
	}
	if g.RegionCentre != nil {
		vetoed = m.AddOp("And", []string{vetoed, within(m, emb, g.RegionCentre, g.RegionNear)})
	}
	if g.VetoBelow > 0 {
		// The class fl gives is its largest logit, so its probability
		// is the row's largest softmax value.
		sure := m.AddRowMax(m.AddOp("Softmax", []string{fl}, onnxgraph.IntAttr("axis", 1)))
		unsure := m.AddOp("Less", []string{sure, m.AddConst([]int64{1}, []float32{float32(g.VetoBelow)})})
		vetoed = m.AddOp("And", []string{vetoed, unsure})
	}
	never := g.VetoNever
	if len(never) == 0 {
		never = g.Classes
	}
	penalty := ""
	for _, c := range never {
		one := m.AddOp("OneHot", []string{m.AddInt64Const(int64(c)), depth, values}, onnxgraph.IntAttr("axis", -1))
		penalty = combine(m, "Add", penalty, one)
	}
	lowered := m.AddOp("Add", []string{fl, penalty})
	return m.AddOp("Where", []string{vetoed, lowered, fl})
}
