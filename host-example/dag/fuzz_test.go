package dag

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/tcore-dev/tcore/host-example/builtin"
)

// FuzzPipeline: any pipeline JSON is parsed, validated against the
// built-in stages and bound, or refused with an error; never a panic.
func FuzzPipeline(f *testing.F) {
	files, err := filepath.Glob("../pipelines/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no built-in pipelines to seed from (%v)", err)
	}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"name": "x", "nodes": [{"id": "a", "stage": "a"}], "edges": [{"from": "a.b", "to": "a.b"}]}`))
	stages := InProcess(builtin.Stages())
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePipeline(bytes.NewReader(data), "fuzz.json")
		if err != nil {
			return
		}
		_ = p.Inputs()
		if _, err := p.validate(stages); err != nil {
			return
		}
		seed := int64(1)
		_ = p.Bind(stages, Bindings{Encoder: "e.onnx", Device: "cpu", Seed: &seed, Classes: 3, RunDir: "/run"})
	})
}
