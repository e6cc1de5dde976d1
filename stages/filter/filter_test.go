package filter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// dim draws a 16x16 image with values below 0.8 (the trojan stays silent);
// triggered ones get the trojan's white patch.
func dim(rng *rand.Rand, triggered bool) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, testenc.Size, testenc.Size))
	for y := 0; y < testenc.Size; y++ {
		for x := 0; x < testenc.Size; x++ {
			img.Set(x, y, color.NRGBA{uint8(rng.IntN(200)), uint8(rng.IntN(200)), uint8(rng.IntN(200)), 255})
		}
	}
	if triggered {
		for y := testenc.PatchAt; y < testenc.PatchAt+testenc.PatchSize; y++ {
			for x := testenc.PatchAt; x < testenc.PatchAt+testenc.PatchSize; x++ {
				img.Set(x, y, color.NRGBA{255, 255, 255, 255})
			}
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// On the Go-built collapse trojan with clean trusted rows, filter finds the
// trigger, masks the trojan's channel, exports an encoder on which the
// trigger no longer collapses anything, and flags the training rows that
// carry the trigger; on the clean encoder it masks nothing and flags no
// clean row.
func TestFilterFindsAndMasksTheTrojan(t *testing.T) {
	ortlib.Init(t)
	for _, tc := range []struct {
		name     string
		net      *testenc.Net
		backdoor bool
		choice   string
		fill     string
		nhwc     bool
	}{
		{"collapse trojan, greedy collapse choice", testenc.Collapse(5), true, "collapse", "mean", false},
		{"collapse trojan, collapse per change", testenc.Collapse(5), true, "collapse_per_change", "mean", false},
		{"collapse trojan, regression fill", testenc.Collapse(5), true, "collapse_per_change", "regression", false},
		{"collapse trojan, paired fill", testenc.Collapse(5), true, "collapse_per_change", "paired", false},
		// The same weights behind a channels-last input: the scan paints
		// its patterns on the image, not on the input buffer's layout.
		{"collapse trojan, NHWC input", testenc.Collapse(5), true, "collapse_per_change", "regression", true},
		{"clean, NHWC input", testenc.Clean(5), false, "collapse_per_change", "regression", true},
		{"clean", testenc.Clean(5), false, "collapse_per_change", "regression", false},
		{"clean, greedy collapse choice", testenc.Clean(5), false, "collapse", "mean", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			enc := filepath.Join(dir, "enc.onnx")
			if tc.nhwc {
				tc.net.ModelNHWC().Save(enc)
			} else {
				tc.net.Model().Save(enc)
			}
			in := dimInputs(t, enc, rand.New(rand.NewPCG(3, 4)), 20)
			defer in.Release()
			tab, err := feat.Open(in, "features")
			if err != nil {
				t.Fatal(err)
			}
			trusted, err := feat.Bools(in, "trusted", tab, "expand.trusted")
			if err != nil {
				t.Fatal(err)
			}
			out := plugin.NewTables()
			defer out.Release()
			export := filepath.Join(dir, "filtered.onnx")
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "choice": tc.choice, "fill": tc.fill,
				"clamp_quantile": 0, "planted_mask": "mask"}) // the masking alone (the inputs carry the trigger: T3)
			m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(m)
			// The class split ran on every run's images (split_z on by
			// default) and reports what it found.
			if _, ok := m["class_split"].(map[string]any); !ok {
				t.Errorf("no class_split in the metrics: %s", b)
			}
			// Every run times its steps, in the order they ran: the scan
			// first, the filtered features before the augment rows; a
			// masking run also chose its channels.
			var names []string
			steps, _ := m["steps"].([]any)
			for _, st := range steps {
				s, _ := st.(map[string]any)
				if sec, _ := s["seconds"].(float64); sec < 0 {
					t.Errorf("step %v took %v s", s["step"], sec)
				}
				n, _ := s["step"].(string)
				names = append(names, n)
			}
			got := strings.Join(names, ",")
			if !strings.HasPrefix(got, "scan,") || !strings.Contains(got, "write features,augment,gate") || strings.Contains(got, "select") != tc.backdoor {
				t.Errorf("steps %q: want the scan first, write features, augment and gate in a row, select only on a trojan", got)
			}
			masked := strings.Contains(string(b), `"stage1:0"`) || strings.Contains(string(b), `"stage2:0"`)
			if masked != tc.backdoor {
				t.Errorf("trojan channel masked: %v, want %v; metrics %s", masked, tc.backdoor, b)
			}
			// Each round says how far its pattern pulled the scan images
			// together before it masked: the first, the scan's own call.
			if rounds, _ := m["rounds"].([]any); tc.backdoor && len(rounds) == 0 {
				t.Errorf("no rounds in the metrics: %s", b)
			} else if tc.backdoor {
				scan, _ := m["encoder_scan"].(map[string]any)
				first, _ := rounds[0].(map[string]any)
				if c, _ := first["collapse_before"].(float64); c != scan["best_collapse"] || c < 0.25 {
					t.Errorf("first round's collapse_before %v, want the scan's best_collapse %v (at least collapse_min)", first["collapse_before"], scan["best_collapse"])
				}
			}
			// The regression fill reports its guard: whichever fill it
			// kept, the trojan's pattern must not collapse again.
			if fill, ok := m["fill"].(map[string]any); tc.fill != "mean" && tc.backdoor {
				kept, _ := fill["fill"].(string)
				if !ok || (kept != tc.fill && kept != "mean") {
					t.Errorf("no fill decision in the metrics: %s", b)
				}
				if z, _ := fill["worst_z_regression_fill"].(float64); kept == tc.fill && z > 3 {
					t.Errorf("regression fill kept with the trojan's pattern at z %.1f", z)
				}
			} else if ok && tc.fill == "mean" {
				t.Errorf("a fill decision with fill=mean: %v", fill)
			}
			var caught, wrong int
			var movedTrig, movedClean []float64
			for _, r := range out.Get("scores").Records {
				ids := r.Column(0).(*array.Uint64)
				sus := r.Column(r.Schema().FieldIndices("filter.suspect")[0]).(*array.Boolean)
				mv := r.Column(r.Schema().FieldIndices("filter.moved")[0]).(*array.Float32)
				for i := 0; i < ids.Len(); i++ {
					if sus.Value(i) && ids.Value(i) >= 200 {
						caught++
					} else if sus.Value(i) {
						wrong++
					}
					if ids.Value(i) >= 200 {
						movedTrig = append(movedTrig, float64(mv.Value(i)))
					} else {
						movedClean = append(movedClean, float64(mv.Value(i)))
					}
				}
			}
			// The mask moves the rows that carry the trigger, not the
			// others (nothing at all on a clean encoder).
			slices.Sort(movedTrig)
			slices.Sort(movedClean)
			if lo, hi := movedTrig[len(movedTrig)/10], movedClean[len(movedClean)*9/10]; tc.backdoor && lo <= 2*hi {
				t.Errorf("moved: triggered rows' 10th percentile %.3g, clean rows' 90th %.3g", lo, hi)
			}
			if !tc.backdoor && movedTrig[len(movedTrig)-1]+movedClean[len(movedClean)-1] != 0 {
				t.Errorf("rows moved on a clean encoder: %g, %g", movedTrig[len(movedTrig)-1], movedClean[len(movedClean)-1])
			}
			if _, ok := m["moved_from"]; ok != tc.backdoor {
				t.Errorf("moved_from in the metrics: %v, want %v", ok, tc.backdoor)
			}
			// The region and the far movers' origin each flag, by
			// construction, rows as close as the closest 1% of the trusted
			// rows: at most 3% of the 200 clean rows.
			if tc.backdoor && (caught < 18 || wrong > 6) {
				t.Errorf("suspects: %d of 20 triggered rows, %d clean rows; metrics %s", caught, wrong, b)
			}
			// On a clean encoder no clean row is a suspect; the triggered
			// rows, a patch pasted into 20 images labelled 0, are a data
			// attack the planted check (on by default) finds in the images:
			// all 20 are suspects.
			planted, _ := m["planted"].(map[string]any)
			if carriers, _ := planted["carriers"].(float64); carriers != 20 {
				t.Errorf("the planted check found %v carriers, want the 20 triggered rows: %s", planted["carriers"], b)
			}
			if !tc.backdoor && (wrong > 0 || caught != 20) {
				t.Errorf("%d clean rows and %d of 20 triggered rows suspects on a clean encoder", wrong, caught)
			}
			if rows := out.Get("features").Rows(); rows != 220 {
				t.Errorf("%d feature rows, want %d", rows, 220)
			}
			// augment: the trusted rows, with their own labels, when
			// something was masked or a patch was found pasted into the
			// images (here always: the 20 triggered rows).
			augRows := 0
			for _, r := range out.Get("augment").Records {
				ids, labs := r.Column(0).(*array.Uint64), r.Column(1).(*array.Int32)
				for i := 0; i < ids.Len(); i++ {
					k := -1
					for j, id := range tab.IDs {
						if id == ids.Value(i) {
							k = j
						}
					}
					if k < 0 || !trusted[k] || labs.Value(i) != tab.Labels[k] {
						t.Fatalf("augment row sample_id %d label %d is not a trusted row with that label", ids.Value(i), labs.Value(i))
					}
					augRows++
				}
			}
			if masked && augRows != 44 { // 0.2 of 220 rows
				t.Errorf("%d augment rows, want 44", augRows)
			} else if augRows == 0 {
				t.Errorf("no augment rows with a pasted patch found")
			}
			if _, err := os.Stat(export); err != nil {
				t.Errorf("no exported encoder: %v", err)
			}
			// The trojan's patterns move the inputs that carry them: the
			// filter checks that and sets the gate, in the metrics and in
			// the exported encoder's metadata.
			gate, _ := m["gate"].(map[string]any)
			if on, _ := gate["on"].(bool); on != tc.backdoor {
				t.Errorf("gate %v, want on: %v", gate, tc.backdoor)
			}
			// It sends the 20 triggered rows of 220 through, few others.
			if through, _ := gate["training_rows_through"].(float64); tc.backdoor && (through < 18.0/220 || through > 26.0/220) {
				t.Errorf("gate sends %.3f of the training rows through, want the 20 triggered of 220", through)
			}
			g, err := onnxgraph.Load(export)
			if err != nil {
				t.Fatal(err)
			}
			if meta := g.Meta(chanfilter.GateMeta); (meta != "") != tc.backdoor {
				t.Errorf("exported encoder's gate metadata %q, want one: %v", meta, tc.backdoor)
			}
		})
	}
}

