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
	"github.com/tcore-dev/tcore/internal/badinput"
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
		manifest, err = testplugin.Setup(dir, testplugin.Binary{Spec: stats.New().Spec(), Package: "github.com/tcore-dev/tcore/stages/stats/cmd/tcore-stats"},
			testplugin.EchoBinary, testplugin.Garbage)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

func dataset(t *testing.T, badRow int) string {
	labels := make([]int32, 12)
	for i := range labels {
		labels[i] = int32(i % 4)
	}
	return labelled(t, badRow, labels...)
}

// labelled writes a Parquet dataset of 5x5 images with these labels; the
// image of row badRow does not decode.
func labelled(t *testing.T, badRow int, labels ...int32) string {
	s := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary}, {Name: "label", Type: arrow.PrimitiveTypes.Int32}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	for i, l := range labels {
		img := tabletest.PNG(5, 5, uint64(i))
		if i == badRow {
			img = []byte{0xff, 0xd8, 0, 0}
		}
		b.Field(0).(*array.BinaryBuilder).Append(img)
		b.Field(1).(*array.Int32Builder).Append(l)
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
	far := labelled(t, -1, 0, 1, 2, 3, 0, 1, 2, 3, 1000000, 0, 1, 2)
	gap := labelled(t, -1, 0, 1, 2, 3, 0, 15, 2, 3, 0, 1, 2, 3)
	negative := labelled(t, -1, 0, 1, 2, -3, 0, 1, 2, 3)
	specs := t.TempDir()
	offImage, farTarget := filepath.Join(specs, "off.json"), filepath.Join(specs, "target.json")
	os.WriteFile(offImage, []byte(`{"target": 0, "trigger": {"kind": "patch", "size": 3, "row": 4, "col": 0}}`), 0o644)
	os.WriteFile(farTarget, []byte(`{"target": 7, "trigger": {"kind": "patch", "size": 2, "row": 0, "col": 0}}`), 0o644)
	truthRows := func(name string, ids ...int) string {
		var b strings.Builder
		b.WriteString("row,is_poison,orig_label\n")
		for _, id := range ids {
			fmt.Fprintf(&b, "%d,0,%d\n", id, id%4)
		}
		p := filepath.Join(specs, name)
		os.WriteFile(p, []byte(b.String()), 0o644)
		return p
	}
	foreignTruth := truthRows("foreign.csv", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 99)
	shortTruth := truthRows("short.csv", 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11)
	badTruth := filepath.Join(specs, "bad.csv")
	os.WriteFile(badTruth, []byte("row,is_poison,orig_label\n0,0,0\n1,maybe,1\n"), 0o644)
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
		{"a label far beyond the others", []string{"run", "--pipeline", "stats", "--train", far, "--out", "OUT", "--manifest", manifest}, 2, "row 8: label 1000000 leaves 999996 class(es) below it without rows (4, 5, 6, 7, 8, 9, 10, 11, 12, 13 and 999986 more)"},
		{"classes without rows", []string{"run", "--pipeline", "stats", "--train", gap, "--out", "OUT", "--manifest", manifest}, 2, "or declare --classes 16"},
		{"label outside --classes", []string{"run", "--pipeline", "stats", "--train", good, "--classes", "3", "--out", "OUT", "--manifest", manifest}, 2, "row 3: label 3 outside the declared classes 0..2"},
		{"negative label", []string{"run", "--pipeline", "stats", "--train", negative, "--out", "OUT", "--manifest", manifest}, 2, "row 3: label -3 out of range"},
		{"truth of another training set", []string{"run", "--pipeline", "stats", "--train", good, "--truth", foreignTruth, "--out", "OUT", "--manifest", manifest}, 2, "row 12: sample_id 99 is not in --train"},
		{"training rows without truth", []string{"run", "--pipeline", "stats", "--train", good, "--truth", shortTruth, "--out", "OUT", "--manifest", manifest}, 2, "row 7: sample_id 7 has no row in --truth"},
		{"malformed truth", []string{"run", "--pipeline", "stats", "--train", good, "--truth", badTruth, "--out", "OUT", "--manifest", manifest}, 2, "bad.csv"},
		{"demo with an unknown pipeline", []string{"demo", "--pipelines", "none,tcor", "--out", "OUT", "--manifest", manifest}, 2, `demo: --pipelines: bad input: pipeline "tcor"`},
		{"negative --stage-timeout", []string{"run", "--train", good, "--stage-timeout", "-1s", "--out", "OUT"}, 2, "--stage-timeout -1s: want a positive duration"},
		{"negative --classes", []string{"run", "--train", good, "--classes", "-2", "--out", "OUT"}, 2, "--classes -2"},
		{"misspelt built-in pipeline", []string{"run", "--train", good, "--out", "x", "--pipeline", "tcor", "--manifest", manifest}, 2, "neither a built-in (abl,"},
		{"--param on a node the pipeline lacks", []string{"run", "--pipeline", "stats", "--train", good, "--out", "OUT", "--param", "embed.mean=[0.5,0.5,0.5]", "--manifest", manifest}, 2, `parameter "embed.mean": pipeline "stats" has no stage node "embed" (its stage nodes: stats)`},
		{"--param the stage does not have", []string{"run", "--pipeline", "stats", "--train", good, "--out", "OUT", "--param", "stats.colour=red", "--manifest", manifest}, 2, `unknown parameter "colour"`},
		{"--param without a node", []string{"run", "--pipeline", "stats", "--train", good, "--out", "OUT", "--param", "colour=red", "--manifest", manifest}, 2, `parameter "colour": want NODE.PARAM`},
		{"--reuse-from without --in-process", []string{"run", "--pipeline", "stats", "--train", good, "--out", "OUT", "--reuse-from", manifest, "--manifest", manifest}, 2, "--reuse-from needs --in-process"},
		{"--reuse-from a file that is not there", []string{"run", "--pipeline", "stats", "--train", good, "--out", "OUT", "--in-process", "--reuse-from", "/nonexistent/tcore"}, 2, "--reuse-from: open /nonexistent/tcore"},
		{"unknown log level", []string{"run", "--train", good, "--out", "OUT", "--pipeline", "stats", "--log-level", "loud", "--manifest", manifest}, 2, `--log-level "loud": want debug, info, warn or error`},
	}
	table := badinput.New("Bad command lines and inputs of `tcore run`",
		"Generated by `TestExitStatus` (host-example/cmd/tcore): each case's command line, and the last line tcore printed (exit status 2 unless said).")
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
			if code != 0 {
				msg := strings.TrimSpace(errb.String())
				if i := strings.LastIndex(msg, "\n"); i >= 0 {
					msg = msg[i+1:]
				}
				args := strings.ReplaceAll(strings.Join(tc.args, " "), manifest, "manifest.json")
				table.Add(tc.name, "tcore "+args, fmt.Sprintf("%s (exit %d)", msg, code))
			}
		})
	}
	failing := 0
	for _, tc := range cases {
		if tc.code != 0 {
			failing++
		}
	}
	table.Check(t, "../../../docs/bad-inputs/run.md", failing)
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
			if lg, err := os.ReadFile(filepath.Join(dir, "tcore.log")); err != nil || !strings.Contains(string(lg), "training labels checked") {
				t.Errorf("tcore.log: %v, %q: want the run's log", err, lg)
			}
			r, err := arrowio.OpenDataset(t.Context(), filepath.Join(dir, "samples.parquet"), arrowio.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			n := 0
			s := r.Schema()
			if s.NumFields() < 3 || s.Field(1).Name != "train.label" || s.Field(2).Name != "train.row" {
				t.Fatalf("samples.parquet columns %v: want sample_id, train.label, train.row first", s)
			}
			for r.Next() {
				rec := r.Record()
				ids, labels, rows := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Int32), rec.Column(2).(*array.Int32)
				for i := 0; i < int(rec.NumRows()); i++ {
					// dataset: sample_id is the row, and the label row % 4.
					if uint64(rows.Value(i)) != ids.Value(i) || labels.Value(i) != rows.Value(i)%4 {
						t.Fatalf("samples.parquet row %d: sample_id %d, label %d, row %d", n+i, ids.Value(i), labels.Value(i), rows.Value(i))
					}
				}
				n += int(rec.NumRows())
			}
			if n != 12 {
				t.Fatalf("samples.parquet has %d rows, want 12", n)
			}
		})
	}
}

