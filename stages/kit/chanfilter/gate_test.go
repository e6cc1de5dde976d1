package chanfilter_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// randomHead is a seeded MLP head through sizes (ReLU between layers),
// weights normal with standard deviation scale.
func randomHead(seed uint64, scale float32, sizes ...int) []onnxgraph.Dense {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []onnxgraph.Dense
	for i := 0; i+1 < len(sizes); i++ {
		d := onnxgraph.Dense{In: sizes[i], Out: sizes[i+1], W: make([]float32, sizes[i]*sizes[i+1]), B: make([]float32, sizes[i+1]), Relu: i+2 < len(sizes)}
		for j := range d.W {
			d.W[j] = float32(rng.NormFloat64()) * scale
		}
		out = append(out, d)
	}
	return out
}

// run embeds imgs with the model (its only output) and returns the rows.
func run(t *testing.T, m *onnxgraph.Model, imgs [][]float32) [][]float32 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	e, err := encoder.Open(path, encoder.Config{Layers: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x, err := e.Batch(len(imgs))
	if err != nil {
		t.Fatal(err)
	}
	for i, im := range imgs {
		copy(x[i*len(im):], im)
	}
	out, _, err := e.Embed(len(imgs))
	if err != nil {
		t.Fatal(err)
	}
	rows := make([][]float32, len(imgs))
	for i := range rows {
		rows[i] = append([]float32(nil), out[i*e.Dim:(i+1)*e.Dim]...)
	}
	return rows
}

// The gated classifier gives, input by input, the filtered path's logits
// where the gate says so and the original path's elsewhere. The encoder is
// the Go-built trojan; the filtered one has the trojan's channel switched
// off, which moves triggered inputs' embeddings and leaves clean ones.
func TestGatedClassifierPicksAPathPerInput(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Trojan(5)
	rng := rand.New(rand.NewPCG(4, 4))
	var imgs [][]float32
	for i := 0; i < 6; i++ {
		im := make([]float32, 3*testenc.Size*testenc.Size)
		for j := range im {
			im[j] = rng.Float32() * 0.9
		}
		if i >= 3 {
			testenc.AddTrigger(im)
		}
		imgs = append(imgs, im)
	}
	keep := make([]bool, 8)
	for i := range keep {
		keep[i] = i != 0
	}
	filtered := func() *onnxgraph.Model {
		m := net.Model()
		if err := m.InsertMask("stage1", 4, keep, nil); err != nil {
			t.Fatal(err)
		}
		return m
	}
	hO, hF := randomHead(3, 0.3, 32, 16, 4), randomHead(2, 0.3, 32, 16, 4)
	classifier := func(m *onnxgraph.Model, h []onnxgraph.Dense, out string) *onnxgraph.Model {
		if err := m.AppendHead("embedding", h, out); err != nil {
			t.Fatal(err)
		}
		return m
	}
	plainO := run(t, classifier(net.Model(), hO, "logits"), imgs)
	plainF := run(t, classifier(filtered(), hF, "logits"), imgs)
	embO := run(t, net.Model(), imgs)
	argmax := func(v []float32) int {
		b := 0
		for i := range v {
			if v[i] > v[b] {
				b = i
			}
		}
		return b
	}
	cls := argmax(plainO[3])
	var byClass []bool
	for _, l := range plainO {
		byClass = append(byClass, argmax(l) == cls)
	}
	if n := strings.Count(fmt.Sprint(byClass), "true"); n == 0 || n == len(byClass) {
		t.Fatalf("the original classifier gives class %d to %d of %d inputs: the class gate's case would not tell the paths apart", cls, n, len(byClass))
	}
	// A second class, for a gate of two classes.
	cls2 := -1
	var byClasses []bool
	for _, l := range plainO {
		if c := argmax(l); c != cls && cls2 < 0 {
			cls2 = c
		}
	}
	for _, l := range plainO {
		byClasses = append(byClasses, argmax(l) == cls || argmax(l) == cls2)
	}
	// A gate of both, on the class of a clean input (cls2).
	moved := []bool{false, false, false, true, true, true}
	var byClass2 []bool
	for _, l := range plainO {
		byClass2 = append(byClass2, argmax(l) == cls2)
	}
	if both := fmt.Sprint(or(byClass2, moved)); both == fmt.Sprint(moved) || both == fmt.Sprint(byClass2) {
		t.Fatalf("the class gate takes %v, the move gate %v: a gate of both would not tell them apart", byClass2, moved)
	}
	// A threshold per class: the class the original classifier gives the
	// first triggered input holds its inputs to a move none reaches, every
	// other class to the gate's own, so that the moved inputs of that
	// class stay on the original path.
	classMoved := make([]float64, len(plainO[0]))
	for c := range classMoved {
		classMoved[c] = 0.5
	}
	classMoved[cls] = 1e6
	var byOwnBar []bool
	for i, l := range plainO {
		byOwnBar = append(byOwnBar, moved[i] && argmax(l) != cls)
	}
	// A veto on the class the filtered classifier gives a triggered
	// input: moved inputs it still gives that class get their best other
	// class; inputs the class part alone sends through keep it.
	vc := argmax(plainF[3])
	var byClassVC, vetoed []bool
	for i, l := range plainO {
		byClassVC = append(byClassVC, argmax(l) == vc)
		vetoed = append(vetoed, moved[i] && argmax(plainF[i]) == vc)
	}
	if n := strings.Count(fmt.Sprint(vetoed), "true"); n == 0 {
		t.Fatalf("no moved input is given class %d by the filtered classifier: the veto's case vetoes nothing", vc)
	}
	// With veto_below, only a vetoed input the filtered classifier is
	// unsure of: a bar between the least sure vetoed input's probability
	// of its class and the next one's, so that some vetoed inputs keep
	// their class.
	var sure []float64
	for i, v := range vetoed {
		if v {
			sure = append(sure, softmaxMax(plainF[i]))
		}
	}
	slices.Sort(sure)
	if len(sure) < 2 || sure[1]-sure[0] < 1e-3 {
		t.Fatalf("the vetoed inputs' filtered probabilities %v: the veto_below case would not tell them apart", sure)
	}
	below := (sure[0] + sure[1]) / 2
	unsure := make([]bool, len(vetoed))
	for i, v := range vetoed {
		unsure[i] = v && softmaxMax(plainF[i]) < below
	}
	// With a region, only a vetoed input whose original embedding lies in
	// it: a region around the first vetoed input's.
	first := strings.Index(strings.ReplaceAll(strings.Trim(fmt.Sprint(vetoed), "[]"), "false", "f"), "true")
	first = strings.Count(strings.ReplaceAll(strings.Trim(fmt.Sprint(vetoed), "[]"), "false", "f")[:first], " ")
	inRegion := make([]bool, len(vetoed))
	inRegion[first] = true
	region := make([]float64, len(embO[first]))
	for i, v := range embO[first] {
		region[i] = float64(v)
	}
	// Classes a vetoed input never gets: the veto's class and the
	// filtered classifier's next class for the first vetoed input.
	never := []int{vc, secondBest(plainF[first], vc)}
	centre := make([]float64, len(embO[1]))
	for i, v := range embO[1] {
		centre[i] = float64(v)
	}
	// A whitened gate: fitted on random moves (more spread along the
	// first half of the embedding), its threshold between the inputs'
	// whitened moves, so that the graph must measure the move as Go does
	// to pick the same paths.
	embF := run(t, filtered(), imgs)
	wh, wThrough, wMoved := whitenedCase(t, embO, embF)
	for _, tc := range []struct {
		name    string
		gate    chanfilter.Gate
		through []bool
		vetoed  []bool // inputs that must get the filtered logits' best class outside the gate's never set
	}{
		{"moved: the triggered inputs", chanfilter.Gate{Moved: 0.5}, []bool{false, false, false, true, true, true}, nil},
		{"moved, whitened", chanfilter.Gate{Moved: wMoved, Whiten: wh}, wThrough, nil},
		{"moved or near the origin", chanfilter.Gate{Moved: 0.5, Centre: centre, Near: 1e-3}, []bool{false, true, false, true, true, true}, nil},
		{"nothing moves this far", chanfilter.Gate{Moved: 1e6}, make([]bool, 6), nil},
		// A class gate: the inputs the original classifier labels as
		// the class of a triggered input, whatever the move.
		{"class of a triggered input", chanfilter.Gate{Moved: 1e6, Probe: [][]float32{embO[3]}, Classes: []int{cls}}, byClass, nil},
		{"two classes", chanfilter.Gate{Moved: 1e6, Probe: [][]float32{embO[3]}, Classes: []int{cls2, cls}}, byClasses, nil},
		// Both: moved far, or labelled with a gated class.
		{"moved or the class", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{cls2}}, or(byClass2, moved), nil},
		{"both, nothing moves, the class", chanfilter.Gate{Moved: 1e6, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{cls2}}, byClass2, nil},
		{"moved past its class's own threshold", chanfilter.Gate{Moved: 0.5, ClassMoved: classMoved}, byOwnBar, nil},
		{"per-class thresholds and a class part", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{cls2}, ClassMoved: classMoved}, or(byClass2, byOwnBar), nil},
		{"both, no class resolved: the move gate", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}}, moved, nil},
		{"veto: moved and still the class", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0.5}}, or(byClassVC, moved), vetoed},
		{"veto: the gate's threshold when the class's is below it", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0}}, or(byClassVC, moved), vetoed},
		{"veto: inside the region only", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0.5}, RegionCentre: region, RegionNear: 1e-3}, or(byClassVC, moved), inRegion},
		{"veto: never the class's neighbour either", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0.5}, VetoNever: never}, or(byClassVC, moved), vetoed},
		{"veto: only where the filtered classifier is unsure", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0.5}, VetoBelow: below}, or(byClassVC, moved), unsure},
		{"veto: every vetoed input is surer than veto_below", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{0.5}, VetoBelow: sure[0] / 2}, or(byClassVC, moved), nil},
		{"veto: no input moves past the class's threshold", chanfilter.Gate{Moved: 0.5, Both: true, Probe: [][]float32{embO[3]}, Classes: []int{vc}, VetoMoved: []float64{1e6}}, or(byClassVC, moved), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			og, fg := classifier(net.Model(), hO, "lo"), classifier(filtered(), hF, "lf")
			inits := len(og.P.Graph.Initializer) + len(fg.P.Graph.Initializer)
			g := tc.gate
			if err := g.Compose(og, "embedding", "lo", fg, "embedding", "lf", "logits"); err != nil {
				t.Fatal(err)
			}
			// The gate's own constants (tcore/const_N) do not count.
			n := 0
			for _, in := range og.P.Graph.Initializer {
				if !strings.HasPrefix(in.Name, "tcore/const_") {
					n++
				}
			}
			if n >= inits {
				t.Errorf("%d initializers after the merge, %d before: the encoders' shared weights are not shared", n, inits)
			}
			if got := og.OutputNames(); len(got) != 1 || got[0] != "logits" {
				t.Fatalf("outputs %v, want [logits]", got)
			}
			back, err := chanfilter.ReadGate(og)
			if err != nil || back == nil || back.Moved != g.Moved || len(back.Centre) != len(g.Centre) || back.IsClass() != g.IsClass() || back.IsMove() != g.IsMove() {
				t.Fatalf("gate read back %+v (%v), want %+v", back, err, g)
			}
			if (back.Whiten == nil) != (g.Whiten == nil) {
				t.Fatalf("gate read back with whiten %v, want %v", back.Whiten != nil, g.Whiten != nil)
			}
			if fmt.Sprint(back.ClassMoved) != fmt.Sprint(g.ClassMoved) {
				t.Fatalf("gate read back with class thresholds %v, want %v", back.ClassMoved, g.ClassMoved)
			}
			if fmt.Sprint(back.VetoMoved) != fmt.Sprint(g.VetoMoved) || back.VetoBelow != g.VetoBelow {
				t.Fatalf("gate read back with veto thresholds %v below %v, want %v below %v", back.VetoMoved, back.VetoBelow, g.VetoMoved, g.VetoBelow)
			}
			got := run(t, og, imgs)
			for i := range imgs {
				want := plainO[i]
				if tc.through[i] {
					want = plainF[i]
				}
				if tc.vetoed != nil && tc.vetoed[i] {
					never := tc.gate.VetoNever
					if len(never) == 0 {
						never = tc.gate.Classes
					}
					if a, b := argmax(got[i]), bestOutside(want, never); a != b {
						t.Fatalf("input %d: class %d, want %d (the filtered classifier's best outside %v)", i, a, b, never)
					}
					continue
				}
				for k := range want {
					if math.Abs(float64(got[i][k]-want[k])) > 1e-4 {
						t.Fatalf("input %d: logits %v, want %v (through the filter: %v)", i, got[i], want, tc.through[i])
					}
				}
			}
		})
	}
}

