package clp_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/synth"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/clp"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// The Go-built trojan's channel reads one input channel with large
// weights: its kernel's spectral norm stands out, data-free, and CLP
// prunes it in the stages that carry it; the clean encoder keeps the
// channels the trojan uses.
func TestCLPPrunesTheTrojanChannel(t *testing.T) {
	ortlib.Init(t)
	for _, tc := range []struct {
		name string
		net  *testenc.Net
		want bool
	}{{"trojan", testenc.Trojan(5), true}, {"clean", testenc.Clean(5), false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			enc := filepath.Join(dir, "enc.onnx")
			tc.net.Model().Save(enc)
			in := synth.EmbeddedImages(t, embed.New(), enc, 40, testenc.Size, 4)
			defer in.Release()
			out := plugin.NewTables()
			defer out.Release()
			params, _ := json.Marshal(map[string]any{"encoder": enc, "export": filepath.Join(dir, "pruned.onnx")})
			m, err := plugin.Local(clp.New()).Run(context.Background(), params, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			masked := strings.Join(toStrings(m["masked"]), " ")
			got := strings.Contains(masked, "stage2:0") && strings.Contains(masked, "stage3:0")
			if got != tc.want {
				t.Errorf("masked %q: trojan channel pruned %v, want %v", masked, got, tc.want)
			}
			if rows := out.Get("features").Rows(); rows != 40 {
				t.Errorf("%d feature rows, want 40", rows)
			}
		})
	}
}

func toStrings(v any) []string {
	var out []string
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		for _, s := range x {
			out = append(out, s.(string))
		}
	}
	return out
}
