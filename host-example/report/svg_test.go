package report

import (
	"strings"
	"testing"
)

// The channel strip keeps its scale for the bulk of the channels: a
// channel far out sits on the top edge, marked, instead of flattening the
// rest; long layer names are cut and keep the full name in a tooltip.
func TestStripOutlierAndLabels(t *testing.T) {
	cases := []struct {
		name      string
		scores    []float64
		offScale  int
		onScale   int
		layerName string
		cut       bool
	}{
		{"no outlier", []float64{0.5, 1, 2, 2.5}, 0, 4, "stage1", false},
		{"one far out", append(make([]float64, 300), 1000), 1, 300, "/backbone/layer4/layer4.1/Add_output_0", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			masked := make([]bool, len(tc.scores))
			svg := Strip("x", "t", []string{tc.layerName}, [][]float64{tc.scores}, [][]bool{masked}, 3)
			if got := strings.Count(svg, "(off the scale)"); got != tc.offScale {
				t.Errorf("%d channels marked off the scale, want %d", got, tc.offScale)
			}
			if got := strings.Count(svg, `<circle class="ch"`); got != tc.onScale {
				t.Errorf("%d channels on the scale, want %d", got, tc.onScale)
			}
			if cut := strings.Contains(svg, "…"); cut != tc.cut || !strings.Contains(svg, "<title>"+tc.layerName+"</title>") {
				t.Errorf("label cut %v (want %v), full name in a tooltip: %v", cut, tc.cut, strings.Contains(svg, tc.layerName))
			}
		})
	}
}