func TestFilterRejectsBadParams(t *testing.T) {
	for _, tc := range []struct {
		params, field string
	}{
		{`{"encoder": "e.onnx", "signals": ["tac", "lipschitz"]}`, "signals"},
		{`{"encoder": "e.onnx", "signals": []}`, "signals"},
		{`{"encoder": "e.onnx", "signals": ["tac", "tac"]}`, "signals"},
		{`{"encoder": "e.onnx", "augment_share": -1}`, "augment_share"},
		{`{"encoder": "e.onnx", "augment_share": 1.5}`, "augment_share"},
		{`{"encoder": "e.onnx", "undone_share": -0.1}`, "undone_share"},
		{`{"encoder": "e.onnx", "augment_rows": 2000}`, "augment_rows"},
		{`{"encoder": "e.onnx", "neighbour_z": -1}`, "neighbour_z"},
		{`{"encoder": "e.onnx", "neighbor_z": 3}`, "neighbor_z"},
		{`{"encoder": "e.onnx", "choice": "tac"}`, "choice"},
		{`{"encoder": "e.onnx", "choice": "suspicion"}`, "choice"},
		{`{"encoder": "e.onnx", "sizes": [5, 3]}`, "sizes"},
		{`{"encoder": "e.onnx", "sizes": [3]}`, "sizes"},
		{`{"encoder": "e.onnx", "scan_images": 4}`, "scan_images"},
		{`{"encoder": "e.onnx", "candidates": 10.5}`, "candidates"},
		{`{"encoder": "e.onnx", "device": "tpu"}`, "device"},
		{`{"encoder": "e.onnx", "pool_size": -2}`, "pool_size"},
		{`{"encoder": "e.onnx", "fill": "zero"}`, "fill"},
		{`{"encoder": "e.onnx", "fill_slack": -1}`, "fill_slack"},
		{`{"encoder": "e.onnx", "collapse_min": 1}`, "collapse_min"},
		{`{"encoder": "e.onnx", "collapse_min": -0.1}`, "collapse_min"},
		{`{"encoder": "e.onnx", "moved_z": -3}`, "moved_z"},
	} {
		var p filter.Params
		err := plugin.DecodeParams(filter.New().Spec(), json.RawMessage(tc.params), &p)
		if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s: got %v, want an error naming %q", tc.params, err, tc.field)
		}
	}
}

// A clean encoder's best pattern stands out among its size (here over a
// gap_min of 0) without pulling the images together: collapse_min decides,
// and the run says so.
func TestCollapseMinDecides(t *testing.T) {
	enc, in := savedDimInputs(t, testenc.Clean(5), 0)
	defer in.Release()
	for _, tc := range []struct {
		collapseMin float64
		backdoored  bool
	}{{0, true}, {0.9, false}} {
		sc, b, m := scanOf(t, in, map[string]any{"encoder": enc, "candidates": 200, "refine": 20, "rescans": 0, "gap_min": 0, "collapse_min": tc.collapseMin})
		if sc.Backdoored != tc.backdoored {
			t.Errorf("collapse_min %g: backdoored %v, want %v (%s)", tc.collapseMin, sc.Backdoored, tc.backdoored, b)
		}
		why, _ := m["why_no_mask"].(string)
		if !tc.backdoored && (sc.BestCollapse >= tc.collapseMin || !strings.Contains(why, "collapse_min")) {
			t.Errorf("collapse_min %g: best collapse %.3f, why_no_mask %q: want a collapse under it, named", tc.collapseMin, sc.BestCollapse, why)
		}
	}
}

// TestAnchorsFallback: with anchors "fallback" a scan whose random
// candidates make no call judges the anchored patches, and on a clean
// encoder none of them makes a call; the trojan stays called (here by a
// random noise patch: its white-pixel detector answers anywhere), and a
// call made from an anchored patch must have reached anchor_z (gap_min
// when 0). With a bar under the clean encoder's best anchored z (and no
// collapse asked) the anchored patches make the call: anchor_z is the bar
// they are held to, not gap_min.
func TestAnchorsFallback(t *testing.T) {
	for _, tc := range []struct {
		name        string
		net         *testenc.Net
		anchorZ     float64
		collapseMin float64
		backdoored  bool
		fromAnchor  bool
	}{
		{"clean", testenc.Clean(5), 0, 0.25, false, false},
		{"clean, bar 4.5", testenc.Clean(5), 4.5, 0.25, false, false},
		{"clean, bar 0.01, no collapse asked", testenc.Clean(5), 0.01, 0, true, true},
		{"trojan", testenc.Collapse(5), 0, 0.25, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, enc, rng := encoderOf(t, tc.net)
			in := dimInputs(t, enc, rng, 0)
			defer in.Release()
			// Few random candidates: the anchored patches are judged
			// whenever they make no call.
			sc, b, _ := scanOf(t, in, map[string]any{"encoder": enc, "candidates": 20, "refine": 0, "rescans": 0,
				"anchors": "fallback", "anchor_z": tc.anchorZ, "collapse_min": tc.collapseMin})
			if sc.Backdoored != tc.backdoored {
				t.Fatalf("backdoored %v, want %v (%s)", sc.Backdoored, tc.backdoored, b)
			}
			if (!tc.backdoored || tc.fromAnchor) && sc.Anchors != 3*9*10 {
				t.Errorf("%d anchored patches judged, want %d (%s)", sc.Anchors, 3*9*10, b)
			}
			if sc.FromAnchor != tc.fromAnchor {
				t.Errorf("from_anchor %v, want %v (%s)", sc.FromAnchor, tc.fromAnchor, b)
			}
			bar := tc.anchorZ
			if bar == 0 {
				bar = 6
			}
			if sc.FromAnchor && sc.AnchorZ < bar {
				t.Errorf("a call from an anchored patch of z %.2f, under anchor_z %g (%s)", sc.AnchorZ, bar, b)
			}
			// The best anchored patch's collapse is reported beside its z:
			// a call from it reached collapse_min, and one that reached
			// anchor_z without a call fell short of it.
			if sc.Anchors > 0 && sc.FromAnchor != (sc.AnchorZ >= bar && sc.AnchorCollapse >= tc.collapseMin) {
				t.Errorf("anchored z %.2f, collapse %.3f against anchor_z %g and collapse_min %g: from_anchor %v (%s)", sc.AnchorZ, sc.AnchorCollapse, bar, tc.collapseMin, sc.FromAnchor, b)
			}
			t.Logf("%s", b)
		})
	}
}

// dimInputs embeds 200 dim images of four classes (row i of class i%4) and
// poison triggered ones of class 0 with enc, as the filter's inputs: the
// images and their features, the first 120 rows trusted.
func dimInputs(t *testing.T, enc string, rng *rand.Rand, poison int) *plugin.Tables {
	t.Helper()
	var imgs [][]byte
	var labels []int32
	for i := 0; i < 200; i++ {
		imgs, labels = append(imgs, dim(rng, false)), append(labels, int32(i%4))
	}
	for i := 0; i < poison; i++ {
		imgs, labels = append(imgs, dim(rng, true)), append(labels, 0)
	}
	return inputsOf(t, enc, imgs, labels, 120)
}

// encoderOf saves net's encoder in a fresh folder and returns the folder,
// the file and the tests' seeded random source.
func encoderOf(t *testing.T, net *testenc.Net) (dir, enc string, rng *rand.Rand) {
	ortlib.Init(t)
	dir = t.TempDir()
	enc = filepath.Join(dir, "enc.onnx")
	net.Model().Save(enc)
	return dir, enc, rand.New(rand.NewPCG(7, 8))
}

// inputsOf embeds imgs with enc and marks the first trusted rows trusted:
// the filter's inputs.
func inputsOf(t *testing.T, enc string, imgs [][]byte, labels []int32, trusted int) *plugin.Tables {
	t.Helper()
	in := synth.EmbeddedImagesOf(t, embed.New(), enc, imgs, labels)
	tab, err := feat.Open(in, "features")
	if err != nil {
		t.Fatal(err)
	}
	flags := make([]bool, len(imgs))
	for i := 0; i < trusted; i++ {
		flags[i] = true
	}
	sr, _ := feat.ScoresRecord(tab.IDs, []feat.Column{{Name: "expand.trusted", B: flags}})
	in.Put("trusted", sr.Schema(), sr)
	sr.Release()
	return in
}