// whitenedCase fits a Whiten on seeded random moves of the embedding's
// size and returns it with the inputs' paths (orig, filt: their
// embeddings) at a threshold between their whitened moves, and that
// threshold. It fails the test when the threshold would not split them.
func whitenedCase(t *testing.T, orig, filt [][]float32) (*chanfilter.Whiten, []bool, float64) {
	t.Helper()
	d, n := len(orig[0]), 200
	rng := rand.New(rand.NewPCG(7, 7))
	m := &chanfilter.Moves{Length: make([]float32, n), Vec: make([]float32, n*d), D: d}
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
		for j := 0; j < d; j++ {
			sd := 0.05
			if j < d/2 {
				sd = 1
			}
			m.Vec[i*d+j] = float32(rng.NormFloat64() * sd)
		}
	}
	wh, err := chanfilter.FitWhiten(m, rows, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	ls := make([]float64, len(orig))
	for i := range orig {
		ls[i] = wh.Length(orig[i], filt[i])
	}
	sorted := slices.Sorted(slices.Values(ls))
	th := (sorted[len(ls)/2-1] + sorted[len(ls)/2]) / 2
	through := make([]bool, len(ls))
	for i, l := range ls {
		through[i] = l > th
	}
	if sorted[len(ls)/2-1] == sorted[len(ls)/2] {
		t.Fatalf("whitened moves %v: no threshold splits the inputs", ls)
	}
	return wh, through, th
}

