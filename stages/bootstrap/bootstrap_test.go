package bootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/expand"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
	"github.com/tcore-dev/tcore/stages/sift"
)

// params returns bootstrap's defaults with overrides.
func params(t *testing.T, over map[string]any) bootstrap.Params {
	t.Helper()
	raw, _ := json.Marshal(over)
	var p bootstrap.Params
	if err := plugin.DecodeParams(bootstrap.New().Spec(), raw, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// shifted returns copies of the rows of t's embedding with shift added
// (a trigger that moves every input the same way), with their labels.
func shifted(t *feat.Table, rows []int, shift []float32) *feat.Table {
	a := &feat.Table{Embedding: feat.Matrix{Name: t.Embedding.Name, D: t.Embedding.D}}
	for _, i := range rows {
		a.IDs = append(a.IDs, t.IDs[i])
		a.Labels = append(a.Labels, t.Labels[i])
		for j, v := range t.Embedding.Row(i) {
			a.Embedding.X = append(a.Embedding.X, v+shift[j])
		}
	}
	return a
}

// accuracy is the share of a's rows the head predicts as their label.
func accuracy(t *testing.T, h *mlp.Head, a *feat.Table) float64 {
	t.Helper()
	tr, err := mlp.NewTrainer(h.Sizes, mlp.DefaultConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sc, err := tr.Score(h, a.Embedding.X, a.Labels)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for i, p := range sc.Pred {
		if p == a.Labels[i] {
			ok++
		}
	}
	return float64(ok) / float64(a.N())
}

// Rows carrying a shift that the head never saw are misread; the same
// shift on trusted rows with their own labels (the augment input) teaches
// the final head to ignore it.
func TestAugmentTeachesTheHeadToIgnoreAPattern(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.Clean, PerClass: 150, Classes: 4, Seed: 5})
	tab := set.Table
	n, d := tab.N(), tab.Embedding.D
	rng := rand.New(rand.NewPCG(7, 8))
	shift := make([]float32, d)
	for j := range shift {
		shift[j] = float32(rng.NormFloat64() * 4)
	}
	start := make([]bool, n)
	var trusted, rest []int
	for i := range start {
		if i%3 == 0 {
			start[i] = true
			trusted = append(trusted, i)
		} else {
			rest = append(rest, i)
		}
	}
	test := shifted(tab, rest, shift)
	p := params(t, map[string]any{"epochs": 10, "final_epochs": 20, "rounds": 1})
	plain, err := bootstrap.Bootstrap(context.Background(), tab, start, nil, nil, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	aug, err := bootstrap.Bootstrap(context.Background(), tab, start, nil, shifted(tab, trusted, shift), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	a0, a1 := accuracy(t, plain.Head, test), accuracy(t, aug.Head, test)
	if a1 < 0.9 || a1 < a0+0.2 {
		t.Fatalf("accuracy on shifted rows: %.3f without augment rows, %.3f with; want >= 0.9 and 0.2 better", a0, a1)
	}
	if got := aug.Metrics["augment_rows"]; got != len(trusted) {
		t.Fatalf("metrics augment_rows %v, want %d", got, len(trusted))
	}
}

// Warm starts and fresh heads are both deterministic; bad augment rows
// are refused naming the port.
func TestBootstrapDeterministicAndChecksAugment(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 100, Classes: 4, Poison: 40, Seed: 2})
	tab := set.Table
	start := cleanEvery(set, 4)
	for _, warm := range []int{0, 5} {
		p := params(t, map[string]any{"epochs": 5, "final_epochs": 10, "warm_epochs": warm, "rounds": 2})
		a, err := bootstrap.Bootstrap(context.Background(), tab, start, nil, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bootstrap.Bootstrap(context.Background(), tab, start, nil, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.Kept, b.Kept) || !reflect.DeepEqual(a.Head, b.Head) {
			t.Fatalf("warm_epochs %d: two runs differ", warm)
		}
	}
	rec := set.Record()
	defer rec.Release()
	in := plugin.NewTables()
	defer in.Release()
	in.Put("features", rec.Schema(), rec)
	schema := arrowio.FeaturesSchema(tab.Embedding.D, nil)
	bad := arrowio.NewFeaturesRecord(schema, tab.IDs[:2], []int32{0, 9}, [][]float32{tab.Embedding.X[:2*tab.Embedding.D]})
	in.Put("augment", schema, bad)
	bad.Release()
	out := plugin.NewTables()
	defer out.Release()
	_, err := plugin.Local(bootstrap.New()).Run(context.Background(), nil, in, out, nil)
	var pe *plugin.Error
	if !errors.As(err, &pe) || pe.Port != "augment" || pe.Code != plugin.CodeBadInput {
		t.Fatalf("label outside the classes in augment: got %v, want an error naming port augment", err)
	}
}

// Clean-label poison through the data stages as tcore chains them (sift,
// expand, bootstrap, each through its plugin boundary): the poisoned rows
// carry their true label, so no head's loss gives them away; sift's
// shallow-cluster suspects do, expand passes them on as expand.suspect and
// bootstrap never keeps one, under both admission rules.
func TestCleanLabelPoisonIsNeverKept(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.CleanLabel, PerClass: 150, Classes: 6, Poison: 100, Target: 2, Seed: 5})
	rec := set.Record()
	defer rec.Release()
	ctx := context.Background()
	in := plugin.NewTables()
	defer in.Release()
	in.Put("features", rec.Schema(), rec)
	seeds := plugin.NewTables()
	defer seeds.Release()
	if _, err := plugin.Local(sift.New()).Run(ctx, nil, in, seeds, nil); err != nil {
		t.Fatal(err)
	}
	in.Put("seeds", seeds.Get("scores").Schema, seeds.Get("scores").Records...)
	trusted := plugin.NewTables()
	defer trusted.Release()
	if _, err := plugin.Local(expand.New()).Run(ctx, json.RawMessage(`{"epochs": 10, "hidden": [64, 32]}`), in, trusted, nil); err != nil {
		t.Fatal(err)
	}
	for _, admit := range []string{"heldout", "confident"} {
		t.Run(admit, func(t *testing.T) {
			bin := plugin.NewTables()
			defer bin.Release()
			bin.Put("features", rec.Schema(), rec)
			bin.Put("trusted", trusted.Get("scores").Schema, trusted.Get("scores").Records...)
			out := plugin.NewTables()
			defer out.Release()
			params := fmt.Sprintf(`{"admit": %q, "epochs": 5, "final_epochs": 10, "hidden": [64, 32]}`, admit)
			if _, err := plugin.Local(bootstrap.New()).Run(ctx, json.RawMessage(params), bin, out, nil); err != nil {
				t.Fatal(err)
			}
			kept, err := feat.Bools(out, "scores", set.Table, "bootstrap.kept")
			if err != nil {
				t.Fatal(err)
			}
			n, bad := 0, 0
			for i, k := range kept {
				if k {
					n++
					if set.IsPoison[i] {
						bad++
					}
				}
			}
			if bad != 0 || n < len(kept)/2 {
				t.Fatalf("kept %d of %d rows, %d of them poisoned; want most rows and no poisoned one", n, len(kept), bad)
			}
		})
	}
}