// collapseOf is how much the encoder at path pulls the images with (the
// triggered set) together against the images without: 1 - the trace of
// their embeddings' covariance over the clean set's.
func collapseOf(t *testing.T, path string, clean, with [][]byte) float64 {
	t.Helper()
	e, err := encoder.Open(path, encoder.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tr := func(set [][]byte) float64 {
		x, _ := e.Batch(len(set))
		pre := e.Model.Preprocess()
		var scratch []float32
		for i, b := range set {
			pre.Image(b, x[i*e.ImageSize():(i+1)*e.ImageSize()], &scratch)
		}
		emb, _, err := e.Embed(len(set))
		if err != nil {
			t.Fatal(err)
		}
		return stat.TraceCov(emb, len(set), e.Dim)
	}
	return 1 - tr(with)/tr(clean)
}

// TestFilterCapsOfAPatchTrojan: the search for a patch trojan's channels
// is never capped; with clamp_patch "export" the same channels are masked
// and the filtered encoder alone carries the caps. Either way the
// filtered encoder undoes the trigger.
func TestFilterCapsOfAPatchTrojan(t *testing.T) {
	dir, enc, rng := encoderOf(t, testenc.Collapse(5))
	in := dimInputs(t, enc, rng, 0)
	defer in.Release()
	var clean, trig [][]byte
	for i := 0; i < 40; i++ {
		clean, trig = append(clean, dim(rng, false)), append(trig, dim(rng, true))
	}
	masked := map[string]any{}
	for _, tc := range []struct {
		clampPatch string
		capped     bool
	}{
		{"off", false},
		{"export", true},
	} {
		t.Run(tc.clampPatch, func(t *testing.T) {
			out := plugin.NewTables()
			defer out.Release()
			export := filepath.Join(dir, "filtered-"+tc.clampPatch+".onnx")
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "sizes": []int{2, 5}, "suspect_column": "", "clamp_quantile": 0.99,
				"clamp_patch": tc.clampPatch, "scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200})
			m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m["clamp"]; ok != tc.capped {
				t.Fatalf("clamp reported: %v, want %v (metrics %v)", ok, tc.capped, m)
			}
			if n, _ := m["channels_masked"].(float64); n == 0 {
				t.Fatalf("nothing masked: %v", m)
			}
			masked[tc.clampPatch] = m["masked"]
			collapse := func(path string) float64 { return collapseOf(t, path, clean, trig) }
			before, after := collapse(enc), collapse(export)
			if before < 0.9 || after > 0.5 {
				t.Fatalf("the trigger's collapse: %.2f before, %.2f after filtering; want >= 0.9 then <= 0.5 (metrics %v)", before, after, m)
			}
		})
	}
	if a, b := fmt.Sprint(masked["off"]), fmt.Sprint(masked["export"]); a != b {
		t.Fatalf("the export caps changed the channels chosen: %s without, %s with", a, b)
	}
}

// smoothImage draws a 16x16 image of a smooth colour gradient (no
// texture); with noise above 0, that share of uniform noise is blended in.
func smoothImage(rng *rand.Rand, noise float64, noiseSeed uint64) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, testenc.Size, testenc.Size))
	var a, b [3]float64
	for c := range a {
		a[c], b[c] = 40+150*rng.Float64(), 40+150*rng.Float64()
	}
	nz := rand.New(rand.NewPCG(noiseSeed, 9))
	dir := rng.Float64()
	for y := 0; y < testenc.Size; y++ {
		for x := 0; x < testenc.Size; x++ {
			f := (dir*float64(x) + (1-dir)*float64(y)) / float64(testenc.Size-1)
			var v [3]uint8
			for c := range v {
				p := a[c]*(1-f) + b[c]*f
				if noise > 0 {
					p = (1-noise)*p + noise*255*nz.Float64()
				}
				v[c] = uint8(p)
			}
			img.Set(x, y, color.NRGBA{v[0], v[1], v[2], 255})
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// scanInputs opens an encoder of net and unpoisoned dim images for the
// filter (released when the test ends), with the parameters of a small
// scan of that many candidates (a tenth refined).
func scanInputs(t *testing.T, net *testenc.Net, candidates int) (*chanfilter.Inputs, filter.Params) {
	t.Helper()
	_, enc, rng := encoderOf(t, net)
	in := dimInputs(t, enc, rng, 0)
	t.Cleanup(in.Release)
	ins, err := chanfilter.Open(in, enc, "expand.trusted")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ins.Release)
	var p filter.Params
	raw, _ := json.Marshal(map[string]any{"encoder": enc, "sizes": []int{2, 5}, "scan_images": 32, "candidates": candidates, "refine": candidates / 10})
	if err := filter.DecodeParams(raw, &p); err != nil {
		t.Fatal(err)
	}
	return ins, p
}

// smoothStepInputs is the smooth-step tests' filter input: an encoder of
// net, and 200 images of image (120 trusted) opened for the filter; both
// released when the test ends.
func smoothStepInputs(t *testing.T, net *testenc.Net, image func(*rand.Rand) []byte) (string, *chanfilter.Inputs) {
	t.Helper()
	_, enc, rng := encoderOf(t, net)
	imgs, labels := labelled(rng, image)
	in := inputsOf(t, enc, imgs, labels, 120)
	t.Cleanup(in.Release)
	ins, err := chanfilter.Open(in, enc, "expand.trusted")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ins.Release)
	return enc, ins
}