// A declared class count lets classes go without rows; the report says
// what the labels held, and which classes are too small to learn.
func TestDeclaredClasses(t *testing.T) {
	gap := labelled(t, -1, 0, 1, 2, 3, 0, 5, 2, 3, 0, 1, 2, 3)
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--pipeline", "stats", "--train", gap, "--classes", "7", "--out", dir, "--manifest", manifest}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "fewer than 5 training rows") {
		t.Fatalf("no warning about small classes in %q", errb.String())
	}
	// labelled writes 5x5 images: tiny enough to be warned about.
	if !strings.Contains(errb.String(), "12 training image(s) under 8x8 pixels (the smallest 5x5)") {
		t.Fatalf("no warning about tiny images in %q", errb.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Classes struct {
			N        int   `json:"n"`
			Declared bool  `json:"declared"`
			Rows     []int `json:"rows"`
			Small    []int `json:"small"`
			Tiny     int   `json:"tiny_images"`
		} `json:"classes"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	c := rep.Classes
	if c.N != 7 || !c.Declared || fmt.Sprint(c.Rows) != "[3 2 3 3 0 1 0]" || fmt.Sprint(c.Small) != "[0 1 2 3 4 5 6]" || c.Tiny != 12 {
		t.Fatalf("classes %+v", c)
	}
}
