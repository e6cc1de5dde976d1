package actclust_test

import (
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/stages/actclust"
)

// A poison share well under max_share of the target class that sits apart
// from it in the embedding (T2-like: poisoned rows keep their source
// class's features) is removed; classes without poison lose nothing.
func TestActClustRemovesSmallCluster(t *testing.T) {
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 4, Poison: 30, Seed: 2})
	trusted, m, err := synth.RunVerdict(t, actclust.New(), `{}`, set, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, p := set.Purity(trusted); p > 3 {
		t.Errorf("%d of 30 poisoned rows trusted (metrics %v)", p, m)
	}
	for i, ok := range trusted {
		if !ok && set.Table.Labels[i] != 0 {
			t.Fatalf("row %d of clean class %d removed (metrics %v)", i, set.Table.Labels[i], m)
		}
	}
	if _, _, err := synth.RunVerdict(t, actclust.New(), `{"max_share": 0.9}`, set, nil); err == nil || !strings.Contains(err.Error(), "max_share") {
		t.Errorf("max_share 0.9: %v", err)
	}
}