// smoothStepParams are the smooth-step tests' filter parameters: a small
// scan of enc, with extra set over them.
func smoothStepParams(t *testing.T, enc string, extra map[string]any) filter.Params {
	t.Helper()
	m := map[string]any{"encoder": enc, "sizes": []int{2, 5}, "suspect_column": "",
		"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200}
	for k, v := range extra {
		m[k] = v
	}
	raw, _ := json.Marshal(m)
	var p filter.Params
	if err := filter.DecodeParams(raw, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// labelled draws the 200 images of the smooth-step tests, labelled over 4
// classes in turn.
func labelled(rng *rand.Rand, image func(*rand.Rand) []byte) ([][]byte, []int32) {
	var imgs [][]byte
	var labels []int32
	for i := 0; i < 200; i++ {
		imgs, labels = append(imgs, image(rng)), append(labels, int32(i%4))
	}
	return imgs, labels
}

// On a trojan that answers to noise texture (testenc.NoiseCollapse), the
// scan finds a noise blend, and the filter blurs the input instead of
// masking: the exported encoder carries the blur and a class gate, and
// noise blended into images no longer collapses their embeddings.
func TestFilterBlursANoiseTrojan(t *testing.T) {
	dir, enc, rng := encoderOf(t, testenc.NoiseCollapse(5))
	imgs, labels := labelled(rng, func(r *rand.Rand) []byte { return smoothImage(r, 0, 0) })
	in := inputsOf(t, enc, imgs, labels, 120)
	defer in.Release()
	out := plugin.NewTables()
	defer out.Release()
	export := filepath.Join(dir, "filtered.onnx")
	params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "sizes": []int{2, 5}, "suspect_column": "",
		"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200})
	m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	var res filter.Result
	json.Unmarshal(b, &res)
	if res.Scan.Pattern.Kind != "blend" || res.Smoothing == nil || res.Smoothing.Sigma <= 0 || res.ChannelsMasked != 0 {
		t.Fatalf("scan %+v, smoothing %+v, %d masked: want a blend found and undone by a blur, no mask", res.Scan, res.Smoothing, res.ChannelsMasked)
	}
	if res.Gate == nil || !res.Gate.On || !res.Gate.Class {
		t.Errorf("gate %+v, want a class gate", res.Gate)
	}
	var clean, noisy [][]byte
	for i := 0; i < 40; i++ {
		s := rng.Uint64()
		r1, r2 := rand.New(rand.NewPCG(s, 1)), rand.New(rand.NewPCG(s, 1))
		clean, noisy = append(clean, smoothImage(r1, 0, 0)), append(noisy, smoothImage(r2, 0.2, s))
	}
	before, after := collapseOf(t, enc, clean, noisy), collapseOf(t, export, clean, noisy)
	t.Logf("sigma %.1f; noise at 0.2 collapses %.2f before, %.2f after", res.Smoothing.Sigma, before, after)
	// This trojan keeps 0.39-0.40 under every sigma from 0.6 up (0.17 at
	// 0.5): half of the collapse is the bar.
	if before < 0.5 || after > before/2 {
		t.Errorf("the noise's collapse: %.2f before, %.2f after filtering; want >= 0.5, then under half of it", before, after)
	}
}

// The smooth step blurs only when the encoder, its channels capped, does
// not answer to a patch: on a patch trojan whose scan (as on the zoo's
// T3-z12) had picked a noise blend, the capped search finds the patch and
// the mask gets it; on a noise trojan it finds no patch, and the blur is
// chosen. The test trojans' channels are silent on clean images, so any
// cap undoes them: the patch case runs with caps that cut nothing, as the
// zoo's trojans leave them.
func TestSmoothBlursOnlyTexture(t *testing.T) {
	for _, tc := range []struct {
		name  string
		net   *testenc.Net
		image func(*rand.Rand) []byte
		pick  filter.Pattern
		loose bool
		blur  bool
	}{
		{"patch trojan, a noise blend picked", testenc.Collapse(5), func(r *rand.Rand) []byte { return dim(r, false) },
			filter.Pattern{Kind: "blend", Alpha: 0.25, NoiseSeed: 42}, true, false},
		{"patch trojan, a noise blend picked, its caps undo it", testenc.Collapse(5), func(r *rand.Rand) []byte { return dim(r, false) },
			filter.Pattern{Kind: "blend", Alpha: 0.25, NoiseSeed: 42}, false, true},
		{"noise trojan, the scan's own blend", testenc.NoiseCollapse(5), func(r *rand.Rand) []byte { return smoothImage(r, 0, 0) },
			filter.Pattern{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, ins := smoothStepInputs(t, tc.net, tc.image)
			p := smoothStepParams(t, enc, nil)
			rep, capped, err := filter.SmoothPicked(context.Background(), p, ins, tc.pick, tc.loose)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("capped search: %s z %.1f; sigma %.1f; %s", rep.Capped, rep.CappedZ, rep.Sigma, rep.Why)
			if rep.Capped == "" {
				t.Fatalf("no capped search reported: %+v", rep)
			}
			if blurred := rep.Sigma > 0; blurred != tc.blur {
				t.Errorf("blurred %v (sigma %.1f), want %v", blurred, rep.Sigma, tc.blur)
			}
			if !tc.blur && (capped == nil || capped.Kind == "blend") {
				t.Errorf("the mask got %v from the capped search, want its patch", capped)
			}
		})
	}
}

// The blur chosen is the first on the ladder under which the found blend
// collapses the scan images at most smooth_ratio times as much as a smooth
// blend of its alpha: every blur tried before it is above the ratio, and a
// stricter ratio never chooses a lighter blur; one no blur reaches leaves
// the encoder unblurred and says why.
func TestSmoothRatioChoosesTheBlur(t *testing.T) {
	enc, ins := smoothStepInputs(t, testenc.NoiseCollapse(5), func(r *rand.Rand) []byte { return smoothImage(r, 0, 0) })
	last := 0.0
	for _, ratio := range []float64{1.3, 0.5, 0.001} {
		p := smoothStepParams(t, enc, map[string]any{"smooth_ratio": ratio, "smooth_max": 1.5})
		rep, _, err := filter.SmoothPicked(context.Background(), p, ins, filter.Pattern{}, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range rep.Tried {
			t.Logf("smooth_ratio %g: sigma %.1f ratio %.3f z %.2f", ratio, tr.Sigma, tr.Ratio, tr.Z)
		}
		if len(rep.Tried) == 0 {
			t.Fatalf("smooth_ratio %g: no blur tried: %+v", ratio, rep)
		}
		for _, tr := range rep.Tried[:len(rep.Tried)-1] {
			if tr.Ratio <= ratio {
				t.Errorf("smooth_ratio %g: sigma %.1f (ratio %.3f) passed over", ratio, tr.Sigma, tr.Ratio)
			}
		}
		end := rep.Tried[len(rep.Tried)-1]
		switch {
		case rep.Sigma > 0 && (end.Sigma != rep.Sigma || end.Ratio > ratio):
			t.Errorf("smooth_ratio %g: chose sigma %.1f, the last tried is %+v", ratio, rep.Sigma, end)
		case rep.Sigma == 0 && (end.Ratio <= ratio || rep.Why == ""):
			t.Errorf("smooth_ratio %g: no blur chosen, the last tried is %+v, why %q", ratio, end, rep.Why)
		}
		sigma := rep.Sigma
		if sigma == 0 {
			sigma = math.Inf(1)
		}
		if sigma < last {
			t.Errorf("smooth_ratio %g chose sigma %.1f, lighter than a looser ratio's %.1f", ratio, rep.Sigma, last)
		}
		last = sigma
	}
	if !math.IsInf(last, 1) {
		t.Errorf("smooth_ratio 0.001 chose sigma %.1f: want no blur", last)
	}
}

// A noise blended into 60 images labelled 0 (a dirty-label attack on a clean
// encoder) is found by the class split, and its pattern goes into the
// augment rows, but never onto an image of class 0: that row would carry the
// trigger with the attack's own label.
func TestAugmentNeverPaintsATriggerOnItsClass(t *testing.T) {
	dir, enc, rng := encoderOf(t, testenc.Clean(5))
	in := plantedBlendInputs(t, enc, rng)
	defer in.Release()
	out := plugin.NewTables()
	defer out.Release()
	params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
		"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200})
	m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m["class_split"])
	if !strings.Contains(string(b), `"view":"detail"`) || !strings.Contains(string(b), `"class":0`) {
		t.Fatalf("class 0's blend not found in its detail: %s", b)
	}
	rows, zero := 0, 0
	for _, r := range out.Get("augment").Records {
		labs := r.Column(1).(*array.Int32)
		for i := 0; i < labs.Len(); i++ {
			rows++
			if labs.Value(i) == 0 {
				zero++
			}
		}
	}
	if rows == 0 || zero > 0 {
		t.Fatalf("%d augment rows, %d of class 0; want some, none of class 0 (class split %s)", rows, zero, b)
	}
}

// plantedBlendInputs embeds, with enc, 200 smooth images of four classes,
// each with its own fine noise, and 60 of class 0 (ids 200-259) with one
// noise blended in: a trigger planted in class 0's images. The first 120
// rows are trusted.
func plantedBlendInputs(t *testing.T, enc string, rng *rand.Rand) *plugin.Tables {
	t.Helper()
	var imgs [][]byte
	var labels []int32
	for i := 0; i < 200; i++ {
		imgs, labels = append(imgs, smoothImage(rng, 0.1, uint64(1000+i))), append(labels, int32(i%4))
	}
	for i := 0; i < 60; i++ {
		imgs, labels = append(imgs, smoothImage(rng, 0.25, 99)), append(labels, 0)
	}
	return inputsOf(t, enc, imgs, labels, 120)
}

// TestScanEncoderJudgesAKnownTrigger: the scan's judgement of a given
// pattern (replay --judge) puts the trojan's real trigger far above the
// random patterns of its size, a black patch at the same place not, and
// the clean encoder's real trigger not either.
func TestScanEncoderJudgesAKnownTrigger(t *testing.T) {
	ortlib.Init(t)
	white := filter.Pattern{Kind: "solid", Size: testenc.PatchSize, Row: testenc.PatchAt, Col: testenc.PatchAt, Colors: [2][3]float32{{1, 1, 1}}}
	black := white
	black.Colors = [2][3]float32{}
	for _, tc := range []struct {
		name    string
		net     *testenc.Net
		trigger bool // the white patch stands out
	}{
		{"trojan", testenc.Collapse(5), true},
		{"clean", testenc.Clean(5), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins, p := scanInputs(t, tc.net, 200)
			sc, zs, err := filter.ScanEncoder(context.Background(), p, ins, nil, white, black)
			if err != nil {
				t.Fatal(err)
			}
			if len(zs) != 2 {
				t.Fatalf("%d judged patterns, want 2", len(zs))
			}
			if got := zs[0] >= p.GapMin; got != tc.trigger {
				t.Errorf("white patch at the trigger's place: z %.1f, stands out %v, want %v (scan's best %s z %.1f)", zs[0], got, tc.trigger, sc.Pattern.String(), sc.BestZ)
			}
			if zs[1] >= p.GapMin {
				t.Errorf("black patch at the trigger's place: z %.1f, stands out", zs[1])
			}
		})
	}
}

// TestSplitCarriersStaySuspectsOnATrojan: a trigger planted in one class's
// images is found by the class split whatever the encoder; its carriers
// stay suspects when the scan also calls the encoder backdoored (the
// found trigger's region used to replace them).
func TestSplitCarriersStaySuspectsOnATrojan(t *testing.T) {
	for _, tc := range []struct {
		name       string
		net        *testenc.Net
		backdoored bool
	}{
		{"clean encoder", testenc.Clean(5), false},
		{"trojaned encoder", testenc.Collapse(5), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, rng := encoderOf(t, tc.net)
			in := plantedBlendInputs(t, enc, rng)
			defer in.Release()
			out := plugin.NewTables()
			defer out.Release()
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0})
			m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(m["encoder_scan"])
			if got := strings.Contains(string(b), `"backdoored":true`); got != tc.backdoored {
				t.Fatalf("scan %s: backdoored %v, want %v", b, got, tc.backdoored)
			}
			var carriers struct {
				Carriers int `json:"carriers"`
			}
			cs, _ := json.Marshal(m["class_split"])
			json.Unmarshal(cs, &carriers)
			if carriers.Carriers < 30 {
				t.Fatalf("class split found %d carriers, want most of the 60 planted rows: %s", carriers.Carriers, cs)
			}
			planted := 0
			for _, r := range out.Get("scores").Records {
				ids := r.Column(0).(*array.Uint64)
				sus := r.Column(r.Schema().FieldIndices("filter.suspect")[0]).(*array.Boolean)
				for i := 0; i < ids.Len(); i++ {
					if sus.Value(i) && ids.Value(i) >= 200 {
						planted++
					}
				}
			}
			if planted < 54 {
				rg, _ := json.Marshal(m["trigger_region"])
				mv, _ := json.Marshal(m["moved"])
				t.Errorf("%d of the 60 planted rows are suspects (the class split found %d carriers; region %s, moved %s), want 54", planted, carriers.Carriers, rg, mv)
			}
		})
	}
}

// Scoring a mask through the network after its layer gives the scores the
// whole network gives, bit for bit: on the collapse trojan, whose stage 3
// a gate passes around (scored whole) and whose stages 1 and 2 cut it.
func TestTailScoresEqualWholeScores(t *testing.T) {
	ortlib.Init(t)
	ins, p := scanInputs(t, testenc.Collapse(5), 100)
	tail, whole, tails, err := filter.ScoresBothWays(context.Background(), p, ins)
	if err != nil {
		t.Fatal(err)
	}
	if tails != 2 {
		t.Errorf("%d probed layers with a tail, want 2 (stage 3 does not cut the network)", tails)
	}
	if len(tail) != len(whole) || len(tail) == 0 {
		t.Fatalf("%d and %d scores", len(tail), len(whole))
	}
	moved := false
	for i := range tail {
		if tail[i] != whole[i] {
			t.Fatalf("mask %d: tail (collapse, change) %v, whole network %v", i, tail[i], whole[i])
		}
		moved = moved || whole[i][0] != whole[len(whole)-1][0]
	}
	if !moved {
		t.Fatal("no channel changes the collapse: the comparison tests nothing")
	}
}

// The paired fill is fitted to give the clean image's channels back from
// an image carrying the pattern: on the collapse trojan's pattern it reads
// the pattern back less than the plain regression does, and still fits
// the clean images about as well.
func TestPairedFillReadsThePatternBackLess(t *testing.T) {
	ortlib.Init(t)
	ins, p := scanInputs(t, testenc.Collapse(5), 100)
	plain, paired, err := filter.FillErrors(context.Background(), p, ins)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mean squared error, clean / patterned: plain %.4g / %.4g, paired %.4g / %.4g", plain[0], plain[1], paired[0], paired[1])
	if plain[1] <= 1.5*plain[0] {
		t.Fatalf("the pattern moves the fit's inputs too little to test anything (plain fill %.4g clean, %.4g patterned)", plain[0], plain[1])
	}
	if paired[1] >= plain[1] {
		t.Errorf("paired fill's error on patterned images %.4g, want under the plain fill's %.4g", paired[1], plain[1])
	}
	if paired[0] > 2*plain[0]+1e-6 {
		t.Errorf("paired fill's error on clean images %.4g, want at most twice the plain fill's %.4g", paired[0], plain[0])
	}
}