// bestOutside is the index of v's largest value whose index is not in
// skip.
func bestOutside(v []float32, skip []int) int {
	b := -1
	for i := range v {
		if !slices.Contains(skip, i) && (b < 0 || v[i] > v[b]) {
			b = i
		}
	}
	return b
}

// secondBest is the index of v's largest value other than skip.
// softmaxMax is the largest softmax probability of the logits v.
func softmaxMax(v []float32) float64 {
	m := float64(slices.Max(v))
	sum := 0.0
	for _, x := range v {
		sum += math.Exp(float64(x) - m)
	}
	return 1 / sum
}

func secondBest(v []float32, skip int) int {
	b := -1
	for i := range v {
		if i != skip && (b < 0 || v[i] > v[b]) {
			b = i
		}
	}
	return b
}

// or is a[i] || b[i] for each i.
func or(a, b []bool) []bool {
	out := make([]bool, len(a))
	for i := range a {
		out[i] = a[i] || b[i]
	}
	return out
}

func TestReadGate(t *testing.T) {
	for _, tc := range []struct {
		name, meta string
		want       string // error text; "" for none
		none       bool
	}{
		{"absent", "", "", true},
		{"moved only", `{"moved": 2.5}`, "", false},
		{"not JSON", `{moved`, "metadata tcore.gate", false},
		{"no threshold", `{"centre": [0, 1], "near": 1}`, "", false},
		{"negative threshold", `{"moved": -1}`, "moved threshold -1", false},
		{"origin without radius", `{"moved": 1, "centre": [0, 1]}`, "radius 0", false},
		{"both without probe rows", `{"moved": 1, "both": true}`, "no probe rows", false},
		{"both", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3]}`, "", false},
		{"veto", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [1.5]}`, "", false},
		{"veto thresholds not one per class", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [1.5, 2]}`, "2 veto thresholds", false},
		{"veto without a class part", `{"moved": 1, "probe": [[0, 1]], "classes": [3], "veto_moved": [1.5]}`, "1 veto thresholds", false},
		{"region without radius", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [1], "region_centre": [0, 1]}`, "region radius 0", false},
		{"veto_never without the class part's class", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [1], "veto_never": [4]}`, "leaves out class 3", false},
		{"need_class on a class part", `{"moved": 1, "both": true, "need_class": true, "probe": [[0, 1]]}`, "", false},
		{"need_class without a class part", `{"moved": 1, "need_class": true}`, "need_class on a gate", false},
		{"veto_below over 1", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [1], "veto_below": 1.5}`, "veto_below 1.5", false},
		{"veto_below without a veto", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_below": 0.9}`, "veto_below 0.9", false},
		{"class thresholds", `{"moved": 1, "class_moved": [1, 2.5, 1]}`, "", false},
		{"a class threshold under the gate's", `{"moved": 1, "class_moved": [1, 0.5]}`, "class 1's move threshold 0.5", false},
		{"class thresholds on a class gate", `{"moved": 1, "probe": [[0, 1]], "classes": [3], "class_moved": [1, 1]}`, "without a move part", false},
		{"negative veto threshold", `{"moved": 1, "both": true, "probe": [[0, 1]], "classes": [3], "veto_moved": [-1]}`, "veto threshold -1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testenc.Clean(1).Model()
			if tc.meta != "" {
				m.SetMeta(chanfilter.GateMeta, tc.meta)
			}
			g, err := chanfilter.ReadGate(m)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if err == nil && (g == nil) != tc.none {
				t.Fatalf("gate %+v, want none: %v", g, tc.none)
			}
		})
	}
}

