package abl_test

import (
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/stages/abl"
)

// ABL isolates exactly the share asked for, the lowest-loss rows.
func TestABLIsolatesTheLowestLoss(t *testing.T) {
	ortlib.Init(t)
	set := synth.Make(synth.Spec{Kind: synth.T3, PerClass: 200, Classes: 4, Poison: 80, Seed: 5})
	trusted, _, err := synth.RunVerdict(t, abl.New(), `{"isolate": 0.1, "epochs": 3, "hidden": [64, 32]}`, set, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := set.Purity(trusted)
	if want := len(trusted) - len(trusted)/10; n != want {
		t.Errorf("%d rows trusted, want %d", n, want)
	}
	if _, _, err := synth.RunVerdict(t, abl.New(), `{"isolate": 1}`, set, nil); err == nil || !strings.Contains(err.Error(), "isolate") {
		t.Errorf("isolate 1: %v", err)
	}
}