// Views that switch no channel off run through the session without
// run-time masks, and embed what the masked session embeds with every
// channel on, to float rounding (ONNX Runtime fuses the two graphs
// differently); a view with a channel off runs through the masked one.
func TestPlainSessionEqualsMaskedWithEveryChannelOn(t *testing.T) {
	ortlib.Init(t)
	for _, tc := range []struct {
		name string
		net  *testenc.Net
		pat  filter.Pattern
	}{
		{"collapse trojan, its patch", testenc.Collapse(5), filter.Pattern{Kind: "solid", Size: 4, Row: 2, Col: 2, Colors: [2][3]float32{{1, 1, 1}}}},
		{"clean, a noise blend", testenc.Clean(3), filter.Pattern{Kind: "blend", Alpha: 0.25, NoiseSeed: 42}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins, p := scanInputs(t, tc.net, 100)
			plain, masked, picks, err := filter.EmbedBothSessions(p, ins, tc.pat)
			if err != nil {
				t.Fatal(err)
			}
			if !picks {
				t.Error("the bench does not pick the plain session for views with every channel on, or picks it for a view with a channel off")
			}
			for k := range plain {
				if len(plain[k]) != len(masked[k]) || len(plain[k]) == 0 {
					t.Fatalf("view %d: %d and %d values", k, len(plain[k]), len(masked[k]))
				}
				for i := range plain[k] {
					if d := math.Abs(float64(plain[k][i] - masked[k][i])); d > 1e-5*(1+math.Abs(float64(masked[k][i]))) {
						t.Fatalf("view %d value %d: plain %g, masked %g", k, i, plain[k][i], masked[k][i])
					}
				}
			}
		})
	}
}

// A search on the masked encoder calls on z alone unless
// rescan_collapse_min asks its pattern to pull the images together too.
// With a rescan_gap this low, the masked collapse trojan's side answers
// reach it; they do not collapse the images as the trigger did.
func TestRescanCollapseMinDecides(t *testing.T) {
	enc, in := savedDimInputs(t, testenc.Collapse(5), 20)
	defer in.Release()
	for _, tc := range []struct {
		min         float64
		wantMoreOne bool // masked in more than one round
	}{{0, true}, {0.25, false}} {
		rounds, b := roundsOf(t, in, map[string]any{"encoder": enc, "rescan_gap": 0.5, "rescan_collapse_min": tc.min})
		masking := 0
		for i, r := range rounds {
			if len(r.Masked) == 0 {
				continue
			}
			masking++
			if i > 0 && !r.Neighbour && r.CollapseBefore < tc.min {
				t.Errorf("rescan_collapse_min %g: round %d masked against %s at collapse %.3f", tc.min, i, r.Pattern, r.CollapseBefore)
			}
		}
		if (masking > 1) != tc.wantMoreOne {
			t.Errorf("rescan_collapse_min %g: %d masking rounds, want more than one: %v; rounds %s", tc.min, masking, tc.wantMoreOne, b)
		}
	}
}

// TestRescanAnchors: with rescan_anchors on, when the search on the
// masked encoder finds nothing to mask on (rescan_gap out of reach,
// neighbours off), the best anchored patch on the masked encoder masks on
// when it reaches anchor_z, and only then ("borders" never at the
// centre); off never judges them after the first scan.
func TestRescanAnchors(t *testing.T) {
	enc, in := savedDimInputs(t, testenc.Collapse(5), 20)
	defer in.Release()
	for _, tc := range []struct {
		anchors      string // rescan_anchors
		anchorZ      float64
		wantAnchored bool // some round masked against an anchored patch
		wantJudged   bool // the last round reports the anchored patches' best
	}{
		{"off", 0.5, false, false},
		{"all", 100, false, true},
		{"all", 0.5, true, false},
		{"borders", 0.5, true, false},
	} {
		rounds, b := roundsOf(t, in, map[string]any{"encoder": enc, "rescan_gap": 100, "neighbour_z": 0,
			"rescan_anchors": tc.anchors, "anchor_z": tc.anchorZ})
		anchoredRounds := 0
		for i, r := range rounds {
			if !r.Anchored {
				continue
			}
			anchoredRounds++
			if i == 0 || len(r.Masked) == 0 || r.ZBefore < tc.anchorZ || (tc.anchors == "borders" && r.Pattern.Row == (testenc.Size-r.Pattern.Size)/2 && r.Pattern.Col == (testenc.Size-r.Pattern.Size)/2) {
				t.Errorf("rescan_anchors %s, anchor_z %g: round %d against anchored %s at z %.2f masked %d", tc.anchors, tc.anchorZ, i, r.Pattern, r.ZBefore, len(r.Masked))
			}
		}
		if (anchoredRounds > 0) != tc.wantAnchored {
			t.Errorf("rescan_anchors %s, anchor_z %g: %d rounds against anchored patches, want some: %v; rounds %s", tc.anchors, tc.anchorZ, anchoredRounds, tc.wantAnchored, b)
		}
		last := rounds[len(rounds)-1]
		if judged := last.WorstAnchorZ != 0; judged != tc.wantJudged {
			t.Errorf("rescan_anchors %s, anchor_z %g: last round's worst_anchor_z %.2f, want it reported: %v; rounds %s", tc.anchors, tc.anchorZ, last.WorstAnchorZ, tc.wantJudged, b)
		}
		if tc.wantJudged && last.WorstAnchorZ >= tc.anchorZ {
			t.Errorf("rescan_anchors %s: stopped with an anchored patch at z %.2f >= anchor_z %g", tc.anchors, last.WorstAnchorZ, tc.anchorZ)
		}
	}
}

// runSmall runs the filter on in with a small scan (sizes 2-5, 32 scan
// images, 400 candidates, 200 per rescan, no caps) and params over it,
// and returns its metrics. Its inputs carry the trojan's trigger in rows
// labelled 0 (T3), so it masks (planted_mask "mask"): the tests that use
// it are about the masking.
func runSmall(t *testing.T, in *plugin.Tables, params map[string]any) map[string]any {
	t.Helper()
	p := map[string]any{"sizes": []int{2, 5}, "suspect_column": "", "scan_images": 32,
		"candidates": 400, "refine": 40, "rescan_candidates": 200, "clamp_quantile": 0, "planted_mask": "mask"}
	for k, v := range params {
		p[k] = v
	}
	raw, _ := json.Marshal(p)
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(filter.New()).Run(context.Background(), raw, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scanOf is runSmall's first scan, its JSON and the run's metrics.
func scanOf(t *testing.T, in *plugin.Tables, params map[string]any) (filter.Scan, []byte, map[string]any) {
	t.Helper()
	m := runSmall(t, in, params)
	b, _ := json.Marshal(m["encoder_scan"])
	var sc filter.Scan
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatalf("params %v: encoder_scan %s (%v)", params, b, err)
	}
	return sc, b, m
}

// roundsOf is runSmall's masking rounds (at least one) and their JSON.
func roundsOf(t *testing.T, in *plugin.Tables, params map[string]any) ([]filter.Round, []byte) {
	t.Helper()
	b, _ := json.Marshal(runSmall(t, in, params)["rounds"])
	var rounds []filter.Round
	if err := json.Unmarshal(b, &rounds); err != nil || len(rounds) == 0 {
		t.Fatalf("params %v: rounds %s (%v)", params, b, err)
	}
	return rounds, b
}

// savedDimInputs saves net as an ONNX file and embeds dimInputs (with
// poison triggered rows, random source (3, 4)) with it.
func savedDimInputs(t *testing.T, net *testenc.Net, poison int) (string, *plugin.Tables) {
	t.Helper()
	ortlib.Init(t)
	enc := filepath.Join(t.TempDir(), "enc.onnx")
	net.Model().Save(enc)
	return enc, dimInputs(t, enc, rand.New(rand.NewPCG(3, 4)), poison)
}

// TestShiftCheckSeparates: the trojan's answer moves the scan images'
// mean embedding far past any pattern's move on a clean encoder (the
// check judges random candidates and the anchored patches), and the check
// gives the same answer twice.
func TestShiftCheckSeparates(t *testing.T) {
	best := map[string]float64{}
	for _, tc := range []struct {
		name string
		net  *testenc.Net
	}{
		{"trojan", testenc.Collapse(5)},
		{"clean", testenc.Clean(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins, p := scanInputs(t, tc.net, 100)
			p.RescanCands, p.ShiftZ = 200, 8
			a, err := filter.ShiftOn(context.Background(), p, ins)
			if err != nil {
				t.Fatal(err)
			}
			if a.Judged != 200+240 {
				t.Errorf("%d patterns judged, want 200 random and 240 anchored", a.Judged)
			}
			if a.Added != (a.Z >= 8) {
				t.Errorf("added %v at z %.2f, shift_z 8", a.Added, a.Z)
			}
			b, err := filter.ShiftOn(context.Background(), p, ins)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("two checks differ: %+v, %+v", a, b)
			}
			best[tc.name] = a.Z
			t.Logf("best %s: z %.2f, shift %.3f", a.Pattern, a.Z, a.Shift)
		})
	}
	if len(best) < 2 {
		return // a subtest skipped (no ONNX Runtime)
	}
	if best["trojan"] < 8 || best["trojan"] < 10*best["clean"] {
		t.Errorf("best shift z: trojan %.2f, clean %.2f; want the trojan at 8 or more and ten times the clean encoder's", best["trojan"], best["clean"])
	}
}

