package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzBenchConfig: any bench config loads or is refused with an error
// naming the file and field; never a panic. Paths in it resolve next to
// the config, where one data file exists.
func FuzzBenchConfig(f *testing.F) {
	f.Add([]byte(`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet"}]}`))
	f.Add([]byte(`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "pipelines": ["none", "tcore"], "seeds": [1, 2], "scenarios": [{"id": "T2", "half": "tuning", "encoder": "e", "train": "d.parquet", "per_class": 10, "poison": {"trigger": {"kind": "patch", "size": 3, "row": 0, "col": 0}, "target": 1}, "rates": [0.05, 0.1], "eval": {"target": 1, "trigger": {"kind": "patch", "size": 3, "row": 0, "col": 0}}}]}`))
	f.Add([]byte(`{"scenarios": [{"id": "b", "reference": "a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "d.parquet"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "bench.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = loadBenchConfig(path, nil, false)
	})
}
