package fineprune_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/fineprune"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// Fine-pruning switches off the least active quarter of the deepest layer;
// embedded again, those channels read 0 in the embedding (the test
// encoder's embedding is the mean of its last stage).
func TestFinePruneSwitchesOffDormantChannels(t *testing.T) {
	ortlib.Init(t)
	dir := t.TempDir()
	enc := filepath.Join(dir, "enc.onnx")
	testenc.Clean(5).Model().Save(enc)
	in := synth.EmbeddedImages(t, embed.New(), enc, 40, testenc.Size, 4)
	defer in.Release()
	before, err := feat.Open(in, "features")
	if err != nil {
		t.Fatal(err)
	}
	in = synth.EmbeddedImages(t, embed.New(), enc, 40, testenc.Size, 4)
	defer in.Release()
	out := plugin.NewTables()
	defer out.Release()
	params, _ := json.Marshal(map[string]any{"encoder": enc, "prune": 0.25})
	m, err := plugin.Local(fineprune.New()).Run(context.Background(), params, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	means := before.LayerMeans(nil)["stage3"]
	order := make([]int, len(means))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return means[order[a]] < means[order[b]] })
	var want []string
	for _, c := range order[:8] {
		want = append(want, fmt.Sprintf("stage3:%d", c))
	}
	sort.Strings(want)
	got := fmt.Sprint(m["masked"])
	for _, w := range want {
		if !strings.Contains(got, w+" ") && !strings.Contains(got, w+"]") {
			t.Errorf("masked %s, want the 8 least active stage3 channels %v", got, want)
			break
		}
	}
	r := out.Get("features").Records[0]
	emb := r.Column(2).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values()
	for _, c := range order[:8] {
		if v := emb[c]; v != 0 {
			t.Errorf("pruned channel %d reads %v in the embedding, want 0", c, v)
		}
	}
	params, _ = json.Marshal(map[string]any{"encoder": enc, "layer": "stage9"})
	if _, err := plugin.Local(fineprune.New()).Run(context.Background(), params, synth.EmbeddedImages(t, embed.New(), enc, 8, testenc.Size, 4), plugin.NewTables(), nil); err == nil || !strings.Contains(err.Error(), "stage9") {
		t.Errorf("unknown layer: %v", err)
	}
}