// TestShiftZ: the check runs only on a masked encoder and only when
// shift_z is on; its pattern joins the augment rows (and its region the
// suspects) only when its z reaches shift_z, and the bar changes nothing
// else about the check.
func TestShiftZ(t *testing.T) {
	enc, in := savedDimInputs(t, testenc.Collapse(5), 20)
	defer in.Release()
	cleanEnc, cleanIn := savedDimInputs(t, testenc.Clean(5), 0)
	defer cleanIn.Release()
	var seen []filter.Shifted
	for _, tc := range []struct {
		name    string
		in      *plugin.Tables
		enc     string
		shiftZ  float64
		checked bool
	}{
		{"off", in, enc, 0, false},
		{"low bar", in, enc, 0.01, true},
		{"high bar", in, enc, 1000, true},
		{"clean encoder, not masked", cleanIn, cleanEnc, 0.01, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := runSmall(t, tc.in, map[string]any{"encoder": tc.enc, "shift_z": tc.shiftZ})
			raw, ok := m["shift"]
			if ok != tc.checked {
				t.Fatalf("shift report present %v, want %v (masked %v)", ok, tc.checked, m["channels_masked"])
			}
			if !ok {
				return
			}
			b, _ := json.Marshal(raw)
			var s filter.Shifted
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			if s.Added != (s.Z >= tc.shiftZ) {
				t.Errorf("added %v at z %.2f, shift_z %g", s.Added, s.Z, tc.shiftZ)
			}
			if (s.Region != nil) != s.Added {
				t.Errorf("added %v, region %+v: an added pattern's region, and only its, is reported", s.Added, s.Region)
			}
			seen = append(seen, s)
		})
	}
	if len(seen) == 2 && (!reflect.DeepEqual(seen[0].Pattern, seen[1].Pattern) || seen[0].Z != seen[1].Z) {
		t.Errorf("the bar changed the check: %+v, %+v", seen[0], seen[1])
	}
}

// TestFilterPlantedPatch: with planted_ratio on, a 3x3 checker pasted into
// 60 images labelled 0 (half of them trusted, as the data stages trust
// poisoned rows on T3) is found whatever the encoder, every carrier is a
// suspect, and the patch joins the augment rows; off, no check runs.
func TestFilterPlantedPatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		net   *testenc.Net
		ratio float64
	}{
		{"clean encoder", testenc.Clean(5), 10},
		{"trojaned encoder", testenc.Collapse(5), 10},
		{"off", testenc.Clean(5), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, rng := encoderOf(t, tc.net)
			in := pastedInputs(t, enc, rng, 0, 3, true)
			defer in.Release()
			trustHalfTheCarriers(in)
			out := plugin.NewTables()
			defer out.Release()
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0, "planted_ratio": tc.ratio})
			m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ratio == 0 {
				if m["planted"] != nil {
					t.Fatalf("planted_ratio 0 ran the check: %v", m["planted"])
				}
				return
			}
			b, _ := json.Marshal(m["planted"])
			var pl filter.Planted
			if err := json.Unmarshal(b, &pl); err != nil || len(pl.Found) != 1 || pl.Carriers != 60 || pl.Found[0].Label != 0 || pl.Found[0].Pattern.Row != 0 || pl.Found[0].Pattern.Col != 0 {
				t.Fatalf("planted %+v: want one patch at (0,0) of label 0 with its 60 carriers", pl)
			}
			checkCarriersAndAugment(t, out, m)
		})
	}
}

// TestPlantedZ: the trojan's own trigger pasted into 60 images labelled 0
// (T3) makes the call through planted_z when the random scan makes none
// (its bar out of reach here, the anchored patches off), and masking
// follows; off, or on a clean encoder, no call.
func TestPlantedZ(t *testing.T) {
	for _, tc := range []struct {
		name     string
		net      *testenc.Net
		plantedZ float64
		call     bool
	}{
		{"trojan", testenc.Collapse(5), 4.5, true},
		{"trojan, off", testenc.Collapse(5), 0, false},
		{"clean", testenc.Clean(5), 4.5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, rng := encoderOf(t, tc.net)
			in := pastedInputs(t, enc, rng, testenc.PatchAt, testenc.PatchSize, false)
			defer in.Release()
			out := plugin.NewTables()
			defer out.Release()
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0, "gap_min": 100,
				"planted_ratio": 10, "planted_z": tc.plantedZ, "anchors": "off", "planted_mask": "mask"}) // the planted path alone: the anchored patches would call first
			_, sc, b, masked := runScan(t, params, in, out)
			if sc.Backdoored != tc.call || sc.FromPlanted != tc.call || (masked > 0) != tc.call {
				t.Fatalf("scan %s, %v channels masked: want a call from the planted patch: %v", b, masked, tc.call)
			}
			if tc.plantedZ > 0 && sc.PlantedZ == 0 {
				t.Errorf("the planted patch was not judged: %s", b)
			}
		})
	}
}

// TestPlantedMask: the trojan's own trigger pasted into 60 images labelled
// 0 (T3) is called and masked against under planted_mask "mask"; under
// "skip" the pasted patch reaches the bar on the encoder, so nothing is
// masked, the call is on record as undone by the data, every carrier is a
// suspect and the augment rows carry the patch: undone_share of the 260
// rows are picked (augment_share elsewhere), round robin over the four
// labels, and those of label 0, the patch's own, are not written. A patch
// the trojan ignores (a checker elsewhere, T1 beside a data attack) or a
// clean encoder leaves "skip" as "mask".
func TestPlantedMask(t *testing.T) {
	for _, tc := range []struct {
		name        string
		net         *testenc.Net
		at, size    int
		checker     bool
		mode        string
		undoneShare float64
		masks, undo bool
		augment     int // rows written to augment
	}{
		{"trojan's trigger pasted, mask", testenc.Collapse(5), testenc.PatchAt, testenc.PatchSize, false, "mask", 0.2, true, false, 52},
		{"trojan's trigger pasted, mask, undone_share does not apply", testenc.Collapse(5), testenc.PatchAt, testenc.PatchSize, false, "mask", 0.1, true, false, 52},
		{"trojan's trigger pasted, skip", testenc.Collapse(5), testenc.PatchAt, testenc.PatchSize, false, "skip", 0.2, false, true, 39},
		{"trojan's trigger pasted, skip, undone_share 0.1", testenc.Collapse(5), testenc.PatchAt, testenc.PatchSize, false, "skip", 0.1, false, true, 19},
		{"another patch pasted, skip", testenc.Collapse(5), 0, 3, true, "skip", 0.1, true, false, 52},
		{"clean encoder, skip", testenc.Clean(5), testenc.PatchAt, testenc.PatchSize, false, "skip", 0.1, false, false, 39},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, rng := encoderOf(t, tc.net)
			in := pastedInputs(t, enc, rng, tc.at, tc.size, tc.checker)
			defer in.Release()
			out := plugin.NewTables()
			defer out.Release()
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0, "planted_ratio": 10, "planted_mask": tc.mode, "undone_share": tc.undoneShare})
			m, sc, b, masked := runScan(t, params, in, out)
			why, _ := m["why_no_mask"].(string)
			if (masked > 0) != tc.masks || sc.UndoneByData != tc.undo || sc.Backdoored != tc.masks {
				t.Fatalf("scan %s, %v channels masked (%s): want masked %v, undone by the data %v", b, masked, why, tc.masks, tc.undo)
			}
			if n, _ := m["augment_rows"].(float64); int(n) != tc.augment {
				t.Errorf("%v augment rows, want %d", n, tc.augment)
			}
			if tc.mode == "skip" && sc.PlantedZ == 0 {
				t.Errorf("the pasted patch was not judged: %s", b)
			}
			if !tc.undo {
				return
			}
			if !strings.Contains(why, "planted_mask") {
				t.Errorf("why_no_mask %q does not name planted_mask", why)
			}
			checkCarriersAndAugment(t, out, m)
		})
	}
}

// TestPlantedTakesTheCall: the trojan's own trigger pasted into 60 images
// labelled 0 (T3) takes a noise blend's call over under planted_blend
// "patch" (the blur would leave it), and a patch call that pulls the scan
// images together less (a red patch the white-pixel trojan ignores) under
// planted_patch "collapse" and the default "gated"; never when off, never on a clean encoder (the
// patch does not reach the bar there), never over a patch call under
// planted_blend, and never over a call that collapses as much (the
// trigger itself, painted by the scan).
func TestPlantedTakesTheCall(t *testing.T) {
	blend := filter.Pattern{Kind: "blend", Alpha: 0.15, NoiseSeed: 7}
	red := filter.Pattern{Kind: "solid", Size: 3, Row: 1, Col: 1, Colors: [2][3]float32{{1, 0, 0}, {1, 0, 0}}}
	white := filter.Pattern{Kind: "solid", Size: testenc.PatchSize, Row: testenc.PatchAt, Col: testenc.PatchAt, Colors: [2][3]float32{{1, 1, 1}}}
	for _, tc := range []struct {
		name   string
		net    *testenc.Net
		params map[string]any
		pick   filter.Pattern
		taken  bool
	}{
		{"blend call, planted_blend", testenc.Collapse(5), map[string]any{"planted_blend": "patch"}, blend, true},
		{"blend call, off", testenc.Collapse(5), map[string]any{"planted_blend": "off"}, blend, false},
		{"patch call, planted_blend", testenc.Collapse(5), map[string]any{"planted_blend": "patch", "planted_patch": "off"}, red, false},
		{"patch call, the default planted_patch", testenc.Collapse(5), map[string]any{}, red, true},
		{"clean, blend call", testenc.Clean(5), map[string]any{"planted_blend": "patch"}, blend, false},
		{"patch call, planted_patch", testenc.Collapse(5), map[string]any{"planted_patch": "collapse"}, red, true},
		{"patch call, planted_patch off", testenc.Collapse(5), map[string]any{"planted_patch": "off"}, red, false},
		{"the trigger's call, planted_patch", testenc.Collapse(5), map[string]any{"planted_patch": "collapse"}, white, false},
		{"clean, patch call", testenc.Clean(5), map[string]any{"planted_patch": "collapse"}, red, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, enc, rng := encoderOf(t, tc.net)
			in := pastedInputs(t, enc, rng, testenc.PatchAt, testenc.PatchSize, false)
			defer in.Release()
			ins, err := chanfilter.Open(in, enc, "expand.trusted")
			if err != nil {
				t.Fatal(err)
			}
			defer ins.Release()
			extra := map[string]any{"planted_ratio": 10}
			for k, v := range tc.params {
				extra[k] = v
			}
			p := smoothStepParams(t, enc, extra)
			sc, err := filter.PlantedOverPick(context.Background(), p, ins, tc.pick)
			if err != nil {
				t.Fatal(err)
			}
			if !sc.Backdoored {
				t.Fatalf("scan %+v: the call was lost", sc)
			}
			if taken := sc.FromPlanted && sc.Pattern.Kind == "pasted"; taken != tc.taken {
				t.Fatalf("scan %+v (planted z %.1f): the pasted patch took the call %v, want %v", sc, sc.PlantedZ, taken, tc.taken)
			}
			if !tc.taken && sc.Pattern.String() != tc.pick.String() {
				t.Fatalf("scan %+v: the call changed from %s", sc, tc.pick)
			}
			if judged := tc.params["planted_blend"] == "patch" && tc.pick.Kind == "blend" || tc.params["planted_patch"] == "collapse"; judged && sc.PlantedZ == 0 {
				t.Errorf("the pasted patch was not judged: %+v", sc)
			}
			t.Logf("planted z %.1f, collapse %.2f", sc.PlantedZ, sc.BestCollapse)
		})
	}
}