// BenchmarkGatedClassifier compares the gated classifier with the filtered
// one alone, on a real encoder ($TCORE_BENCH_ENCODER, default the shared
// backdoored fixture; skipped when absent): the gated graph holds both
// encoders, and ONNX Runtime computes what they share (everything before
// the first masked layer) once when its optimiser finds the duplicates.
// Per image, 256 images a batch; the ratio is gated / filtered.
func BenchmarkGatedClassifier(b *testing.B) {
	path := os.Getenv("TCORE_BENCH_ENCODER")
	if path == "" {
		path = filepath.Join("..", "..", "..", "..", "shared", "models", "enc_badencoder.onnx")
	}
	if _, err := os.Stat(path); err != nil {
		b.Skipf("no encoder: %v", err)
	}
	ortlib.Init(b)
	m, err := encoder.Load(path, "")
	if err != nil {
		b.Fatal(err)
	}
	layers, err := m.Layers([]string{"auto"})
	if err != nil || len(layers) < 2 {
		b.Fatalf("layers %v (%v)", layers, err)
	}
	// 13 channels of the second probed layer off, as the filter did on
	// this encoder.
	l := layers[1]
	keep := make([]bool, l.Channels)
	for i := range keep {
		keep[i] = i%(l.Channels/13) != 0
	}
	masks := []encoder.Mask{{Layer: l.Name, Keep: keep}}
	// classifier is enc under masks with a seeded head whose logits are out.
	classifier := func(enc *encoder.Model, masks []encoder.Mask, seed uint64, out string) *onnxgraph.Model {
		g, err := enc.Edit(masks)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.AppendHead(m.Embedding, randomHead(seed, 0.05, m.Dim, 512, 256, 10), out); err != nil {
			b.Fatal(err)
		}
		return g
	}
	filtered := func(out string) *onnxgraph.Model { return classifier(m, masks, 2, out) }
	og := classifier(m, nil, 1, "lo")
	g := chanfilter.Gate{Moved: 1}
	if err := g.Compose(og, m.Embedding, "lo", filtered("lf"), m.Embedding, "lf", "logits"); err != nil {
		b.Fatal(err)
	}
	// The class gate of a blurred encoder: the two paths share nothing
	// (the blurred one reads another input).
	sm, err := m.Smoothed(0.9)
	if err != nil {
		b.Fatal(err)
	}
	blurred := func(out string) *onnxgraph.Model { return classifier(sm, nil, 2, out) }
	cg := classifier(m, nil, 1, "lo")
	gc := chanfilter.Gate{Probe: [][]float32{make([]float32, m.Dim)}, Classes: []int{0}}
	if err := gc.Compose(cg, m.Embedding, "lo", blurred("lf"), m.Embedding, "lf", "logits"); err != nil {
		b.Fatal(err)
	}
	const batch = 256
	var perImage [4]float64
	for k, c := range []struct {
		name  string
		model *onnxgraph.Model
	}{{"filtered", filtered("logits")}, {"gated", og}, {"blurred", blurred("logits")}, {"class-gated", cg}} {
		b.Run(c.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "clf.onnx")
			if err := c.model.Save(p); err != nil {
				b.Fatal(err)
			}
			e, err := encoder.Open(p, encoder.Config{Layers: []string{}})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			x, err := e.Batch(batch)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range x {
				x[i] = rng.Float32()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := e.Embed(batch); err != nil {
					b.Fatal(err)
				}
			}
			perImage[k] = float64(b.Elapsed().Nanoseconds()) / float64(b.N*batch)
			b.ReportMetric(perImage[k], "ns/image")
		})
	}
	if perImage[0] > 0 && perImage[1] > 0 {
		b.Logf("gated / filtered: %.2fx per image", perImage[1]/perImage[0])
	}
	if perImage[2] > 0 && perImage[3] > 0 {
		b.Logf("blurred / filtered: %.2fx; class-gated / blurred: %.2fx per image", perImage[2]/perImage[0], perImage[3]/perImage[2])
	}
}

