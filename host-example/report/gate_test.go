package report

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/stages/filter"
)

// The filter's gate as the report tells it: off with its reason, on, and
// on its class part alone (gate_fallback), which says that bootstrap may
// drop it.
func TestFilterGateSaysWhatStands(t *testing.T) {
	for _, tc := range []struct {
		name      string
		g         filter.GateReport
		want, not []string
	}{
		{"off", filter.GateReport{Why: "no move threshold"}, []string{"not gated", "no move threshold"}, []string{"class part alone"}},
		{"on", filter.GateReport{On: true, Moved: 1.5, ProbeRows: 32}, []string{"<b>gated</b>", "1.50"}, []string{"class part alone", "not gated"}},
		{"on its class part alone", filter.GateReport{On: true, Moved: 1.5, ProbeRows: 32, Fallback: "best 22.6%"},
			[]string{"<b>gated</b>", "class part alone", "best 22.6%", "drops the gate"}, []string{"not gated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			filterGate(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, &tc.g)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("the report does not say %q:\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("the report says %q:\n%s", w, b.String())
				}
			}
		})
	}
}