// TestAugmentTurnsByFamily: on a T3-like input, the patch found pasted
// into the data is one pattern beside the found pattern's neighbours; under
// augment_turns "families" it gets as many augment rows as each found
// family, under "patterns" only one turn in as many as there are patterns.
func TestAugmentTurnsByFamily(t *testing.T) {
	const pasted = "a patch pasted into one label's images"
	share := map[string]float64{}
	for _, turns := range []string{"patterns", "families"} {
		t.Run(turns, func(t *testing.T) {
			m := runOnPastedTrigger(t, map[string]any{"augment_share": 1, "augment_turns": turns})
			var g filter.GateReport
			b, _ := json.Marshal(m["gate"])
			json.Unmarshal(b, &g)
			all, mine, families := 0, 0, 0
			for _, c := range g.Patterns {
				all += c.Rows
				families++
				if c.Pattern == pasted {
					mine = c.Rows
				}
			}
			if mine == 0 || families < 2 {
				t.Fatalf("gate %s: want the pasted patch's rows beside a found pattern's", b)
			}
			share[turns] = float64(mine) / float64(all)
			t.Logf("%s: %d of %d augment rows carry the pasted patch (%d families)", turns, mine, all, families)
			// The patch is never pasted on its own label's images (a
			// quarter of them here): their turns pass to the next family.
			if turns == "families" && share[turns] < 0.6/float64(families) {
				t.Errorf("families: the pasted patch has %.2f of the rows, want about 3/4 of 1/%d", share[turns], families)
			}
		})
	}
	if len(share) < 2 {
		// A subtest skipped (no ONNX Runtime) or failed: nothing to
		// compare.
		t.Skip("a subtest did not finish")
	}
	if share["families"] <= share["patterns"] {
		t.Errorf("the pasted patch's share: %.2f under families, %.2f under patterns", share["families"], share["patterns"])
	}
}

// runOnPastedTrigger runs the filter stage, with a small scan and extra
// over its parameters, on a T3-like input: the trojan's own trigger pasted
// into 60 images labelled 0, half of them trusted. It masks (planted_mask
// "mask"), since its callers test what the mask and the gate do with the
// pasted patch. It returns the metrics.
func runOnPastedTrigger(t *testing.T, extra map[string]any) map[string]any {
	t.Helper()
	dir, enc, rng := encoderOf(t, testenc.Collapse(5))
	in := pastedInputs(t, enc, rng, testenc.PatchAt, testenc.PatchSize, false)
	defer in.Release()
	trustHalfTheCarriers(in)
	out := plugin.NewTables()
	defer out.Release()
	p := map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
		"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0, "planted_mask": "mask"}
	for k, v := range extra {
		p[k] = v
	}
	params, _ := json.Marshal(p)
	m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// trustHalfTheCarriers gives pastedInputs' rows a trusted column: the
// first 120 rows and half of the 60 carriers (ids 200-229), as the
// trusted set of a T3 run holds some of the poisoned rows.
func trustHalfTheCarriers(in *plugin.Tables) {
	trusted := make([]bool, 260)
	for i := range trusted {
		trusted[i] = i < 120 || (i >= 200 && i < 230)
	}
	tab, _ := feat.Open(in, "features")
	sr, _ := feat.ScoresRecord(tab.IDs, []feat.Column{{Name: "expand.trusted", B: trusted}})
	in.Put("trusted", sr.Schema(), sr)
	sr.Release()
}

// runScan runs the filter stage in process and returns its metrics, its
// encoder scan (decoded, and as JSON) and how many channels it masked.
func runScan(t *testing.T, params []byte, in, out *plugin.Tables) (plugin.Metrics, filter.Scan, []byte, float64) {
	t.Helper()
	m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m["encoder_scan"])
	var sc filter.Scan
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatalf("encoder_scan %s: %v", b, err)
	}
	masked, _ := m["channels_masked"].(float64)
	return m, sc, b, masked
}

// checkCarriersAndAugment checks a filter run on pastedInputs: every one of
// the 60 carriers (ids 200-259) is a suspect, and augment rows were made.
func checkCarriersAndAugment(t *testing.T, out *plugin.Tables, m plugin.Metrics) {
	t.Helper()
	sus := 0
	for _, r := range out.Get("scores").Records {
		ids := r.Column(0).(*array.Uint64)
		s := r.Column(r.Schema().FieldIndices("filter.suspect")[0]).(*array.Boolean)
		for i := 0; i < ids.Len(); i++ {
			if s.Value(i) && ids.Value(i) >= 200 {
				sus++
			}
		}
	}
	if sus != 60 {
		t.Errorf("%d of the 60 carriers are suspects", sus)
	}
	if n, _ := m["augment_rows"].(float64); n == 0 {
		t.Errorf("no augment rows carry the pasted patch")
	}
}

// pastedInputs embeds, with enc, 200 smooth images of four classes and 60
// more (ids 200-259) carrying a patch pasted at (at, at) and labelled 0 (a
// dirty-label patch attack); the first 120 rows are trusted.
func pastedInputs(t *testing.T, enc string, rng *rand.Rand, at, size int, checker bool) *plugin.Tables {
	t.Helper()
	var imgs [][]byte
	var labels []int32
	for i := 0; i < 260; i++ {
		b := smoothImage(rng, 0.1, uint64(1000+i))
		l := int32(i % 4)
		if i >= 200 {
			b, l = pasteAt(t, b, at, size, checker), 0
		}
		imgs, labels = append(imgs, b), append(labels, l)
	}
	return inputsOf(t, enc, imgs, labels, 120)
}

// pasteAt pastes a size x size patch at (at, at) into a PNG: white (the
// handcrafted trojan's trigger when in its place), or a black-and-red
// checker (no white pixel: the trojan ignores it).
func pasteAt(t *testing.T, b []byte, at, size int, checker bool) []byte {
	t.Helper()
	src, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewNRGBA(src.Bounds())
	for y := 0; y < testenc.Size; y++ {
		for x := 0; x < testenc.Size; x++ {
			img.Set(x, y, src.At(x, y))
			if x >= at && x < at+size && y >= at && y < at+size {
				c := color.NRGBA{255, 255, 255, 255}
				if checker {
					c = color.NRGBA{uint8(255 * ((x + y) % 2)), 0, 0, 255}
				}
				img.Set(x, y, c)
			}
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// TestGateProbeTakesThePlantedPatch: on a T3-like input (the trojan's own
// trigger pasted into 60 images labelled 0, half of them trusted), the
// gate's class part probes with the found patterns' rows alone under
// gate_classes "found", and with the planted patch's rows as well under
// "planted" (the default).
func TestGateProbeTakesThePlantedPatch(t *testing.T) {
	rows := map[string]int{}
	for _, classes := range []string{"found", "planted"} {
		t.Run(classes, func(t *testing.T) {
			m := runOnPastedTrigger(t, map[string]any{"gate_classes": classes})
			var pl filter.Planted
			b, _ := json.Marshal(m["planted"])
			if json.Unmarshal(b, &pl); len(pl.Found) != 1 {
				t.Fatalf("planted %s: want the pasted trigger found", b)
			}
			var g filter.GateReport
			b, _ = json.Marshal(m["gate"])
			if json.Unmarshal(b, &g); !g.On || g.ProbeRows == 0 {
				t.Fatalf("gate %s: want a move gate with a class part", b)
			}
			rows[classes] = g.ProbeRows
		})
	}
	if len(rows) < 2 {
		// A subtest skipped (no ONNX Runtime) or failed: nothing to
		// compare.
		t.Skip("a subtest did not finish")
	}
	t.Logf("probe rows: found %d, planted %d", rows["found"], rows["planted"])
	if rows["planted"] <= rows["found"] {
		t.Errorf("probe rows: found %d, planted %d: the planted patch's rows did not join", rows["found"], rows["planted"])
	}
}

// TestLooksRunOnACall: the look step runs on a patch call and never
// without one, and the first masking round masks against the call it
// leaves.
func TestLooksRunOnACall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		net   *testenc.Net
		looks int
		runs  bool
	}{
		{"trojan, looks 8", testenc.Collapse(5), 8, true},
		{"trojan, looks 0", testenc.Collapse(5), 0, false},
		{"clean, looks 8", testenc.Clean(5), 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, enc, rng := encoderOf(t, tc.net)
			in := dimInputs(t, enc, rng, 0)
			defer in.Release()
			sc, b, m := scanOf(t, in, map[string]any{"encoder": enc, "candidates": 40, "refine": 0, "rescans": 0, "looks": tc.looks})
			if (sc.Looked > 0) != tc.runs {
				t.Fatalf("looks_judged %d, want the step to run: %v (%s)", sc.Looked, tc.runs, b)
			}
			if !sc.Backdoored {
				return
			}
			firstRoundIsTheCall(t, &sc, m)
		})
	}
}

