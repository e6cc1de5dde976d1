package expand_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/expand"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/sift"
)

// pipeline runs sift then expand in process on a synthetic set.
func pipeline(t *testing.T, set *synth.Set, params string) (*plugin.Tables, plugin.Metrics, error) {
	t.Helper()
	rec := set.Record()
	defer rec.Release()
	in := plugin.NewTables()
	t.Cleanup(in.Release)
	in.Put("features", rec.Schema(), rec)
	s := plugin.NewTables()
	t.Cleanup(s.Release)
	if _, err := plugin.Local(sift.New()).Run(context.Background(), nil, in, s, nil); err != nil {
		t.Fatal(err)
	}
	in.Put("seeds", s.Get("scores").Schema, s.Get("scores").Records...)
	out := plugin.NewTables()
	t.Cleanup(out.Release)
	m, err := plugin.Local(expand.New()).Run(context.Background(), json.RawMessage(params), in, out, nil)
	return out, m, err
}

func boolCol(tb *plugin.Table, name string) []bool {
	var out []bool
	for _, r := range tb.Records {
		c := r.Column(r.Schema().FieldIndices(name)[0]).(*array.Boolean)
		for i := 0; i < c.Len(); i++ {
			out = append(out, c.Value(i))
		}
	}
	return out
}

func TestTrustedSetIsClean(t *testing.T) {
	ortlib.Init(t)
	for _, tc := range []struct {
		name string
		spec synth.Spec
	}{
		// T2-like: dataset poison under a clean encoder. (Encoder poison
		// that lands on the target class's centre is the filter stage's
		// to remove; expand alone does not separate it.)
		{"T2-like, seed 1", synth.Spec{Kind: synth.T2, PerClass: 150, Classes: 6, Poison: 100, Seed: 1}},
		{"T2-like, seed 2", synth.Spec{Kind: synth.T2, PerClass: 150, Classes: 6, Poison: 100, Seed: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := synth.Make(tc.spec)
			out, m, err := pipeline(t, set, `{"epochs": 10, "hidden": [64, 32]}`)
			if err != nil {
				t.Fatal(err)
			}
			trusted := boolCol(out.Get("scores"), "expand.trusted")
			n, bad := 0, 0
			for i, v := range trusted {
				if v {
					n++
					if set.IsPoison[i] {
						bad++
					}
				}
			}
			if n < 150*6/5 {
				t.Fatalf("trusted set of %d, want it grown well past the seeds (metrics %v)", n, m)
			}
			if purity := 1 - float64(bad)/float64(n); purity < 0.99 {
				t.Fatalf("trusted %d with %d poisoned: purity %.3f < 0.99 (metrics %v)", n, bad, purity, m)
			}
		})
	}
}

func TestExpandIsDeterministic(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 60, Classes: 4, Poison: 30, Seed: 3})
	a, _, err := pipeline(t, set, `{"epochs": 3, "hidden": [32]}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := pipeline(t, set, `{"epochs": 3, "hidden": [32]}`)
	ta, tb := boolCol(a.Get("scores"), "expand.trusted"), boolCol(b.Get("scores"), "expand.trusted")
	for i := range ta {
		if ta[i] != tb[i] {
			t.Fatal("two runs with one seed trusted different samples")
		}
	}
}

func TestMismatchedSampleIDs(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 30, Classes: 3, Poison: 5, Seed: 4})
	rec := set.Record()
	defer rec.Release()
	in := plugin.NewTables()
	defer in.Release()
	in.Put("features", rec.Schema(), rec)
	ids := append([]uint64(nil), set.Table.IDs...)
	ids[7] = 99999
	seeds, _ := feat.ScoresRecord(ids, []feat.Column{{Name: "sift.seed", B: make([]bool, len(ids))}})
	defer seeds.Release()
	in.Put("seeds", seeds.Schema(), seeds)
	out := plugin.NewTables()
	defer out.Release()
	_, err := plugin.Local(expand.New()).Run(context.Background(), json.RawMessage(`{"suspect_column": ""}`), in, out, nil)
	if err == nil || !strings.Contains(err.Error(), "sample_id 99999 is not in the features") || !strings.Contains(err.Error(), `port "seeds"`) {
		t.Fatalf("got %v", err)
	}
}

// sift's shallow-cluster suspects (here clean-label poison) are never
// trusted and are passed on as expand.suspect.
func TestSuspectsAreNeverTrusted(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.CleanLabel, PerClass: 150, Classes: 6, Poison: 100, Target: 2, Seed: 5})
	out, m, err := pipeline(t, set, `{"epochs": 10, "hidden": [64, 32]}`)
	if err != nil {
		t.Fatal(err)
	}
	trusted := boolCol(out.Get("scores"), "expand.trusted")
	suspect := boolCol(out.Get("scores"), "expand.suspect")
	nsus, bad := 0, 0
	for i := range trusted {
		if suspect[i] {
			nsus++
			if trusted[i] {
				t.Fatalf("row %d is trusted and a suspect", i)
			}
		}
		if trusted[i] && set.IsPoison[i] {
			bad++
		}
	}
	if nsus < 90 || bad > 2 {
		t.Fatalf("%d suspects passed on (want most of the 100 poisoned rows), %d poisoned rows trusted (metrics %v)", nsus, bad, m)
	}
}
