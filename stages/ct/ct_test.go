package ct_test

import (
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/stages/ct"
)

// A shortcut the encoder put in (T3-like) survives the confusion batches:
// confusion training flags the poison; a clean seed set is needed.
func TestCTFlagsShortcut(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T3, PerClass: 200, Classes: 4, Poison: 80, Seed: 3})
	seeds := make([]bool, len(set.IsPoison))
	per := map[int32]int{}
	for i, p := range set.IsPoison {
		if !p && per[set.Table.Labels[i]] < 20 {
			seeds[i] = true
			per[set.Table.Labels[i]]++
		}
	}
	trusted, m, err := synth.RunVerdict(t, ct.New(), `{"epochs": 10, "hidden": [64, 32]}`, set, seeds)
	if err != nil {
		t.Fatal(err)
	}
	n, p := set.Purity(trusted)
	if p > 8 {
		t.Errorf("%d of 80 poisoned rows trusted among %d (metrics %v)", p, n, m)
	}
	if _, _, err := synth.RunVerdict(t, ct.New(), `{}`, set, make([]bool, len(seeds))); err == nil || !strings.Contains(err.Error(), "no seeds") {
		t.Errorf("no seeds: %v", err)
	}
}