// TestRestart: a class whose trusted rows were all excluded starts from
// its rows that are not; a class with a trusted row left, or rows never
// trusted, does not change.
func TestRestart(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		start, exclude, want []bool
		labels               []int32
		restarted            int
	}{
		{"all of class 1's trusted rows excluded",
			[]bool{true, false, true, true, false, false},
			[]bool{false, false, true, true, false, true},
			[]bool{true, false, false, false, true, false},
			[]int32{0, 0, 1, 1, 1, 1}, 1},
		{"one trusted row of class 1 left",
			[]bool{true, false, true, true, false, false},
			[]bool{false, false, true, false, false, false},
			[]bool{true, false, false, true, false, false},
			[]int32{0, 0, 1, 1, 1, 1}, 0},
		{"class 1 never trusted",
			[]bool{true, false, false, false},
			[]bool{false, false, true, false},
			[]bool{true, false, false, false},
			[]int32{0, 0, 1, 1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept := make([]bool, len(tc.start))
			for i := range kept {
				kept[i] = tc.start[i] && !tc.exclude[i]
			}
			got := bootstrap.Restart(kept, tc.start, tc.exclude, tc.labels)
			if len(got) != tc.restarted {
				t.Errorf("restarted %v, want %d rows", got, tc.restarted)
			}
			for i := range kept {
				if kept[i] != tc.want[i] {
					t.Fatalf("kept %v, want %v", kept, tc.want)
				}
			}
		})
	}
	if got := bootstrap.Restart([]bool{true}, []bool{true}, nil, []int32{0}); got != nil {
		t.Errorf("no exclusions: restarted %v", got)
	}
}

// Dirty-label poison left out as suspects: with relabel on, the final head
// takes the poisoned rows back under the class their content shows (their
// source), never under the target's label they came with; kept rows keep
// their own labels, and rows left out that are not suspects stay out;
// with relabel off, every row left out is -1.
func TestRelabelGivesLeftOutPoisonItsSource(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 120, Classes: 4, Poison: 60, Target: 1, Seed: 3})
	tab := set.Table
	start := make([]bool, tab.N())
	flipped := 0
	for i := range start {
		start[i] = i%3 == 0 && !set.IsPoison[i]
		// Mislabelled rows that are no suspects: never admitted, and the
		// head gives them their true class, but they must stay out.
		if !start[i] && !set.IsPoison[i] && tab.Labels[i] == 0 && flipped < 10 {
			tab.Labels[i] = 3
			flipped++
		}
	}
	cases := []struct {
		name    string
		relabel float32
		form    string
	}{{"off", 0, "hard"}, {"on", 0.9, "hard"}, {"soft", 0.9, "soft"}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := params(t, map[string]any{"epochs": 10, "final_epochs": 20, "rounds": 3, "relabel": tc.relabel, "relabel_form": tc.form})
			res, err := bootstrap.Bootstrap(context.Background(), tab, start, set.IsPoison, nil, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			var moved, toSource, poisonMoved int
			for i, l := range res.Label {
				switch {
				case res.Kept[i] && l != tab.Labels[i]:
					t.Fatalf("kept row %d trained as %d, its label is %d", i, l, tab.Labels[i])
				case res.Kept[i]:
				case l == tab.Labels[i]:
					t.Fatalf("row %d left out but trained under its own label %d", i, l)
				case l >= 0 && !set.IsPoison[i]:
					t.Fatalf("row %d is no suspect, but relabelled %d", i, l)
				case l >= 0:
					moved++
					if set.IsPoison[i] {
						poisonMoved++
						if l == set.Source[i] {
							toSource++
						}
					}
				}
			}
			if got := res.Metrics["relabelled"]; got != moved {
				t.Fatalf("metrics relabelled %v, %d rows relabelled", got, moved)
			}
			if tc.relabel == 0 {
				if moved != 0 {
					t.Fatalf("relabel off, %d rows relabelled", moved)
				}
				return
			}
			if poisonMoved < 30 || float64(toSource) < 0.9*float64(poisonMoved) {
				t.Fatalf("%d of 60 poisoned rows relabelled, %d to their source class; want >= 30, 90%% to the source", poisonMoved, toSource)
			}
		})
	}
}

