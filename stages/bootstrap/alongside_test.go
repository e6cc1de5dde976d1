package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
)

// A fit beside the final head (the gated classifier's second head, which
// the stage trains there) changes nothing of bootstrap's result, with and
// without a relabelled second final head; it is handed the rows bootstrap
// kept, and its error is bootstrap's.
func TestAlongsideChangesNothing(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 80, Classes: 4, Poison: 40, Target: 1, Seed: 3})
	tab := set.Table
	start := make([]bool, tab.N())
	for i := range start {
		start[i] = i%3 == 0 && !set.IsPoison[i]
	}
	for _, relabel := range []float32{0, 0.9} {
		raw, _ := json.Marshal(map[string]any{"epochs": 5, "final_epochs": 10, "rounds": 2, "relabel": relabel})
		var p Params
		if err := plugin.DecodeParams(New().Spec(), raw, &p); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		alone, err := Bootstrap(ctx, tab, start, set.IsPoison, nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		var handed []bool
		beside, err := bootstrap(ctx, tab, start, set.IsPoison, nil, p, nil, func(kept []bool) error {
			handed = kept
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(alone.Head, beside.Head) || !reflect.DeepEqual(alone.Kept, beside.Kept) ||
			!reflect.DeepEqual(alone.Label, beside.Label) || !reflect.DeepEqual(alone.Loss, beside.Loss) {
			t.Fatalf("relabel %v: bootstrap with a fit beside its final head differs from bootstrap alone", relabel)
		}
		if !reflect.DeepEqual(handed, alone.Kept) {
			t.Fatalf("relabel %v: the fit beside was not handed the kept rows", relabel)
		}
		if relabel > 0 && alone.Metrics["relabelled"].(int) == 0 {
			t.Fatalf("relabel %v: no row relabelled, so the second final head did not run", relabel)
		}
		boom := errors.New("boom")
		short := p
		short.Rounds = 1
		if _, err := bootstrap(ctx, tab, start, set.IsPoison, nil, short, nil, func([]bool) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("relabel %v: the fit beside failed, bootstrap returned %v", relabel, err)
		}
	}
}

// starved_bar "pooled" lifts only the bars of the capped classes that have
// kept rows, and only up to the pooled quantile: a class whose own bar is
// higher keeps it, and a class with no kept row still admits nothing;
// "few" lifts them only while the class keeps fewer than fewRows rows.
func TestRaisePooled(t *testing.T) {
	losses := [][]float32{
		{0.001, 0.002},          // capped, near-identical rows: raised
		{0.5, 1, 2, 3, 4, 5, 6}, // not capped: unchanged
		{},                      // capped, nothing kept: stays -1
		{8, 9},                  // capped, own bar above the pooled one
	}
	for _, tc := range []struct {
		name   string
		capped []bool
		q      float64
		below  int
		want   []float32
	}{
		{"median", []bool{true, false, true, true}, 0.5, math.MaxInt, []float32{3, 6, -1, 9}},
		{"top", []bool{true, false, true, true}, 0.99, math.MaxInt, []float32{9, 6, -1, 9}},
		{"nothing capped", []bool{false, false, false, false}, 0.5, math.MaxInt, []float32{0.002, 6, -1, 9}},
		{"few: two rows are not fewer than two", []bool{true, false, true, true}, 0.5, 2, []float32{0.002, 6, -1, 9}},
		{"few: two rows are fewer than three", []bool{true, false, true, true}, 0.5, 3, []float32{3, 6, -1, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			thr := []float32{0.002, 6, -1, 9}
			raisePooled(thr, losses, tc.capped, tc.q, tc.below)
			if !slices.Equal(thr, tc.want) {
				t.Errorf("bars %v, want %v", thr, tc.want)
			}
		})
	}
}

func TestFewRows(t *testing.T) {
	for _, tc := range []struct {
		q    float64
		want int
	}{{0.99, 100}, {0.9, 10}, {0.5, 2}, {0.995, 200}} {
		if got := fewRows(tc.q); got != tc.want {
			t.Errorf("fewRows(%v) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if fewRows(1) != math.MaxInt {
		t.Errorf("fewRows(1) = %d, want no count to be enough", fewRows(1))
	}
}
