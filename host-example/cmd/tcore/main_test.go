package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/stats"
)

var manifest string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "tcore-cli-test-")
		if err != nil {
			return 1
		}
		defer os.RemoveAll(dir)
		defer plugin.CleanupClients()
		manifest, err = testplugin.Setup(dir, testplugin.Binary{Spec: stats.New().Spec(), Package: "github.com/tcore-dev/tcore/stages/stats/cmd/tcore-stats"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

func dataset(t *testing.T, badRow int) string {
	s := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary}, {Name: "label", Type: arrow.PrimitiveTypes.Int8}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	for i := 0; i < 12; i++ {
		img := tabletest.PNG(5, 5, uint64(i))
		if i == badRow {
			img = []byte{0xff, 0xd8, 0, 0}
		}
		b.Field(0).(*array.BinaryBuilder).Append(img)
		b.Field(1).(*array.Int8Builder).Append(int8(i % 4))
	}
	rec := b.NewRecord()
	defer rec.Release()
	rr, _ := array.NewRecordReader(s, []arrow.Record{rec})
	defer rr.Release()
	p := filepath.Join(t.TempDir(), "d.parquet")
	if _, err := arrowio.WriteParquet(p, rr); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitStatus(t *testing.T) {
	good, bad := dataset(t, -1), dataset(t, 7)
	specs := t.TempDir()
	offImage, farTarget := filepath.Join(specs, "off.json"), filepath.Join(specs, "target.json")
	os.WriteFile(offImage, []byte(`{"target": 0, "trigger": {"kind": "patch", "size": 3, "row": 4, "col": 0}}`), 0o644)
	os.WriteFile(farTarget, []byte(`{"target": 7, "trigger": {"kind": "patch", "size": 2, "row": 0, "col": 0}}`), 0o644)
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, 2, "usage"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"missing --train", []string{"run", "--out", "x"}, 2, "--train and --out are required"},
		{"unknown flag", []string{"run", "--colour", "red"}, 2, "colour"},
		{"bad device", []string{"run", "--train", good, "--out", "x", "--device", "tpu"}, 2, `--device "tpu"`},
		{"missing data file", []string{"run", "--train", "/nonexistent.parquet", "--out", "x", "--manifest", manifest}, 2, "--train"},
		{"tcore needs an encoder", []string{"run", "--train", good, "--out", "x", "--in-process"}, 2, "needs --encoder"},
		{"unknown pipeline file", []string{"run", "--train", good, "--out", "x", "--pipeline", "nosuch.json", "--manifest", manifest}, 2, "nosuch.json"},
		{"image that does not decode", []string{"run", "--pipeline", "stats", "--train", bad, "--out", "OUT", "--manifest", manifest}, 2, "row 7"},
		{"plugins verify", []string{"plugins", "verify", "--manifest", manifest}, 0, ""},
		{"plugins help", []string{"plugins", "--help"}, 0, ""},
		{"trigger off the test images", []string{"run", "--pipeline", "stats", "--train", good, "--test", good, "--eval", offImage, "--out", "OUT", "--manifest", manifest}, 2, "does not fit a 5x5 image"},
		{"target not among the test labels", []string{"run", "--pipeline", "stats", "--train", good, "--test", good, "--eval", farTarget, "--out", "OUT", "--manifest", manifest}, 2, "target 7, but the labels of"},
		{"misspelt built-in pipeline", []string{"run", "--train", good, "--out", "x", "--pipeline", "tcor", "--manifest", manifest}, 2, "neither a built-in (abl,"},
		{"unknown log level", []string{"run", "--train", good, "--out", "OUT", "--pipeline", "stats", "--log-level", "loud", "--manifest", manifest}, 2, `--log-level "loud": want debug, info, warn or error`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i, a := range tc.args {
				if a == "OUT" {
					tc.args[i] = t.TempDir()
				}
			}
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.code, tc.stderr)
			}
		})
	}
}

func TestRunWritesReportAndSamples(t *testing.T) {
	for _, mode := range []string{"plugin", "in-process"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"run", "--pipeline", "stats", "--train", dataset(t, -1), "--out", dir, "--manifest", manifest, "--seed", "7"}
			if mode == "in-process" {
				args = append(args, "--in-process")
			}
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var rep map[string]any
			b, err := os.ReadFile(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			json.Unmarshal(b, &rep)
			if rep["pipeline"] != "stats" || rep["seed"].(float64) != 7 || rep["asr"] != nil {
				t.Fatalf("report %v", rep)
			}
			if _, ok := rep["timings_s"].(map[string]any)["stats"]; !ok {
				t.Fatalf("no timing for stats: %v", rep["timings_s"])
			}
			r, err := arrowio.OpenDataset(t.Context(), filepath.Join(dir, "samples.parquet"), arrowio.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			n := 0
			for r.Next() {
				n += int(r.Record().NumRows())
			}
			if n != 12 {
				t.Fatalf("samples.parquet has %d rows, want 12", n)
			}
		})
	}
}
