package sift_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/sift"
)

func run(t *testing.T, set *synth.Set, params string) (*plugin.Table, plugin.Metrics, error) {
	t.Helper()
	rec := set.Record()
	defer rec.Release()
	in := plugin.NewTables()
	defer in.Release()
	in.Put("features", rec.Schema(), rec)
	out := plugin.NewTables()
	t.Cleanup(out.Release)
	m, err := plugin.Local(sift.New()).Run(context.Background(), json.RawMessage(params), in, out, nil)
	return out.Get("scores"), m, err
}

func seeds(t *testing.T, tb *plugin.Table) []bool {
	var out []bool
	for _, r := range tb.Records {
		c := r.Column(r.Schema().FieldIndices("sift.seed")[0]).(*array.Boolean)
		for i := 0; i < c.Len(); i++ {
			out = append(out, c.Value(i))
		}
	}
	return out
}

func TestNoPoisonAmongSeeds(t *testing.T) {
	ortlib.Init(t)
	cases := []struct {
		name   string
		spec   synth.Spec
		params string
	}{
		{"T2 10% poison, gain", synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 10, Poison: 222, Seed: 1}, `{}`},
		{"T2 10% poison, go engine", synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 10, Poison: 222, Seed: 2}, `{"engine": "go"}`},
		{"T3 10% poison, gain", synth.Spec{Kind: synth.T3, PerClass: 200, Classes: 10, Poison: 222, Seed: 3}, `{}`},
		{"T2 10% poison, min", synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 10, Poison: 222, Seed: 4}, `{"rule": "min"}`},
		{"T2 at 5% of each class seeded", synth.Spec{Kind: synth.T2, PerClass: 300, Classes: 5, Poison: 160, Seed: 5}, `{"seed_fraction": 0.05}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := synth.Make(tc.spec)
			tb, m, err := run(t, set, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			s := seeds(t, tb)
			nSeeds, bad := 0, 0
			for i, v := range s {
				if v {
					nSeeds++
					if set.IsPoison[i] {
						bad++
					}
				}
			}
			if bad > 0 {
				t.Fatalf("%d poisoned samples among %d seeds (metrics %v)", bad, nSeeds, m)
			}
			if nSeeds < 10*tc.spec.Classes {
				t.Fatalf("%d seeds, want at least 10 per class", nSeeds)
			}
		})
	}
}

// Same data, same seeds.
func TestSeedsAreDeterministic(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 100, Classes: 4, Poison: 40, Seed: 9})
	a, _, err := run(t, set, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := run(t, set, `{}`)
	sa, sb := seeds(t, a), seeds(t, b)
	for i := range sa {
		if sa[i] != sb[i] {
			t.Fatal("two runs chose different seeds")
		}
	}
}

func TestSiftBadInput(t *testing.T) {
	ortlib.Init(t)
	one := synth.Make(synth.Spec{PerClass: 30, Classes: 1, Seed: 1})
	small := synth.Make(synth.Spec{PerClass: 12, Classes: 3, Seed: 2})
	cases := []struct {
		name   string
		set    *synth.Set
		params string
		want   string
	}{
		{"one class only", one, `{}`, "at least two classes"},
		{"labels outside the declared classes", small, `{"classes": 2}`, "label 2 outside the declared classes 0..1"},
		{"unknown rule", small, `{"rule": "median"}`, `"rule"`},
		{"k too large", small, `{"k": 100}`, "only 36 rows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.set, tc.params)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A class smaller than twice the quota: the documented fallback (half
	// the class), reported as a warning.
	_, m, err := run(t, small, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := m["warnings"].([]any); len(w) == 0 || !strings.Contains(w[0].(string), "took 6 seeds") {
		t.Fatalf("warnings %v, want the fallback reported", m["warnings"])
	}
}

// BenchmarkSift50k: sift on 50,000 rows with the shared encoder's probe
// widths (32+64+128+256 channels) and a 256-d embedding, the default
// (ONNX Runtime) kNN engine, through the stage in process. Issue target:
// at most 60 s on a 2-core machine (go test -bench Sift50k -benchtime 1x).
func BenchmarkSift50k(b *testing.B) {
	ortlib.Init(b)
	const n, classes = 50000, 10
	rng := rand.New(rand.NewPCG(1, 2))
	t := &feat.Table{Embedding: feat.Matrix{Name: "embedding", D: 256}}
	for i := 0; i < n; i++ {
		t.IDs = append(t.IDs, uint64(i))
		t.Labels = append(t.Labels, int32(i%classes))
	}
	fill := func(d int) []float32 {
		protos := make([]float32, classes*d)
		for i := range protos {
			protos[i] = float32(rng.NormFloat64())
		}
		x := make([]float32, n*d)
		for i := 0; i < n; i++ {
			for j := 0; j < d; j++ {
				x[i*d+j] = protos[(i%classes)*d+j] + 2*float32(rng.NormFloat64())
			}
		}
		return x
	}
	for k, d := range []int{32, 64, 128, 256} {
		t.Layers = append(t.Layers, feat.Matrix{Name: fmt.Sprintf("stage%d", k+1), D: d, X: fill(d)})
	}
	t.Embedding.X = fill(256)
	rec := arrowio.NewFeaturesRecord(arrowio.FeaturesSchema(256, []arrowio.Layer{{Name: "stage1", Channels: 32}, {Name: "stage2", Channels: 64}, {Name: "stage3", Channels: 128}, {Name: "stage4", Channels: 256}}),
		t.IDs, t.Labels, [][]float32{t.Embedding.X, t.Layers[0].X, t.Layers[1].X, t.Layers[2].X, t.Layers[3].X})
	defer rec.Release()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := plugin.NewTables()
		in.Put("features", rec.Schema(), rec)
		out := plugin.NewTables()
		start := time.Now()
		if _, err := plugin.Local(sift.New()).Run(context.Background(), json.RawMessage(`{}`), in, out, nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/run")
		in.Release()
		out.Release()
	}
}

// Rows that agree with their label already at the shallowest layers, in a
// class where that is anomalous, are suspects: clean-label poison (which
// label disagreement cannot find) and dirty-label poison that its trigger
// gathers, at the first layer or (an encoder trojan) at the second. Clean
// sets have no suspect class.
func TestShallowClusterSuspects(t *testing.T) {
	ortlib.Init(t)
	cases := []struct {
		name     string
		spec     synth.Spec
		suspects bool
	}{
		{"clean", synth.Spec{Kind: synth.Clean, PerClass: 200, Classes: 10, Seed: 11}, false},
		{"clean, 5 classes", synth.Spec{Kind: synth.Clean, PerClass: 300, Classes: 5, Seed: 12}, false},
		{"clean-label poison, 60% of the target class", synth.Spec{Kind: synth.CleanLabel, PerClass: 200, Classes: 10, Poison: 300, Target: 3, Seed: 13}, true},
		{"dirty-label poison", synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 10, Poison: 222, Target: 1, Seed: 14}, true},
		// A trojaned encoder whose trigger the data carries (T3) gathers
		// the poison only from the second layer on.
		{"encoder-trojan poison, gathered from the second layer", synth.Spec{Kind: synth.T3, PerClass: 200, Classes: 10, Poison: 222, Target: 1, Seed: 15}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := synth.Make(tc.spec)
			tb, m, err := run(t, set, `{}`)
			if err != nil {
				t.Fatal(err)
			}
			var sus []bool
			for _, r := range tb.Records {
				c := r.Column(r.Schema().FieldIndices("sift.suspect")[0]).(*array.Boolean)
				for i := 0; i < c.Len(); i++ {
					sus = append(sus, c.Value(i))
				}
			}
			caught, wrong, poison := 0, 0, 0
			for i, s := range sus {
				if set.IsPoison[i] {
					poison++
				}
				switch {
				case s && set.IsPoison[i]:
					caught++
				case s:
					wrong++
				}
			}
			if !tc.suspects {
				if caught+wrong > 0 {
					t.Fatalf("%d suspects on a clean set (metrics %v)", caught+wrong, m["shallow_suspect_classes"])
				}
				return
			}
			if caught < poison*9/10 || wrong > poison/10 {
				t.Fatalf("suspects: %d of %d poisoned rows, %d clean rows (metrics %v)", caught, poison, wrong, m["shallow_suspect_classes"])
			}
			for i, s := range seeds(t, tb) {
				if s && sus[i] {
					t.Fatalf("row %d is both a seed and a suspect", i)
				}
			}
		})
	}
}

// DrawSeeds with more suspects draws the same number of seeds per class
// and none among them while other rows are left; with sift's own
// suspects it draws the seeds Sift drew, and nil suspects are none.
func TestDrawSeeds(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 100, Classes: 4, Poison: 40, Seed: 9})
	var p sift.Params
	if err := plugin.DecodeParams(sift.New().Spec(), nil, &p); err != nil {
		t.Fatal(err)
	}
	res, err := sift.Sift(context.Background(), set.Table, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := append([]bool(nil), res.Seed...)
	sift.DrawSeeds(set.Table, res, make([]bool, set.Table.N()), p)
	noSuspects := append([]bool(nil), res.Seed...)
	perClass := func(seed []bool) map[int32]int {
		m := map[int32]int{}
		for i, s := range seed {
			if s {
				m[set.Table.Labels[i]]++
			}
		}
		return m
	}
	firstAll := append([]bool(nil), res.Suspect...)
	for i, f := range first {
		firstAll[i] = firstAll[i] || f
	}
	cases := []struct {
		name    string
		suspect []bool
		want    []bool // the seeds; nil: any that avoid every suspect
	}{
		{"sift's own suspects", res.Suspect, first},
		{"no suspects (nil)", nil, noSuspects},
		{"every first seed a suspect", firstAll, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sift.DrawSeeds(set.Table, res, tc.suspect, p)
			if fmt.Sprint(perClass(res.Seed)) != fmt.Sprint(perClass(first)) {
				t.Fatalf("seeds per class %v, want %v", perClass(res.Seed), perClass(first))
			}
			if tc.want != nil && !slices.Equal(res.Seed, tc.want) {
				t.Fatalf("seeds differ from the ones drawn with the same suspects before")
			}
			for i, s := range res.Seed {
				if s && tc.suspect != nil && tc.suspect[i] {
					t.Fatalf("row %d is a suspect and a seed, with 100 rows per class to draw from", i)
				}
			}
		})
	}
}
