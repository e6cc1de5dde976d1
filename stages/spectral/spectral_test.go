package spectral_test

import (
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/stages/spectral"
)

// On T2-like data (poison sits with its source class, labelled with the
// target; 30 rows, 13% of the target class), the poison is the direction
// of largest spread in the target class: spectral removes at least 80%
// of it, and 15% of each class.
func TestSpectralRemovesPoison(t *testing.T) {
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 200, Classes: 5, Poison: 30, Seed: 4})
	trusted, _, err := synth.RunVerdict(t, spectral.New(), `{}`, set, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, poisoned := set.Purity(trusted)
	if poisoned > 6 {
		t.Errorf("%d of 30 poisoned rows trusted, want at most 6", poisoned)
	}
	// about 15% of each class removed
	if n < 1030*80/100 || n > 1030*88/100 {
		t.Errorf("%d of 1030 rows trusted, want about 85%%", n)
	}
}

func TestSpectralBadParams(t *testing.T) {
	set := synth.Make(synth.Spec{Kind: synth.T2, PerClass: 20, Classes: 2, Poison: 2, Seed: 1})
	for _, p := range []string{`{"eps": 0}`, `{"eps": 0.8}`, `{"epsilon": 0.1}`} {
		if _, _, err := synth.RunVerdict(t, spectral.New(), p, set, nil); err == nil || !strings.Contains(err.Error(), "eps") {
			t.Errorf("%s: %v", p, err)
		}
	}
}
