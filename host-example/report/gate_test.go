package report

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/plugin"
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
			says(t, b.String(), tc.want, tc.not)
		})
	}
}

// TestScanSaysWhereTheCallMoved: the scan paragraph names the place the
// call moved from and to, and says nothing of a move that did not happen.
func TestScanSaysWhereTheCallMoved(t *testing.T) {
	call := filter.Pattern{Kind: "solid", Size: 3, Row: 27, Col: 27}
	for _, tc := range []struct {
		name      string
		scan      filter.Scan
		want, not []string
	}{
		{"moved", filter.Scan{Backdoored: true, BestZ: 20.8, GapMin: 6, Pattern: call, FromPlace: true, PlaceFrom: "solid 3x3 at (19,25)", Placed: 899},
			[]string{"looks backdoored", "20.8", "solid 3x3 at (19,25)", "solid 3x3 at (27,27)", "899 places"}, nil},
		{"not moved", filter.Scan{Backdoored: true, BestZ: 21.9, GapMin: 6, Pattern: call, Placed: 899},
			[]string{"looks backdoored", "21.9"}, []string{"stands out most"}},
		{"no call", filter.Scan{BestZ: 3.1, GapMin: 6}, []string{"does not look backdoored"}, []string{"stands out most"}},
		{"undone by the data", filter.Scan{BestZ: 19.8, GapMin: 6, UndoneByData: true, PlantedZ: 11.8},
			[]string{"answers to a patch pasted into the training data", "11.8", "nothing was masked"}, []string{"looks backdoored", "does not look backdoored"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			scanVerdict(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, &tc.scan)
			says(t, b.String(), tc.want, tc.not)
		})
	}
}

// says checks that the report text says every phrase of want and none of
// not.
func says(t *testing.T, text string, want, not []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("the report does not say %q:\n%s", w, text)
		}
	}
	for _, w := range not {
		if strings.Contains(text, w) {
			t.Errorf("the report says %q:\n%s", w, text)
		}
	}
}

// TestFilterSuspectsListThePastedPatch: the filter's suspects are listed
// after a mask (the moved rows) and also when nothing was masked but the
// planted check found a pasted patch (planted_mask "skip"): its carriers
// are named with the patch and its label; a class split lists its flagged
// classes and the nearest call it left alone; a filter that found none of
// these lists nothing.
func TestFilterSuspectsListThePastedPatch(t *testing.T) {
	pasted := &filter.Planted{Carriers: 202, Found: []filter.PlantedPatch{{Pattern: filter.Pattern{Kind: "pasted", Size: 5, Row: 27, Col: 27}, Label: 0, Rows: 202}}}
	for _, tc := range []struct {
		name      string
		res       filter.Result
		want, not []string
	}{
		{"undone by the data", filter.Result{Planted: pasted},
			[]string{"The filter's suspects", "carrying a patch pasted pixel for pixel", "202 rows labelled 0", "<b>202</b>"}, []string{"moved far"}},
		{"masked, no pasted patch", filter.Result{Moved: &filter.Moved{Threshold: 1.5, Suspects: 40}},
			[]string{"The filter's suspects", "moved far by the mask (more than 1.50)", "<b>40</b>"}, []string{"pasted pixel"}},
		{"neither", filter.Result{Planted: &filter.Planted{Why: "no patch"}, ClassSplit: &filter.ClassSplit{Why: "no class's images split apart"}}, nil, []string{"The filter's suspects"}},
		{"a class split", filter.Result{ClassSplit: &filter.ClassSplit{Carriers: 344, MedianGap: 2.48,
			Flagged: []filter.SplitClass{{Class: 5, View: "sharpness", Rows: 660, Gap: 4.51, Bar: 3.87, Carriers: 344}, {Class: 7, View: "detail", Rows: 640, Z: 9.12, Bar: 6, Carriers: 201}},
			Nearest: &filter.GapClass{Class: 1, Rows: 5000, Gap: 2.8, Bar: 3.48}}},
			[]string{"The filter's suspects", "split into two groups", "<b>344</b>", "<td>5</td><td>sharpness</td><td>660</td><td>4.51</td><td>3.87</td><td>344</td>",
				"<td>7</td><td>detail</td><td>640</td><td>9.12</td><td>6.00</td><td>201</td>",
				"class 1 (5000 rows) split by a sharpness gap of 2.80 against its bar of 3.48", "median gap is 2.48"}, []string{"pasted pixel", "moved far"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(tc.res)
			var m plugin.Metrics
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			r := &Run{Summary: &Summary{Nodes: map[string]Node{"filter": {Stage: "filter", Metrics: m}}}}
			var sb strings.Builder
			r.filterSuspects(func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) })
			says(t, sb.String(), tc.want, tc.not)
		})
	}
}

// The exported classifier's gate as bootstrap decided it: its gated
// metric, and with per-class move thresholds a table of them; nothing for
// a run without a bootstrap node.
func TestExportedGateSaysWhatBootstrapDecided(t *testing.T) {
	for _, tc := range []struct {
		name      string
		metrics   string // the bootstrap node's metrics (JSON); "" for no node
		want, not []string
	}{
		{"gated, one threshold", `{"gated": "yes: inputs the mask moves far go through"}`,
			[]string{"The exported classifier (bootstrap): gated yes: inputs the mask moves far go through."}, []string{"gate_class_quantile"}},
		{"per-class thresholds", `{"gated": "yes: inputs the mask moves far", "gate_class_moved": [16.6, 25.71, 18]}`,
			[]string{"gated yes", "gate_class_quantile", "<th>0</th><th>1</th><th>2</th>", "<td>16.60</td><td>25.71</td><td>18.00</td>"}, nil},
		{"not gated", `{"gated": "no: the encoder carries no gate"}`, []string{"gated no: the encoder carries no gate"}, []string{"<table>"}},
		{"no bootstrap", "", nil, []string{"exported classifier"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := map[string]Node{"filter": {Stage: "filter", Metrics: plugin.Metrics{"gated": "a filter metric of that name does not count"}}}
			if tc.metrics != "" {
				var m plugin.Metrics
				if err := json.Unmarshal([]byte(tc.metrics), &m); err != nil {
					t.Fatal(err)
				}
				nodes["bootstrap"] = Node{Stage: "bootstrap", Metrics: m}
			}
			r := &Run{Summary: &Summary{Nodes: nodes}}
			var sb strings.Builder
			r.exportedGate(func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) })
			says(t, sb.String(), tc.want, tc.not)
		})
	}
}
