package report_test

import (
	"fmt"
	"testing"

	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/filter"
)

func TestSteps(t *testing.T) {
	typed := []filter.Step{{Step: "scan", Seconds: 73}, {Step: "select", Seconds: 53}, {Step: "gate", Seconds: 1}, {Step: "write features", Seconds: 27}}
	decoded := []any{map[string]any{"step": "scan", "seconds": 73.0}, map[string]any{"step": "select", "seconds": 53.0},
		map[string]any{"step": "gate", "seconds": 1.0}, map[string]any{"step": "write features", "seconds": 27.0}}
	for _, tc := range []struct {
		name    string
		metrics plugin.Metrics
		want    string // the two slowest
	}{
		{"in process (typed)", plugin.Metrics{"steps": typed}, "[{scan 73} {select 53}]"},
		{"through a plugin (decoded JSON)", plugin.Metrics{"steps": decoded}, "[{scan 73} {select 53}]"},
		{"no steps", plugin.Metrics{"rounds": 2}, "[]"},
		{"not steps", plugin.Metrics{"steps": "fast"}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &report.Summary{Nodes: map[string]report.Node{"filter": {Stage: "filter", Metrics: tc.metrics}}}
			if got := fmt.Sprint(report.Slowest(s.Steps("filter"), 2)); got != tc.want {
				t.Errorf("slowest two %s, want %s", got, tc.want)
			}
		})
	}
}

func ExampleSlowest() {
	steps := []filter.Step{{Step: "scan", Seconds: 73}, {Step: "region", Seconds: 0.5}, {Step: "select", Seconds: 53}}
	for _, s := range report.Slowest(steps, 2) {
		fmt.Printf("%s %.0fs\n", s.Step, s.Seconds)
	}
	// Output:
	// scan 73s
	// select 53s
}

// TestUncachedSeconds: a run that reused nodes reports their recorded
// times on top of its own wall time; one that reused nothing, its wall time.
func TestUncachedSeconds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reused []string
		want   float64
	}{
		{"nothing reused", nil, 30},
		{"embed and filter reused", []string{"embed", "filter"}, 30 + 8 + 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &report.Summary{Seconds: 30, Reused: tc.reused, TimingsS: map[string]float64{"embed": 8, "filter": 150, "bootstrap": 20}}
			if got := s.UncachedSeconds(); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
