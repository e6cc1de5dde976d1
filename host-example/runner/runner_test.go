package runner

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/plugin"
)

// Stage warnings reach the log, whether the metrics came from a stage in
// this process ([]string) or through a plugin's JSON ([]any).
func TestStageWarningsAreLogged(t *testing.T) {
	cases := []struct {
		name    string
		metrics plugin.Metrics
		want    []string
	}{
		{"in process", plugin.Metrics{"warnings": []string{"class 3: 4 rows"}}, []string{`"node":"sift"`, "class 3: 4 rows"}},
		{"from a plugin", plugin.Metrics{"warnings": []any{"class 5 has no seeds"}}, []string{"class 5 has no seeds"}},
		{"none", plugin.Metrics{"rows": 12}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			ctx := zerolog.New(&buf).WithContext(context.Background())
			res := &dag.Result{Order: []string{"train", "sift"}, Nodes: map[string]*dag.NodeResult{
				"train": {ID: "train"}, "sift": {ID: "sift", Stage: "sift", Metrics: tc.metrics}}}
			logWarnings(ctx, report.NewSummary("p", res))
			got := buf.String()
			if tc.want == nil && got != "" {
				t.Fatalf("logged %q with no warnings", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) || !strings.Contains(got, `"level":"warn"`) {
					t.Errorf("log %q lacks %q at level warn", got, w)
				}
			}
		})
	}
}