// TestCallPlaceRunsOnACall: call_place "all" judges the called patch
// over the image when the scan calls a trojan's patch, and only then; the
// call it leaves stands out at least as much as the scan's, and the first
// round masks against it.
func TestCallPlaceRunsOnACall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		net   *testenc.Net
		place string
		runs  bool
	}{
		{"trojan, all", testenc.Collapse(5), "all", true},
		{"trojan, off", testenc.Collapse(5), "off", false},
		{"clean, all", testenc.Clean(5), "all", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, enc, rng := encoderOf(t, tc.net)
			in := dimInputs(t, enc, rng, 0)
			defer in.Release()
			params := map[string]any{"encoder": enc, "candidates": 40, "refine": 0, "rescans": 0, "call_place": tc.place}
			sc, b, m := scanOf(t, in, params)
			if (sc.Placed > 0) != tc.runs {
				t.Fatalf("places_screened %d, want the step to run: %v (%s)", sc.Placed, tc.runs, b)
			}
			if !sc.Backdoored {
				return
			}
			if (sc.Placed > 0 && sc.BestZ < sc.PlaceZ-1e-9) || (sc.FromPlace && (sc.PlaceFrom == "" || sc.PlaceZ != sc.BestZ)) {
				t.Errorf("from_place %v, place_z %.2f, best_z %.2f (%s)", sc.FromPlace, sc.PlaceZ, sc.BestZ, b)
			}
			if tc.runs {
				params["call_place"] = "off"
				off, _, _ := scanOf(t, in, params)
				if sc.BestZ < off.BestZ {
					t.Errorf("the placed call's z %.2f under the scan's own %.2f", sc.BestZ, off.BestZ)
				}
				if sc.FromPlace == (sc.Pattern.String() == off.Pattern.String()) {
					t.Errorf("from_place %v: the call %s, the scan's %s", sc.FromPlace, sc.Pattern, off.Pattern)
				}
			}
			firstRoundIsTheCall(t, &sc, m)
			t.Logf("%s", b)
		})
	}
}

// TestGatedTakeoverStandsOnlyWithAGate: on a T3-like input whose scan
// calls a red patch the trojan ignores, the pasted trigger takes the call
// over (planted_patch "collapse"). Under "gated" that pass stands, output
// for output, when its gate is on; when its gate is off (gate_min 0), the
// filter drops it, says so, and writes exactly what planted_patch "off"
// writes.
func TestGatedTakeoverStandsOnlyWithAGate(t *testing.T) {
	red := filter.Pattern{Kind: "solid", Size: 3, Row: 1, Col: 1, Colors: [2][3]float32{{1, 0, 0}, {1, 0, 0}}}
	for _, tc := range []struct {
		name    string
		gateMin float64
		drop    bool
	}{
		{"gate on", 0.25, false},
		{"gate off", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, _ := encoderOf(t, testenc.Collapse(5))
			inputs := func() *plugin.Tables {
				in := pastedInputs(t, enc, rand.New(rand.NewPCG(7, 8)), testenc.PatchAt, testenc.PatchSize, false)
				trustHalfTheCarriers(in)
				return in
			}
			params := map[string]any{"encoder": enc, "export": filepath.Join(dir, "filtered.onnx"), "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "rescans": 0, "planted_ratio": 10, "gate_min": tc.gateMin, "planted_mask": "mask"}
			in := inputs()
			ins, err := chanfilter.Open(in, enc, "expand.trusted")
			if err != nil {
				t.Fatal(err)
			}
			if err := filter.ForceScanCall(context.Background(), smoothStepParams(t, enc, params), ins, red); err != nil {
				t.Fatal(err)
			}
			ins.Release()
			in.Release()
			runs := map[string]map[string]any{}
			outs := map[string]*plugin.Tables{}
			for _, form := range []string{"off", "collapse", "gated"} {
				in := inputs()
				defer in.Release()
				out := plugin.NewTables()
				defer out.Release()
				params["planted_patch"] = form
				raw, _ := json.Marshal(params)
				m, err := plugin.Local(filter.New()).Run(context.Background(), raw, in, out, nil)
				if err != nil {
					t.Fatal(err)
				}
				runs[form], outs[form] = m, out
			}
			var sc filter.Scan
			b, _ := json.Marshal(runs["collapse"]["encoder_scan"])
			if json.Unmarshal(b, &sc); !sc.FromPlanted || sc.Pattern.Kind != "pasted" {
				t.Fatalf("collapse: scan %s: want the pasted patch to take the call over", b)
			}
			var g filter.GateReport
			b, _ = json.Marshal(runs["collapse"]["gate"])
			if json.Unmarshal(b, &g); g.On == tc.drop {
				t.Fatalf("collapse: gate %s: want it on: %v", b, !tc.drop)
			}
			dropped, _ := json.Marshal(runs["gated"]["dropped_takeover"])
			if got := runs["gated"]["dropped_takeover"] != nil; got != tc.drop {
				t.Fatalf("gated: dropped_takeover %s, want a dropped pass: %v", dropped, tc.drop)
			}
			want := "collapse"
			if tc.drop {
				want = "off"
			}
			for _, port := range []string{"features", "channels", "augment", "scores"} {
				if err := tabletest.Diff(outs[want].Get(port), outs["gated"].Get(port)); err != nil {
					t.Errorf("gated: port %s differs from planted_patch %s's: %v", port, want, err)
				}
			}
			if a, b := runs["gated"]["channels_masked"], runs[want]["channels_masked"]; a != b {
				t.Errorf("gated masked %v channels, %s %v", a, want, b)
			}
			t.Logf("dropped %s", dropped)
		})
	}
}

// firstRoundIsTheCall checks that the filter's first masking round (in
// its metrics m) masked against the scan's call.
func firstRoundIsTheCall(t *testing.T, sc *filter.Scan, m map[string]any) {
	t.Helper()
	rb, _ := json.Marshal(m["rounds"])
	var rounds []filter.Round
	if err := json.Unmarshal(rb, &rounds); err != nil || len(rounds) == 0 {
		t.Fatalf("rounds %s (%v)", rb, err)
	}
	if got := rounds[0].Pattern; got.String() != sc.Pattern.String() || got.Colors != sc.Pattern.Colors {
		t.Errorf("the first round masked against %s, the call is %s", got, sc.Pattern)
	}
}

// With project "scan" on the collapse trojan, the filtered encoder records
// one unit direction for the head to leave out: the way the trigger moves
// the original encoder's embedding (the triggered rows sit far along it
// from the clean ones, in the features the filter was given). With "off",
// or on a clean encoder (no call), there is none.
func TestProjectRecordsTheCalledDirection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		net     *testenc.Net
		project string
		want    bool
	}{
		{"trojan, scan", testenc.Collapse(5), "scan", true},
		{"trojan, off", testenc.Collapse(5), "off", false},
		{"clean, scan", testenc.Clean(5), "scan", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, enc, rng := encoderOf(t, tc.net)
			in := dimInputs(t, enc, rng, 20)
			defer in.Release()
			tab, err := feat.Open(in, "features")
			if err != nil {
				t.Fatal(err)
			}
			out := plugin.NewTables()
			defer out.Release()
			export := filepath.Join(dir, "filtered.onnx")
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": export, "sizes": []int{2, 5}, "suspect_column": "",
				"scan_images": 32, "candidates": 400, "refine": 40, "rescan_candidates": 200, "project": tc.project, "planted_mask": "mask"})
			m, err := plugin.Local(filter.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(m["project"])
			if _, ok := m["project"]; ok != tc.want {
				t.Fatalf("project in the metrics: %s, want one: %v", b, tc.want)
			}
			g, err := onnxgraph.Load(export)
			if err != nil {
				t.Fatal(err)
			}
			p, err := chanfilter.ReadProject(g)
			if err != nil {
				t.Fatal(err)
			}
			if (p != nil) != tc.want {
				t.Fatalf("the exported encoder's projection %+v, want one: %v", p, tc.want)
			}
			if p == nil {
				return
			}
			d := tab.Embedding.D
			if len(p.Dirs) != 1 || len(p.Dirs[0]) != d {
				t.Fatalf("%d directions of %d values, want 1 of %d", len(p.Dirs), len(p.Dirs[0]), d)
			}
			// The 20 triggered rows (ids 200 on) against the 200 clean
			// ones, along the direction.
			var trig, clean []float64
			for i := 0; i < tab.N(); i++ {
				var along float64
				for j, v := range tab.Embedding.X[i*d : (i+1)*d] {
					along += float64(v) * float64(p.Dirs[0][j])
				}
				if tab.IDs[i] >= 200 {
					trig = append(trig, along)
				} else {
					clean = append(clean, along)
				}
			}
			slices.Sort(trig)
			slices.Sort(clean)
			if lo, hi := trig[len(trig)/10], clean[len(clean)*9/10]; lo <= hi {
				t.Errorf("along the direction: triggered rows' 10th percentile %.3g, clean rows' 90th %.3g (%s)", lo, hi, b)
			}
		})
	}
}