// SoftTarget keeps the head's probabilities of the classes the suspects
// do not crowd, renormalised, and gives the crowded ones nothing.
func TestSoftTarget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prob    []float32
		crowded []bool
		want    []float32
	}{
		{"one crowded class", []float32{0.6, 0.2, 0.2}, []bool{false, true, false}, []float32{0.75, 0, 0.25}},
		{"none crowded", []float32{0.5, 0.3, 0.2}, []bool{false, false, false}, []float32{0.5, 0.3, 0.2}},
		{"two crowded", []float32{0.1, 0.4, 0.4, 0.1}, []bool{true, false, false, true}, []float32{0, 0.5, 0.5, 0}},
	} {
		got := bootstrap.SoftTarget(tc.prob, tc.crowded)
		for c := range got {
			if math.Abs(float64(got[c]-tc.want[c])) > 1e-6 {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

// Crowded takes the classes whose share of the suspects is at least twice
// their share of the rows: a poisoning attack's target, not the spread of
// suspects on clean data.
func TestCrowded(t *testing.T) {
	// 1,000 rows, 100 per class.
	labels := make([]int32, 1000)
	for i := range labels {
		labels[i] = int32(i % 10)
	}
	mark := func(f func(i int) bool) []bool {
		s := make([]bool, len(labels))
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	cases := []struct {
		name    string
		suspect []bool
		want    []int32
	}{
		{"none", nil, nil},
		{"poison labelled 3", mark(func(i int) bool { return labels[i] == 3 && i < 500 || i%97 == 0 }), []int32{3}},
		{"spread over every class", mark(func(i int) bool { return i%7 == 0 }), nil},
		{"two targets", mark(func(i int) bool { return labels[i] == 1 || labels[i] == 8 }), []int32{1, 8}},
		{"too few rows (under 1%)", mark(func(i int) bool { return labels[i] == 5 && i < 60 }), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []int32
			for c, on := range bootstrap.Crowded(tc.suspect, labels, 10) {
				if on {
					got = append(got, int32(c))
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("crowded classes %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSpread checks what a gated classifier's original head trains on
// under original_rows "spread": the kept rows, and the suspects of the
// classes the suspects do not crowd; a poisoning attack's suspects (its
// target crowded) stay out, as do rows that are neither kept nor
// suspects.
func TestSpread(t *testing.T) {
	// 1,000 rows, 100 per class; the first 600 are kept.
	labels := make([]int32, 1000)
	kept := make([]bool, len(labels))
	for i := range labels {
		labels[i] = int32(i % 10)
		kept[i] = i < 600
	}
	mark := func(f func(i int) bool) []bool {
		s := make([]bool, len(labels))
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	poison := func(i int) bool { return labels[i] == 3 && i >= 600 }
	moved := func(i int) bool { return i >= 600 && i%7 == 0 }
	cases := []struct {
		name    string
		suspect []bool
		// join says which rows past the kept ones join.
		join func(i int) bool
	}{
		{"no suspects", nil, func(int) bool { return false }},
		{"moved rows spread over the classes", mark(moved), moved},
		{"poison crowding its target", mark(poison), func(int) bool { return false }},
		{"poison and moved rows", mark(func(i int) bool { return poison(i) || moved(i) }), func(i int) bool { return moved(i) && labels[i] != 3 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := bootstrap.Spread(kept, tc.suspect, labels, bootstrap.Crowded(tc.suspect, labels, 10))
			for i := range got {
				if w := kept[i] || tc.join(i); got[i] != w {
					t.Fatalf("row %d (label %d, kept %v): in the original head's rows %v, want %v", i, labels[i], kept[i], got[i], w)
				}
			}
			if !kept[0] || kept[999] {
				t.Fatal("Spread changed the kept rows")
			}
		})
	}
}

// TestNonSuspect: original_rows "nonsuspect" trains the original head on
// every row no suspect column marks, kept or not.
func TestNonSuspect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		suspect []bool
		want    []bool
	}{
		{"no suspects", nil, []bool{true, true, true, true}},
		{"two suspects", []bool{false, true, false, true}, []bool{true, false, true, false}},
		{"every row a suspect", []bool{true, true, true, true}, []bool{false, false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bootstrap.NonSuspect(tc.suspect, 4); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("NonSuspect = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRelabels checks which suspects the relabel rule moves: only
// suspects of a crowded class, only to a class that is not crowded, only
// at the head's probability q or more, never rows that are not suspects.
func TestRelabels(t *testing.T) {
	// 1,000 rows, 100 per class; 60 suspects in class 3 and 60 in class
	// 8 (both crowded).
	const nc = 10
	labels := make([]int32, 1000)
	for i := range labels {
		labels[i] = int32(i / 100)
	}
	suspect := make([]bool, len(labels))
	for i := 0; i < 60; i++ {
		suspect[300+i], suspect[800+i] = true, true
	}
	suspect[10] = true // a lone suspect of class 0, not crowded
	// scores: row i predicted as pred[i] with probability prob[i]
	score := func(pred map[int]int32, prob map[int]float32) *mlp.Scores {
		sc := &mlp.Scores{Prob: make([]float32, len(labels)*nc), Pred: make([]int32, len(labels))}
		for i, l := range labels {
			p, q := l, float32(0.9)
			if c, ok := pred[i]; ok {
				p, q = c, prob[i]
			}
			sc.Pred[i] = p
			sc.Prob[i*nc+int(p)] = q
		}
		return sc
	}
	cases := []struct {
		name string
		pred map[int]int32
		prob map[int]float32
		want map[int]int32
	}{
		{"confident move out of the crowded class", map[int]int32{300: 7, 301: 2}, map[int]float32{300: 0.8, 301: 0.6}, map[int]int32{300: 7, 301: 2}},
		{"under q stays", map[int]int32{300: 7}, map[int]float32{300: 0.4}, nil},
		{"a suspect of a class not crowded stays", map[int]int32{10: 4}, map[int]float32{10: 0.99}, nil},
		{"a row that is not a suspect stays", map[int]int32{370: 4, 500: 1}, map[int]float32{370: 0.99, 500: 0.99}, nil},
		{"never into a crowded class", map[int]int32{305: 8, 306: 5}, map[int]float32{305: 0.99, 306: 0.99}, map[int]int32{306: 5}},
		{"agreeing with its label stays", nil, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := map[int]int32{}
			for i, l := range bootstrap.Relabels(score(tc.pred, tc.prob), suspect, bootstrap.Crowded(suspect, labels, nc), labels, nc, 0.5) {
				if l >= 0 {
					got[i] = l
				}
			}
			want := tc.want
			if want == nil {
				want = map[int]int32{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("relabelled %v, want %v", got, want)
			}
		})
	}
}

// TestClassRule: a move gate's class part takes the classes holding
// class_part_share of its probe rows, at most class_part_classes of them,
// and is never widened; a class gate keeps 5% and its neighbourhood.
func TestClassRule(t *testing.T) {
	// 32 probe rows: 12 the classifier puts in class 3, 3 in class 9,
	// 2 in class 0, the rest in their own class 5 (not counted).
	probe := make([][]float32, 32)
	own := make([]int, 32)
	for i := range probe {
		c := float32(5)
		switch {
		case i < 12:
			c = 3
		case i < 15:
			c = 9
		case i < 17:
			c = 0
		}
		probe[i], own[i] = []float32{c}, 5
	}
	predict := func(e []float32) int { return int(e[0]) }
	cases := []struct {
		name string
		both bool
		over map[string]any
		want []int
		rule bootstrap.ClassRule
		cut  int // qualifying classes the rule's Most leaves out
	}{
		{"class part at the defaults", true, nil, []int{3}, bootstrap.ClassRule{Share: 0.15, Most: 1}, 0},
		{"class part at 5%, any number", true, map[string]any{"class_part_share": 0.05, "class_part_classes": 0}, []int{3, 9, 0}, bootstrap.ClassRule{Share: 0.05}, 0},
		{"class part at 10%, any number", true, map[string]any{"class_part_share": 0.1, "class_part_classes": 0}, []int{3}, bootstrap.ClassRule{Share: 0.1}, 0},
		{"class part of two classes at most", true, map[string]any{"class_part_share": 0.05, "class_part_classes": 2}, []int{3, 9}, bootstrap.ClassRule{Share: 0.05, Most: 2}, 1},
		{"class part where no class has the share", true, map[string]any{"class_part_share": 0.5}, nil, bootstrap.ClassRule{Share: 0.5, Most: 1}, 0},
		{"class gate ignores the class part's rule", false, map[string]any{"class_part_share": 0.5, "class_part_classes": 1, "gate_neighbours": 0}, []int{3, 9, 0}, bootstrap.ClassRule{Share: 0.05}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := params(t, tc.over)
			g := &chanfilter.Gate{Probe: probe, ProbeLabels: own, Both: tc.both}
			rule := p.ClassRule(g)
			if rule != tc.rule {
				t.Fatalf("rule %+v, want %+v", rule, tc.rule)
			}
			c, err := bootstrap.ClassGate(g, predict, nil, nil, rule)
			if err != nil {
				t.Fatal(err)
			}
			if c.Cut != tc.cut {
				t.Errorf("%d classes cut, want %d", c.Cut, tc.cut)
			}
			if !reflect.DeepEqual(g.Classes, tc.want) {
				t.Errorf("classes %v, want %v", g.Classes, tc.want)
			}
		})
	}
	// A class gate is widened by its neighbourhood by default.
	if r := params(t, nil).ClassRule(&chanfilter.Gate{Probe: probe}); r.Neighbours != 10 {
		t.Errorf("a class gate's rule %+v, want 10 neighbours", r)
	}
}

// The veto's threshold for a class is the 0.99 quantile of that class's
// trusted rows' moves (original against filtered embedding, rows matched
// by sample id), never below the gate's own; untrusted rows do not count.
func TestVetoThresholds(t *testing.T) {
	const n = 300
	filt := &feat.Table{Embedding: feat.Matrix{Name: "embedding", D: 2}}
	orig := &feat.Table{Embedding: feat.Matrix{Name: "embedding", D: 2}}
	trusted := make([]bool, n)
	for i := 0; i < n; i++ {
		// Class 0 moves by i/100 (0 .. 1.49), class 1 by 10 + i/100;
		// the untrusted rows of class 0 move by 50.
		c := int32(i % 2)
		trusted[i] = i < 200 || c == 1
		filt.IDs, filt.Labels = append(filt.IDs, uint64(i)), append(filt.Labels, c)
		filt.Embedding.X = append(filt.Embedding.X, 1, 2)
		// The original table holds the rows in reverse order.
		j := n - 1 - i
		orig.IDs, orig.Labels = append(orig.IDs, uint64(j)), append(orig.Labels, int32(j%2))
		mj := float32(j/2)/100 + 10*float32(j%2)
		if !(j < 200 || j%2 == 1) {
			mj = 50
		}
		orig.Embedding.X = append(orig.Embedding.X, 1+mj, 2)
	}
	for _, tc := range []struct {
		name    string
		moved   float64
		classes []int
		want    []float64
	}{
		// Class 0's trusted rows move 0 .. 0.99 (100 rows): the 0.99
		// quantile is row 98's 0.98; class 1's 150 rows 10 .. 11.49 (row 147: 11.47).
		{"each class its own", 0.5, []int{0, 1}, []float64{0.98, 11.47}},
		{"never below the gate", 5, []int{0}, []float64{5}},
		{"a class without trusted rows gets the gate's", 0.5, []int{7}, []float64{0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &chanfilter.Gate{Moved: tc.moved, Both: true, Probe: [][]float32{{0, 0}}, Classes: tc.classes}
			got, err := bootstrap.VetoThresholds(filt, orig, trusted, g)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.want {
				if math.Abs(got[i]-tc.want[i]) > 1e-4 {
					t.Fatalf("thresholds %v, want %v", got, tc.want)
				}
			}
		})
	}
	short := &feat.Table{IDs: orig.IDs[1:], Labels: orig.Labels[1:], Embedding: feat.Matrix{D: 2, X: orig.Embedding.X[2:]}}
	if _, err := bootstrap.VetoThresholds(filt, short, trusted, &chanfilter.Gate{Both: true, Probe: [][]float32{{0, 0}}, Classes: []int{0}}); err == nil {
		t.Fatal("an original table without a trusted row's sample id: no error")
	}
}

// gate_class_quantile: a class's move threshold is the quantile of the
// moves of the kept rows the original head gives it (not their labels),
// never below the gate's; a class given to fewer than 20 kept rows, or
// to none, keeps the gate's; rows that are not kept do not count.
func TestClassMoveThresholds(t *testing.T) {
	const n = 100
	// Row i's original-head class and move: rows 0-59 class 0, moved
	// i/10 (0 .. 5.9); rows 60-74 class 1 (15 rows); rows 75-94 class 2,
	// moved 10 + (i-75)/10 (10 .. 11.9); rows 95-99 class 2, not kept,
	// moved 1000. The labels follow none of that.
	layout := func(i int) (class int, move float32) {
		switch {
		case i >= 95:
			return 2, 1000
		case i >= 75:
			return 2, 10 + float32(i-75)/10
		case i >= 60:
			return 1, 0
		}
		return 0, float32(i) / 10
	}
	filt := &feat.Table{Embedding: feat.Matrix{Name: "embedding", D: 2}}
	orig := &feat.Table{Embedding: feat.Matrix{Name: "embedding", D: 2}}
	kept := make([]bool, n)
	for i := 0; i < n; i++ {
		c, _ := layout(i)
		kept[i] = i < 95
		filt.IDs, filt.Labels = append(filt.IDs, uint64(i)), append(filt.Labels, int32((i+1)%4))
		filt.Embedding.X = append(filt.Embedding.X, 1, float32(c))
		// The original table holds the rows in reverse order, its
		// embedding's second value the original head's class.
		j := n - 1 - i
		cj, mj := layout(j)
		orig.IDs, orig.Labels = append(orig.IDs, uint64(j)), append(orig.Labels, int32((j+1)%4))
		orig.Embedding.X = append(orig.Embedding.X, 1+mj, float32(cj))
	}
	predict := func(e []float32) int { return int(e[1]) }
	for _, tc := range []struct {
		name  string
		moved float64
		q     float64
		want  []float64 // classes 0-3
	}{
		// Class 0: 60 moves 0 .. 5.9, the 0.9 quantile is rank 53's 5.3;
		// class 2: 20 kept moves 10 .. 11.9, rank 17's 11.7.
		{"each class its own", 0.5, 0.9, []float64{5.3, 0.5, 11.7, 0.5}},
		{"the median", 0.5, 0.5, []float64{2.9, 0.5, 10.9, 0.5}},
		{"never below the gate", 6, 0.9, []float64{6, 6, 11.7, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &chanfilter.Gate{Moved: tc.moved}
			got, err := bootstrap.ClassMoveThresholds(filt, orig, kept, g, predict, 4, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("thresholds %v, want %v", got, tc.want)
			}
			for c := range tc.want {
				if math.Abs(got[c]-tc.want[c]) > 1e-4 {
					t.Fatalf("thresholds %v, want %v", got, tc.want)
				}
			}
			g.ClassMoved = got
			if err := g.Check(); err != nil {
				t.Errorf("the gate with these thresholds does not check: %v", err)
			}
		})
	}
	// The last original row is row 0's, which is kept.
	short := &feat.Table{IDs: orig.IDs[:n-1], Labels: orig.Labels[:n-1], Embedding: feat.Matrix{D: 2, X: orig.Embedding.X[:2*(n-1)]}}
	if _, err := bootstrap.ClassMoveThresholds(filt, short, kept, &chanfilter.Gate{Moved: 1}, predict, 4, 0.9); err == nil || !strings.Contains(err.Error(), "sample_id") {
		t.Fatalf("an original table without a kept row's sample id: error %v", err)
	}
}

func TestRegionVeto(t *testing.T) {
	for _, tc := range []struct {
		name    string
		classes []int
		shares  []chanfilter.ClassShare
		never   []int
	}{
		{"the class part and every class with 5% of the probe rows", []int{3}, []chanfilter.ClassShare{{Class: 3, Share: 0.8}, {Class: 5, Share: 0.1}, {Class: 1, Share: 0.04}}, []int{3, 5}},
		{"5% exactly is in", []int{3}, []chanfilter.ClassShare{{Class: 3, Share: 0.9}, {Class: 2, Share: 0.05}}, []int{3, 2}},
		{"a class part's class is listed once", []int{3, 5}, []chanfilter.ClassShare{{Class: 5, Share: 0.5}, {Class: 3, Share: 0.3}, {Class: 0, Share: 0.2}}, []int{3, 5, 0}},
		{"a class part's class holding few probe rows stays out of reach", []int{4}, []chanfilter.ClassShare{{Class: 6, Share: 0.97}, {Class: 4, Share: 0.03}}, []int{4, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &chanfilter.Gate{Moved: 1.25, Both: true, Classes: tc.classes}
			bootstrap.RegionVeto(g, tc.shares)
			if !slices.Equal(g.VetoNever, tc.never) {
				t.Errorf("VetoNever %v, want %v", g.VetoNever, tc.never)
			}
			if len(g.VetoMoved) != len(tc.classes) {
				t.Fatalf("VetoMoved %v for classes %v", g.VetoMoved, tc.classes)
			}
			for i, m := range g.VetoMoved {
				if m != g.Moved {
					t.Errorf("VetoMoved[%d] = %v, want the gate's threshold %v", i, m, g.Moved)
				}
			}
		})
	}
}

func TestUnsureVeto(t *testing.T) {
	for _, tc := range []struct {
		name    string
		classes []int
		below   float64
	}{
		{"one class", []int{3}, 0.9},
		{"two classes, every class at the gate's threshold", []int{3, 5}, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &chanfilter.Gate{Moved: 1.25, Both: true, Probe: [][]float32{{0, 0}}, Classes: tc.classes, VetoNever: []int{9}}
			bootstrap.UnsureVeto(g, tc.below)
			if len(g.VetoMoved) != len(tc.classes) {
				t.Fatalf("VetoMoved %v for classes %v", g.VetoMoved, tc.classes)
			}
			for i, m := range g.VetoMoved {
				if m != g.Moved {
					t.Errorf("VetoMoved[%d] = %v, want the gate's threshold %v", i, m, g.Moved)
				}
			}
			if g.VetoBelow != tc.below || g.VetoNever != nil {
				t.Errorf("VetoBelow %v, VetoNever %v: want %v and the class part alone (nil)", g.VetoBelow, g.VetoNever, tc.below)
			}
			if err := g.Check(); err != nil {
				t.Errorf("the vetoing gate does not check: %v", err)
			}
		})
	}
}

// cleanEvery marks every k-th row of set that is not poisoned: a trusted
// start with no poison in it.
func cleanEvery(set *synth.Set, k int) []bool {
	start := make([]bool, set.Table.N())
	for i := range start {
		start[i] = i%k == 0 && !set.IsPoison[i]
	}
	return start
}

// The rounds stop at the first round that admits nothing, at the rounds
// ceiling, or after the first round that admits fewer than stop_share of
// the rows: each way, the kept rows and head are those of the rounds run.
func TestRoundsStop(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 40, Classes: 3, Poison: 12, Seed: 5})
	tab := set.Table
	start := cleanEvery(set, 6)
	run := func(rounds int, share float64) *bootstrap.Result {
		t.Helper()
		p := params(t, map[string]any{"epochs": 3, "final_epochs": 5, "warm_epochs": 2, "rounds": rounds, "stop_share": share})
		res, err := bootstrap.Bootstrap(context.Background(), tab, start, nil, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	const ceiling = 50
	dry := run(ceiling, 0)
	trace := dry.Metrics["admitted_per_round"].([]int)
	used := len(trace)
	if used >= ceiling || used < 4 || trace[used-1] != 0 || trace[used-2] == 0 {
		t.Fatalf("admitted per round %v: want at least three rounds that admit rows, then an empty one that stops them before the ceiling of %d", trace, ceiling)
	}
	// k is the first round after the first (0-based) that admits rows,
	// fewer than every round before it, and is not the last to admit: a
	// share just above its admissions stops the rounds there.
	k := -1
	for i := 1; i+2 < used && k < 0; i++ {
		if trace[i] > 0 && slices.Min(trace[:i]) > trace[i] {
			k = i
		}
	}
	if k < 0 {
		t.Fatalf("admitted per round %v: no round admits fewer rows than every round before it and leaves a round that admits after it", trace)
	}
	ceil := run(k+1, 0)
	n := float64(tab.N())
	tests := []struct {
		name   string
		rounds int
		share  float64
		want   *bootstrap.Result
		trace  []int
	}{
		{"ceiling at the empty round", used - 1, 0, dry, trace[:used-1]},
		{"ceiling at round k", k + 1, 0, ceil, trace[:k+1]},
		{"share under one row", ceiling, 0.5 / n, dry, trace},
		{"share above round k's admissions", ceiling, (float64(trace[k]) + 0.5) / n, ceil, trace[:k+1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ceil
			if tc.rounds != k+1 || tc.share != 0 {
				got = run(tc.rounds, tc.share)
			}
			if gt := got.Metrics["admitted_per_round"].([]int); !slices.Equal(gt, tc.trace) {
				t.Fatalf("rounds %d, stop_share %.4f: admitted per round %v, want %v", tc.rounds, tc.share, gt, tc.trace)
			}
			if !reflect.DeepEqual(got.Kept, tc.want.Kept) || !reflect.DeepEqual(got.Head, tc.want.Head) {
				t.Fatalf("rounds %d, stop_share %.4f: kept rows or head differ from the %d rounds run", tc.rounds, tc.share, len(tc.trace))
			}
		})
	}
	if reflect.DeepEqual(ceil.Kept, dry.Kept) {
		t.Fatalf("a ceiling of %d rounds keeps the same rows as %d (admitted per round %v): the test cannot tell them apart", k+1, used, trace)
	}
}

// warm_max_steps caps the warm rounds' heads alone: at the floor every
// fit trains (300 batches) it changes nothing on a table this small, and
// with a single round there is no warm round to cap; under the floor it
// shortens the warm rounds, and the rows' rounds change.
func TestWarmMaxSteps(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 40, Classes: 3, Poison: 12, Seed: 5})
	start := cleanEvery(set, 6)
	run := func(rounds, warmMax int) *bootstrap.Result {
		t.Helper()
		p := params(t, map[string]any{"epochs": 3, "final_epochs": 5, "warm_epochs": 2, "rounds": rounds, "warm_max_steps": warmMax})
		res, err := bootstrap.Bootstrap(context.Background(), set.Table, start, nil, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	tests := []struct {
		name           string
		rounds, capped int
		same           bool
	}{
		{"the floor changes nothing on few rows", 8, 300, true},
		{"one round has no warm round", 1, 20, true},
		{"under the floor the warm rounds shorten", 8, 20, false},
	}
	bases := map[int]*bootstrap.Result{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if bases[tc.rounds] == nil {
				bases[tc.rounds] = run(tc.rounds, 0)
			}
			base, got := bases[tc.rounds], run(tc.rounds, tc.capped)
			same := reflect.DeepEqual(got.Round, base.Round) && reflect.DeepEqual(got.Kept, base.Kept) && reflect.DeepEqual(got.Head, base.Head)
			if same != tc.same {
				t.Fatalf("rounds %d, warm_max_steps %d: same rounds, kept rows and head as without a cap %v, want %v (admitted per round %v against %v)",
					tc.rounds, tc.capped, same, tc.same, got.Metrics["admitted_per_round"], base.Metrics["admitted_per_round"])
			}
		})
	}
}

// final_schedule declares the schedules mlp trains with, no more and no
// fewer: its enum is a struct tag and cannot name mlp.Schedules itself.
func TestFinalScheduleEnumIsMLPs(t *testing.T) {
	for _, p := range bootstrap.New().Spec().Params {
		if p.Name == "final_schedule" {
			if !slices.Equal(p.Enum, mlp.Schedules) {
				t.Fatalf("final_schedule enum %v, mlp.Schedules %v", p.Enum, mlp.Schedules)
			}
			return
		}
	}
	t.Fatal("bootstrap declares no final_schedule")
}

// finalRun bootstraps a small planted set (a short round and final
// head) with one final-head parameter set to v.
func finalRun(t *testing.T, param string, v int) *bootstrap.Result {
	t.Helper()
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 40, Classes: 3, Poison: 12, Seed: 5})
	p := params(t, map[string]any{"epochs": 2, "final_epochs": 4, "warm_epochs": 1, "rounds": 1, param: v})
	res, err := bootstrap.Bootstrap(context.Background(), set.Table, cleanEvery(set, 6), nil, nil, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// final_average reaches the final head and nothing else: the rounds keep
// the same rows and the head changes (mlp's TestAverage checks the
// average itself, and that 0 and 1 leave the last step's weights).
func TestFinalAverage(t *testing.T) {
	ortlib.Init(t)
	off, avg := finalRun(t, "final_average", 0), finalRun(t, "final_average", 3)
	if !reflect.DeepEqual(avg.Kept, off.Kept) {
		t.Error("final_average 3: the kept rows changed")
	}
	if reflect.DeepEqual(avg.Head, off.Head) {
		t.Error("final_average 3: the head is final_average 0's")
	}
}

// final_heads changes only the final head: the kept rows stay, and the
// head of two is twice as wide, its first member today's head (the first
// layer's first block of outputs is final_heads 1's first layer).
func TestFinalHeads(t *testing.T) {
	ortlib.Init(t)
	one, two := finalRun(t, "final_heads", 1), finalRun(t, "final_heads", 2)
	if !reflect.DeepEqual(two.Kept, one.Kept) {
		t.Error("final_heads 2: the kept rows changed")
	}
	s1, s2 := one.Head.Sizes, two.Head.Sizes
	if len(s2) != len(s1) || s2[1] != 2*s1[1] || s2[len(s2)-1] != s1[len(s1)-1] {
		t.Fatalf("final_heads 2: head sizes %v, final_heads 1 %v", s2, s1)
	}
	in, out := s1[0], s1[1]
	for i := 0; i < in; i++ {
		if !reflect.DeepEqual(two.Head.W[0][i*2*out:i*2*out+out], one.Head.W[0][i*out:(i+1)*out]) {
			t.Fatalf("final_heads 2: the first member's first layer (input %d) is not final_heads 1's", i)
		}
	}
	var p bootstrap.Params
	if err := plugin.DecodeParams(bootstrap.New().Spec(), []byte(`{"final_heads": 0}`), &p); err == nil || !strings.Contains(err.Error(), "final_heads") {
		t.Errorf("final_heads 0: error %v, want one naming final_heads", err)
	}
}

// class_growth caps what a class admits in a round at g times its kept
// rows (at least one): classes 0 (the target) and 1, started from two
// trusted rows each, grow by steps, while without the cap their first
// round takes many more; growth_classes "crowded" caps only the class the
// suspects crowd (the target).
func TestClassGrowth(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 60, Classes: 3, Poison: 12, Seed: 7})
	tab := set.Table
	labels := tab.Labels
	start := cleanEvery(set, 3)
	seen := map[int32]int{}
	for i := range start {
		if labels[i] <= 1 && start[i] {
			if seen[labels[i]] >= 2 {
				start[i] = false
			}
			seen[labels[i]]++
		}
	}
	// growth returns, for classes 0 and 1, the rows admitted in each of
	// the three rounds, and checks the cap round by round.
	growth := func(g float64, classes string) [2][4]int {
		t.Helper()
		p := params(t, map[string]any{"epochs": 2, "final_epochs": 1, "warm_epochs": 1, "rounds": 3, "class_growth": g, "growth_classes": classes})
		res, err := bootstrap.Bootstrap(context.Background(), tab, start, set.IsPoison, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		var by [2][4]int
		for i, r := range res.Round {
			if labels[i] <= 1 && res.Kept[i] {
				by[labels[i]][r]++
			}
		}
		for c := 0; c < 2; c++ {
			capped := g > 0 && (classes == "all" || c == int(set.Table.Labels[slices.Index(set.IsPoison, true)]))
			have := by[c][0]
			for r := 1; r <= 3; r++ {
				if capped && float64(by[c][r]) > max(1, g*float64(have)) {
					t.Errorf("class_growth %v (%s): round %d admitted %d rows of class %d, which kept %d", g, classes, r, by[c][r], c, have)
				}
				have += by[c][r]
			}
		}
		return by
	}
	free := growth(0, "all")
	if free[0][1] <= 2 || free[1][1] <= 2 {
		t.Fatalf("without class_growth, classes 0 and 1 admitted %d and %d rows in round 1: the test's set does not exercise the cap", free[0][1], free[1][1])
	}
	if all := growth(1, "all"); all[0][0] != 2 || all[1][0] != 2 || all[0][1] > 2 || all[1][1] > 2 {
		t.Errorf("class_growth 1 (all): classes 0 and 1 started from %d and %d rows and admitted %d and %d in round 1, want 2, 2 and at most 2 each", all[0][0], all[1][0], all[0][1], all[1][1])
	}
	if crowded := growth(1, "crowded"); crowded[0][1] > 2 || crowded[1][1] != free[1][1] {
		t.Errorf("class_growth 1 (crowded): round 1 admitted %d rows of the target (at most 2) and %d of class 1 (uncapped: %d)", crowded[0][1], crowded[1][1], free[1][1])
	}
}

// growth_classes "starved" caps a crowded class only when the suspects
// took at least nine in ten of its trusted rows: with the target's
// trusted rows mostly poison (suspected), it grows by steps; with its
// trusted rows clean, it admits what it does uncapped.
func TestGrowthStarved(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 60, Classes: 3, Poison: 24, Seed: 7})
	labels := set.Table.Labels
	target := labels[slices.Index(set.IsPoison, true)]
	roundOne := func(start []bool, classes string) (first, kept int) {
		t.Helper()
		p := params(t, map[string]any{"epochs": 2, "final_epochs": 1, "warm_epochs": 1, "rounds": 1, "class_growth": 1, "growth_classes": classes})
		res, err := bootstrap.Bootstrap(context.Background(), set.Table, start, set.IsPoison, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res.Round {
			if labels[i] == target && res.Kept[i] {
				if r == 0 {
					kept++
				} else {
					first++
				}
			}
		}
		return first, kept
	}
	clean := cleanEvery(set, 3)
	starved := append([]bool(nil), clean...)
	seen := 0
	for i := range starved {
		if labels[i] == target && !set.IsPoison[i] && starved[i] {
			starved[i] = seen < 2
			seen++
		}
		if set.IsPoison[i] {
			starved[i] = true // trusted, then taken by the suspects
		}
	}
	if a, k := roundOne(starved, "starved"); k != 2 || a > 2 {
		t.Errorf("starved target (2 of 26 trusted rows left): started from %d rows and admitted %d, want 2 and at most 2", k, a)
	}
	// With its trusted rows clean, the target is crowded but not starved:
	// crowded caps it, starved must not.
	capped, _ := roundOne(clean, "crowded")
	if a, _ := roundOne(clean, "starved"); a <= capped {
		t.Errorf("target with clean trusted rows: starved admitted %d, crowded %d: starved capped a class the suspects did not starve (or the set does not exercise the cap)", a, capped)
	}
}

// final_draws "rows" lets the final head learn the classes' prior: on two
// overlapping classes of 900 and 100 rows (2 dimensions, means 0.8
// apart), a head whose batches draw rows (not classes) reads a fresh
// sample of the same mix far better, since it no longer weighs the small
// class as much as the large one; the kept rows do not change.
func TestFinalDraws(t *testing.T) {
	ortlib.Init(t)
	sample := func(seed uint64, n0, n1 int) *feat.Table {
		rng := rand.New(rand.NewPCG(seed, 3))
		tb := &feat.Table{Embedding: feat.Matrix{Name: "emb", D: 2}}
		for i := 0; i < n0+n1; i++ {
			c, m := int32(0), float32(0.4)
			if i >= n0 {
				c, m = 1, -0.4
			}
			tb.IDs = append(tb.IDs, uint64(i))
			tb.Labels = append(tb.Labels, c)
			tb.Embedding.X = append(tb.Embedding.X, float32(rng.NormFloat64())+m, float32(rng.NormFloat64()))
		}
		return tb
	}
	train, test := sample(1, 900, 100), sample(2, 1800, 200)
	all := make([]bool, train.N())
	for i := range all {
		all[i] = true
	}
	acc := map[string]float64{}
	var kept [][]bool
	for _, draws := range []string{"classes", "rows"} {
		p := params(t, map[string]any{"rounds": 0, "final_epochs": 10, "final_draws": draws})
		res, err := bootstrap.Bootstrap(context.Background(), train, all, nil, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		acc[draws] = accuracy(t, res.Head, test)
		kept = append(kept, res.Kept)
	}
	if !reflect.DeepEqual(kept[0], kept[1]) {
		t.Error("final_draws changed the kept rows")
	}
	if acc["rows"] < acc["classes"]+0.1 {
		t.Errorf("accuracy on a 9:1 mix: rows %.3f, classes %.3f; want rows ahead by 0.1 at least", acc["rows"], acc["classes"])
	}
	var p bootstrap.Params
	if err := plugin.DecodeParams(bootstrap.New().Spec(), []byte(`{"final_draws": "labels"}`), &p); err == nil || !strings.Contains(err.Error(), "final_draws") {
		t.Errorf("final_draws labels: error %v, want one naming final_draws", err)
	}
}