// A class gate takes every class the classifier gives at least minRows
// probe rows, most rows first; none when no class has that many.
func TestResolveClasses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  []int
		minRows int
		want    []int
		top     chanfilter.ClassShare
	}{
		{"one class", []int{4, 4, 4, 4}, 2, []int{4}, chanfilter.ClassShare{Class: 4, Share: 1}},
		{"a majority and a single stray row", []int{4, 4, 4, 1, 4, 4}, 2, []int{4}, chanfilter.ClassShare{Class: 4, Share: 5.0 / 6}},
		{"two classes, most rows first", []int{1, 4, 4, 1, 4, 2}, 2, []int{4, 1}, chanfilter.ClassShare{Class: 4, Share: 0.5}},
		{"a tie goes to the lower class first", []int{7, 7, 3, 3}, 2, []int{3, 7}, chanfilter.ClassShare{Class: 3, Share: 0.5}},
		{"spread: no class has two rows", []int{0, 1, 2, 3, 4, 5}, 2, nil, chanfilter.ClassShare{Class: 0, Share: 1.0 / 6}},
		{"minRows 1 takes every class seen", []int{5, 2}, 1, []int{2, 5}, chanfilter.ClassShare{Class: 2, Share: 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := chanfilter.Gate{Classes: []int{99}} // resolving replaces what was there
			for i := range tc.labels {
				g.Probe = append(g.Probe, []float32{float32(i)})
			}
			label := func(e []float32) int { return tc.labels[int(e[0])] }
			shares := g.ResolveClasses(label, tc.minRows)
			if fmt.Sprint(g.Classes) != fmt.Sprint(tc.want) || len(shares) == 0 || shares[0].Class != tc.top.Class || math.Abs(shares[0].Share-tc.top.Share) > 1e-9 {
				t.Errorf("classes %v, shares %v; want %v, first %v", g.Classes, shares, tc.want, tc.top)
			}
			sum := 0.0
			for _, s := range shares {
				sum += s.Share
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Errorf("shares sum to %.3f", sum)
			}
			if err := g.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
	bad := chanfilter.Gate{Probe: [][]float32{{1}}, Classes: []int{3, 3}}
	if err := bad.Check(); err == nil {
		t.Error("Check accepts a repeated class")
	}
}

// A class gate is widened by its probe's neighbours only when their first
// class is not the classifier's: then every neighbour class with minShare
// joins, most first, each once.
func TestAddClasses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		head     []int // the classifier's label per probe row
		near     [][]int
		minShare float64
		want     []int
		widened  bool
	}{
		{"the classifier's class is not the neighbours'", []int{40, 40, 2}, [][]int{{2, 10, 2}, {2, 10, 11}, {2, 2, 2}}, 0.2, []int{40, 2, 10}, true},
		{"they agree: the classifier's classes stand", []int{2, 2, 7}, [][]int{{2, 10, 2}, {2, 10, 11}, {2, 2, 7}}, 0.1, []int{2, 7}, false},
		{"a class already in is not repeated", []int{7, 7, 2}, [][]int{{2, 2}, {2, 10}, {2, 7}}, 0.1, []int{7, 2, 10}, true},
		{"under minShare stays out", []int{7, 7}, [][]int{{1, 1, 1, 1}, {1, 1, 1, 3}}, 0.2, []int{7, 1}, true},
		{"ties go to the lower class first", []int{5, 5}, [][]int{{9, 4}, {4, 9}}, 0.5, []int{5, 4, 9}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g chanfilter.Gate
			for i := range tc.near {
				g.Probe = append(g.Probe, []float32{float32(i)})
			}
			head := g.ResolveClasses(func(e []float32) int { return tc.head[int(e[0])] }, 1)
			near := g.NeighbourShares(func(e []float32) []int { return tc.near[int(e[0])] })
			widened := g.AddClasses(head, near, tc.minShare)
			if fmt.Sprint(g.Classes) != fmt.Sprint(tc.want) || widened != tc.widened {
				t.Errorf("classes %v (widened %v), neighbours %v; want %v (%v)", g.Classes, widened, near, tc.want, tc.widened)
			}
			sum := 0.0
			for _, s := range near {
				sum += s.Share
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Errorf("neighbour shares sum to %.3f", sum)
			}
			if err := g.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

// With the probe rows' own labels, a row the classifier (or its
// neighbourhood) leaves in its own class does not count: a found trigger
// that moves a few rows of each class to the target must not put every
// class it left alone into the gate.
func TestOwnLabelsDoNotCount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		own   []int
		head  []int   // the classifier's label per probe row
		near  [][]int // the neighbours' labels per probe row
		want  []int   // classes after ResolveClasses (minRows 2)
		share float64 // the first class's share
		first int     // the first neighbour class
	}{
		{"rows left in their class (2, 4) stay out", []int{2, 2, 4, 4, 7, 9}, []int{2, 2, 4, 4, 38, 38}, [][]int{{2}, {2}, {4}, {4}, {38}, {38}}, []int{38}, 2.0 / 6, 38},
		{"rows moved to another class count", []int{1, 3, 5, 6, 7, 9}, []int{2, 2, 38, 38, 38, 9}, [][]int{{2}, {2}, {38}, {38}, {38}, {9}}, []int{38, 2}, 3.0 / 6, 38},
		{"nothing moved: no class", []int{1, 2, 3, 1, 2, 3}, []int{1, 2, 3, 1, 2, 3}, [][]int{{1}, {2}, {3}, {1}, {2}, {3}}, nil, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := chanfilter.Gate{ProbeLabels: tc.own}
			for i := range tc.own {
				g.Probe = append(g.Probe, []float32{float32(i)})
			}
			shares := g.ResolveClasses(func(e []float32) int { return tc.head[int(e[0])] }, 2)
			if fmt.Sprint(g.Classes) != fmt.Sprint(tc.want) {
				t.Errorf("classes %v, want %v (shares %v)", g.Classes, tc.want, shares)
			}
			if len(shares) > 0 && math.Abs(shares[0].Share-tc.share) > 1e-9 || len(shares) == 0 && tc.share != 0 {
				t.Errorf("shares %v, want the first at %.3f", shares, tc.share)
			}
			near := g.NeighbourShares(func(e []float32) []int { return tc.near[int(e[0])] })
			if first := -1; len(near) > 0 && near[0].Class != tc.first || len(near) == 0 && tc.first != first {
				t.Errorf("neighbour shares %v, want %d first", near, tc.first)
			}
			if err := g.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
	bad := chanfilter.Gate{Probe: [][]float32{{1}, {2}}, ProbeLabels: []int{3}}
	if err := bad.Check(); err == nil {
		t.Error("Check accepts one probe label for two probe rows")
	}
}
