package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/internal/badinput"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// tcore bench on Go-built data: a scenario poisoned beforehand (two seeds)
// and one by a recipe at two rates whose ASR is read on a triggered test
// set (every row labelled with the target), none and tcore; results per run and
// as mean ± sd over seeds; a second run reuses finished cells and reruns
// the one whose completion marker is missing (an interrupted cell).
func TestBenchRunsAndResumes(t *testing.T) {
	endToEnd(t)
	ortlib.Init(t)
	dir := t.TempDir()
	enc, train, test, trig := scenario(t, dir, testenc.Collapse(5), 66)
	spec := fmt.Sprintf(`{"target": 0, "trigger": {"kind": "patch", "size": %d, "row": %d, "col": %d}}`, testenc.PatchSize, testenc.PatchAt, testenc.PatchAt)
	cfg := fmt.Sprintf(`{
  "test": %q,
  "encoders": {"trojan": %q},
  "pipelines": [%q, "none"],
  "scenarios": [
    {"id": "pre", "half": "tuning", "encoder": "trojan", "train": %q, "truth": %q, "eval": %s, "seeds": [1, 2],
     "params": {"embed.mean": [0, 0, 0], "embed.std": [1, 1, 1]}},
    {"id": "recipe", "encoder": "trojan", "train": %q, "poison": {"trigger": {"kind": "patch", "size": 3, "row": 12, "col": 12}, "target": 0}, "rates": [0.05, 0.1], "triggered": %q}
  ]
}`, test, enc, smallTCore(t, dir), train, filepath.Join(dir, "truth.csv"), spec, train, trig)
	path := filepath.Join(dir, "bench.json")
	os.WriteFile(path, []byte(cfg), 0o644)
	out := filepath.Join(dir, "results")
	bench := func() string {
		var so, se bytes.Buffer
		if code := run([]string{"bench", "--in-process", "--config", path, "--out", out}, &so, &se); code != 0 {
			t.Fatalf("bench: exit %d: %s", code, se.String())
		}
		return so.String()
	}
	first := bench()
	var rows []benchRow
	b, _ := os.ReadFile(filepath.Join(out, "results.json"))
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 8 {
		t.Fatalf("%d rows, want 2 seeds x 2 pipelines + 2 cells x 2 pipelines:\n%s", len(rows), first)
	}
	if rows[0].Pipeline != "none" || rows[1].Pipeline != "none" || rows[0].Seed != 1 || rows[1].Seed != 2 || rows[0].Half != "tuning" {
		t.Errorf("pre: want none with seeds 1 and 2 first: %+v %+v", rows[0], rows[1])
	}
	for i := 4; i < len(rows); i += 2 {
		if rows[i].Pipeline != "none" || rows[i+1].Pipeline == "none" || rows[i].Scenario != rows[i+1].Scenario {
			t.Errorf("rows %d, %d: %s/%s, %s/%s: want none first in each cell", i, i+1, rows[i].Scenario, rows[i].Pipeline, rows[i+1].Scenario, rows[i+1].Pipeline)
		}
	}
	for i, r := range rows {
		if r.ASR == nil || r.Kept == "" {
			t.Errorf("row %d: no ASR or kept purity: %+v", i, r)
		}
	}
	// the recipe poisons 5% and 10% of the 666 rows (its truth knows only
	// its own poison); none keeps them all
	if rows[4].Kept != "33/666" || rows[6].Kept != "67/666" {
		t.Errorf("none kept %s and %s, want 33/666 and 67/666", rows[4].Kept, rows[6].Kept)
	}
	for _, f := range []string{"results.md", "results.csv"} {
		if b, _ := os.ReadFile(filepath.Join(out, f)); !strings.Contains(string(b), "recipe") {
			t.Errorf("%s lacks the recipe rows", f)
		}
	}
	// two seeds: mean ± sd in the summary table
	if md, _ := os.ReadFile(filepath.Join(out, "results.md")); !strings.Contains(string(md), "| pre | tuning | — | none | 2 |") || !strings.Contains(string(md), "±") {
		t.Errorf("results.md lacks the two-seed summary of pre:\n%s", md)
	}
	// The ASR column says what it was read on, per scenario.
	if md, _ := os.ReadFile(filepath.Join(out, "results.md")); !strings.Contains(string(md), "pre: the trigger of its eval spec") || !strings.Contains(string(md), "recipe: the triggered test set "+filepath.Base(trig)) {
		t.Errorf("results.md does not say what each scenario's ASR was read on:\n%s", md)
	}
	if rows[0].ASRFrom != "eval" || rows[4].ASRFrom != trig {
		t.Errorf("asr_from %q, %q: want eval for pre and the triggered set for recipe", rows[0].ASRFrom, rows[4].ASRFrom)
	}
	// A scenario's params reach its pipelines' nodes (an identity
	// normalisation here: the results stay those of the encoder alone).
	for _, pl := range []string{"none", strings.TrimSuffix(filepath.Base(smallTCore(t, dir)), ".json")} {
		rep, err := report.ReadSummary(filepath.Join(out, "pre", pl, "seed-1"))
		if err != nil {
			t.Fatal(err)
		}
		if pp, _ := rep.Nodes["embed"].Metrics["preprocess"].(string); !strings.Contains(pp, `"mean":[0,0,0]`) {
			t.Errorf("pre / %s: embed ran with preprocess %q, not the scenario's params", pl, pp)
		}
	}
	// An interrupted cell has no completion marker: only it runs again.
	os.Remove(filepath.Join(out, "recipe-0.1", "none", "seed-1", "cell.json"))
	second := bench()
	if n := strings.Count(second, "reused"); n != 7 {
		t.Errorf("second run reused %d cells, want 7:\n%s", n, second)
	}
	// A cell finished by another build of a stage runs again.
	marker := filepath.Join(out, "recipe-0.1", "none", "seed-1", "cell.json")
	var done cellDone
	if b, err := os.ReadFile(marker); err != nil || json.Unmarshal(b, &done) != nil || done.Stages["bootstrap"] == "" {
		t.Fatalf("cell.json %s: %+v (%v): no fingerprint of the bootstrap stage", marker, done, err)
	}
	done.Stages["bootstrap"] += "-old"
	b, _ = json.Marshal(done)
	os.WriteFile(marker, b, 0o644)
	if n := strings.Count(bench(), "reused"); n != 7 {
		t.Errorf("a cell of another stage build: third run reused %d cells, want 7", n)
	}
	b2, _ := os.ReadFile(filepath.Join(out, "results.json"))
	var rows2 []benchRow
	json.Unmarshal(b2, &rows2)
	for i := range rows {
		if *rows[i].ACC != *rows2[i].ACC || rows[i].Kept != rows2[i].Kept {
			t.Errorf("row %d changed on resume: %+v vs %+v", i, rows[i], rows2[i])
		}
	}
	// A scenario whose params changed runs again (its four cells); the
	// other scenario's are reused.
	os.WriteFile(path, []byte(strings.Replace(cfg, `"embed.mean": [0, 0, 0]`, `"embed.mean": [0, 0, 0.25]`, 1)), 0o644)
	if n := strings.Count(bench(), "reused"); n != 4 {
		t.Errorf("pre's params changed: fourth run reused %d cells, want recipe's 4", n)
	}
	b, _ = os.ReadFile(filepath.Join(out, "pre", "none", "seed-1", "report.json"))
	if !strings.Contains(string(b), `\"mean\":[0,0,0.25]`) {
		t.Errorf("pre / none after its params changed: the report does not show the new mean")
	}
}

func TestBenchConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.parquet")
	os.WriteFile(data, []byte("x"), 0o644)
	tests := []struct{ cfg, want string }{
		{`{"test": "d.parquet", "scenarios": [], "bogus": 1}`, "bogus"},
		{`{"encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet"}]}`, "scenarios[0].test"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "half": "tune"}]}`, "scenarios[0].half"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "x", "train": "d.parquet"}]}`, "scenarios[0].encoder"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "nope.parquet"}]}`, "scenarios[0].train"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "eval": {"target": 0, "trigger": {"kind": "patch", "size": 3}}}]}`, "trigger.row"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "poison": {"trigger": {"kind": "sig"}, "rate": 0.1}}]}`, "scenarios[0].poison"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "pipelines": ["nosuch"]}]}`, "scenarios[0].pipelines"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "truth": "d.parquet", "per_class": 100}]}`, "scenarios[0].per_class"},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "pipelines": ["tcore"], "params": {"filter.gate_clases": "planted"}}]}`, `unknown parameter "gate_clases"`},
		{`{"test": "d.parquet", "encoders": {"e": "d.parquet"}, "scenarios": [{"id": "a", "encoder": "e", "train": "d.parquet", "pipelines": ["tcore"], "params": {"filter.gate_classes": "all"}}]}`, `"gate_classes": "all", want one of`},
	}
	table := badinput.New("Bad `tcore bench` configs",
		"Generated by `TestBenchConfigErrorsNameTheField` (host-example/cmd/tcore): each config, and what `tcore bench --config c.json` printed (exit status 2).")
	for _, tc := range tests {
		path := filepath.Join(dir, "c.json")
		os.WriteFile(path, []byte(tc.cfg), 0o644)
		var so, se bytes.Buffer
		if code := run([]string{"bench", "--config", path, "--out", filepath.Join(dir, "o"), "--in-process"}, &so, &se); code != 2 || !strings.Contains(se.String(), tc.want) {
			t.Errorf("%s: exit %d, %q; want 2 and a message naming %s", tc.cfg, code, se.String(), tc.want)
		}
		table.Add(tc.want, tc.cfg, se.String())
	}
	table.Check(t, "../../../docs/bad-inputs/bench.md", len(tests))
}

// TestCommittedBenchConfigsLoad: every bench config in testdata/bench
// passes the checks `tcore bench` makes before its first cell (unknown
// fields, scenario ids, encoders, recipes, pipelines, and the stage
// parameters its params name, against the built-in stages' specs), though
// the files it names (the zoo's encoders, the shared sets) need not exist
// here.
func TestCommittedBenchConfigsLoad(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "bench", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no bench configs found: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c, err := readBenchConfig(path, func(string) bool { return true }, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkBenchParams(path, c, inProcess()); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestBenchOnlyChecksTheSelectedCells: with --only, the files of the
// scenarios left out need not exist yet (a zoo half built), while the
// selected scenarios' files are still checked and a prefix that selects
// nothing is an error.
func TestBenchOnlyChecksTheSelectedCells(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "d.parquet"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "e.onnx"), []byte("x"), 0o644)
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte(`{"test": "d.parquet", "encoders": {"built": "e.onnx", "later": "later.onnx"},
		"scenarios": [{"id": "T1-built", "encoder": "built", "train": "d.parquet"},
		{"id": "T1-later", "encoder": "later", "train": "d.parquet"},
		{"id": "T2-later", "encoder": "built", "train": "later.parquet"}]}`), 0o644)
	tests := []struct {
		only []string
		want string // "" when the config loads
	}{
		{nil, "encoders.later"},
		{[]string{"T1-b"}, ""},
		{[]string{"T1-"}, "encoders.later"},
		{[]string{"T2-"}, "scenarios[2].train"},
		{[]string{"T3-", "x"}, "--only T3-,x"},
	}
	for _, tc := range tests {
		c, err := loadBenchConfig(path, tc.only, false)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("only %q: %v; want the config loaded", tc.only, err)
		case tc.want == "" && len(c.Scenarios) != 3:
			t.Errorf("only %q: %d scenarios; want all 3 kept (the run skips the others)", tc.only, len(c.Scenarios))
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("only %q: error %v; want one naming %s", tc.only, err, tc.want)
		}
	}
}

// TestBenchLedger: a bench with a ledger records each finished run; a
// second bench into an empty results folder reads them from it and runs
// nothing; a row whose stage versions differ stands for nothing (that run
// runs again); a finished cell of another build of the same versions is
// recorded from its folder; another draw of the encoder (another file under
// the same name) matches only with --any-draw; --ledger-only runs nothing
// and lists what the ledger lacks; a malformed ledger line is an error
// naming file and line.
func TestBenchLedger(t *testing.T) {
	endToEnd(t)
	ortlib.Init(t)
	dir := t.TempDir()
	enc, train, test, _ := scenario(t, dir, testenc.Collapse(5), 66)
	spec := fmt.Sprintf(`{"target": 0, "trigger": {"kind": "patch", "size": %d, "row": %d, "col": %d}}`, testenc.PatchSize, testenc.PatchAt, testenc.PatchAt)
	writeCfg := func(seeds string, enc string) string {
		path := filepath.Join(dir, "bench.json")
		os.WriteFile(path, []byte(fmt.Sprintf(`{"test": %q, "encoders": {"trojan": %q}, "pipelines": ["none"], "seeds": %s, "ledger": "ledger.jsonl",
  "scenarios": [{"id": "pre", "half": "tuning", "encoder": "trojan", "train": %q, "truth": %q, "eval": %s}]}`,
			test, enc, seeds, train, filepath.Join(dir, "truth.csv"), spec)), 0o644)
		return path
	}
	cfg := writeCfg("[1, 2]", enc)
	led := filepath.Join(dir, "ledger.jsonl")
	bench := func(out string, extra ...string) string {
		t.Helper()
		var so, se bytes.Buffer
		if code := run(append([]string{"bench", "--in-process", "--config", cfg, "--out", out}, extra...), &so, &se); code != 0 {
			t.Fatalf("bench: exit %d: %s", code, se.String())
		}
		return so.String()
	}
	results := func(out string) []benchRow {
		t.Helper()
		var rows []benchRow
		b, _ := os.ReadFile(filepath.Join(out, "results.json"))
		if err := json.Unmarshal(b, &rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	lines := func() []string {
		b, _ := os.ReadFile(led)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}

	bench(filepath.Join(dir, "a"))
	first := results(filepath.Join(dir, "a"))
	if l := lines(); len(l) != 2 || strings.Contains(l[0], `"dir"`) || !strings.Contains(l[0], `"bootstrap":"`) || !strings.Contains(l[0], `"encoder_sha256":"`) {
		t.Fatalf("ledger after the first bench: want 2 rows with stage versions and no folder:\n%s", strings.Join(l, "\n"))
	}

	// An empty results folder: both runs come from the ledger.
	out := bench(filepath.Join(dir, "b"))
	if n := strings.Count(out, "ledger\n"); n != 2 {
		t.Errorf("second bench read %d runs from the ledger, want 2:\n%s", n, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "b", "pre", "none", "seed-1")); err == nil {
		t.Error("a run read from the ledger left a run folder: it ran")
	}
	for i, r := range results(filepath.Join(dir, "b")) {
		if *r.ACC != *first[i].ACC || *r.ASR != *first[i].ASR || r.Kept != first[i].Kept || !r.Reused {
			t.Errorf("row %d from the ledger: %+v, want the first run's %+v, reused", i, r, first[i])
		}
	}

	// Another draw of the encoder (another file under the same name) runs
	// again, unless --any-draw.
	enc2 := filepath.Join(dir, "enc2.onnx")
	if err := testenc.Collapse(4).Model().Save(enc2); err != nil {
		t.Fatal(err)
	}
	cfg = writeCfg("[1, 2]", enc2)
	if out := bench(filepath.Join(dir, "b2"), "--any-draw", "--ledger-only"); strings.Count(out, "ledger\n") != 2 {
		t.Errorf("--any-draw: want both runs from the ledger's other draw:\n%s", out)
	}
	if out := bench(filepath.Join(dir, "b3"), "--ledger-only"); !strings.Contains(out, "2 not run yet") {
		t.Errorf("another draw of the encoder without --any-draw: want both runs missing:\n%s", out)
	}
	// The ledger's table on any draw needs no encoder file.
	cfg = writeCfg("[1, 2]", filepath.Join(dir, "not-built.onnx"))
	if out := bench(filepath.Join(dir, "b4"), "--any-draw", "--ledger-only"); strings.Count(out, "ledger\n") != 2 {
		t.Errorf("--any-draw --ledger-only without the encoder file: want both runs from the ledger:\n%s", out)
	}
	var so, se bytes.Buffer
	if code := run([]string{"bench", "--in-process", "--config", cfg, "--out", filepath.Join(dir, "b5"), "--ledger-only"}, &so, &se); code != 2 || !strings.Contains(se.String(), "encoders.trojan") {
		t.Errorf("--ledger-only on the exact draw without the encoder file: exit %d, %q; want 2 naming encoders.trojan", code, se.String())
	}
	cfg = writeCfg("[1, 2]", enc)

	// A row under another version of a stage stands for nothing.
	l := lines()
	l[1] = strings.Replace(l[1], `"bootstrap":"`, `"bootstrap":"0.0.0-old+`, 1)
	os.WriteFile(led, []byte(strings.Join(l, "\n")+"\n"), 0o644)
	out = bench(filepath.Join(dir, "c"))
	if strings.Count(out, "ledger\n") != 1 {
		t.Errorf("a row of another bootstrap version: want seed 1 from the ledger and seed 2 run:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "pre", "none", "seed-2", "cell.json")); err != nil {
		t.Errorf("seed 2 did not run again: %v", err)
	}
	if n := len(lines()); n != 3 {
		t.Errorf("ledger has %d rows, want 3 (the stale row stays, the new run is added)", n)
	}

	// A finished cell of another build with the same versions is read
	// from its folder and recorded in a new ledger.
	marker := filepath.Join(dir, "a", "pre", "none", "seed-1", "cell.json")
	var done cellDone
	if b, err := os.ReadFile(marker); err != nil || json.Unmarshal(b, &done) != nil || len(done.Versions) == 0 {
		t.Fatalf("%s: %v: no stage versions in the marker", marker, err)
	}
	for k := range done.Stages {
		done.Stages[k] += "-otherbuild"
	}
	done.Versions = nil // an older marker: the versions are read from the fingerprints
	b, _ := json.Marshal(done)
	os.WriteFile(marker, b, 0o644)
	other := filepath.Join(dir, "other.jsonl")
	out = bench(filepath.Join(dir, "a"), "--ledger", other)
	if strings.Count(out, "reused") != 2 || !strings.Contains(out, "2 added to it") {
		t.Errorf("finished cells of another build, same versions: want both reused and recorded:\n%s", out)
	}

	// --ledger-only runs nothing and lists the runs the ledger lacks.
	cfg = writeCfg("[1, 3]", enc)
	out = bench(filepath.Join(dir, "d"), "--ledger-only")
	if !strings.Contains(out, "not run: pre / none / seed 3") || !strings.Contains(out, "1 not run yet") {
		t.Errorf("--ledger-only: want seed 3 listed as not run:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "d", "pre", "none", "seed-3")); err == nil {
		t.Error("--ledger-only ran seed 3")
	}

	// A malformed ledger line names the file and the line.
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(l[0]+"\n{\"scenario\": \n"), 0o644)
	so.Reset()
	se.Reset()
	if code := run([]string{"bench", "--in-process", "--config", cfg, "--out", filepath.Join(dir, "e"), "--ledger", bad}, &so, &se); code != 2 || !strings.Contains(se.String(), "bad.jsonl: line 2") {
		t.Errorf("malformed ledger: exit %d, %q; want 2 and the file and line", code, se.String())
	}
}

func TestMarkerVersions(t *testing.T) {
	tests := []struct {
		name string
		done cellDone
		want map[string]string
	}{
		{"versions given", cellDone{Stages: map[string]string{"embed": "local+0.3.0+abc"}, Versions: map[string]string{"embed": "0.3.0"}}, map[string]string{"embed": "0.3.0"}},
		{"in-process fingerprint", cellDone{Stages: map[string]string{"filter": "local+0.69.1+0aa4ec"}}, map[string]string{"filter": "0.69.1"}},
		{"plugin fingerprint", cellDone{Stages: map[string]string{"sift": "0.2.0+5f3e"}}, map[string]string{"sift": "0.2.0"}},
	}
	for _, tc := range tests {
		if got := markerVersions(tc.done); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCleanTwins: each cell's accuracy is read against the none runs of
// its clean twin (same encoder and data, no poison): T2 against T0, T3
// against T1, T1 against itself; a cell without a twin shows no change.
func TestCleanTwins(t *testing.T) {
	poison := json.RawMessage(`{"trigger": {"kind": "patch", "size": 3, "row": 0, "col": 0}, "target": 0}`)
	scs := []benchScenario{
		{ID: "T0", Encoder: "clean", Train: "c10", Test: "t"},
		{ID: "T2", Encoder: "clean", Train: "c10", Test: "t", Poison: poison},
		{ID: "T1", Encoder: "z", Train: "c10", Test: "t"},
		{ID: "T3", Encoder: "z", Train: "c10", Test: "t", Poison: poison},
		{ID: "T3-sub", Encoder: "z", Train: "c10", Test: "t", PerClass: 100, Poison: poison},
		{ID: "pre", Encoder: "clean", Train: "c10", Test: "t", Truth: "truth.csv"},
	}
	twins := cleanTwins(scs)
	want := map[string]string{"T0": "T0", "T2": "T0", "T1": "T1", "T3": "T1", "pre": "T0"}
	if !maps.Equal(twins, want) {
		t.Fatalf("twins %v, want %v", twins, want)
	}
	acc := func(v float64) *float64 { return &v }
	r := 0.1
	rows := []benchRow{
		{Scenario: "T0", Pipeline: "none", Seed: 1, ACC: acc(0.80), Twin: "T0"},
		{Scenario: "T0", Pipeline: "none", Seed: 2, ACC: acc(0.82), Twin: "T0"},
		{Scenario: "T2", Rate: &r, Pipeline: "tcore", Seed: 1, ACC: acc(0.80), Twin: "T0"},
		{Scenario: "T1", Pipeline: "none", Seed: 1, ACC: acc(0.70), Twin: "T1"},
		{Scenario: "T1", Pipeline: "tcore", Seed: 1, ACC: acc(0.725), Twin: "T1"},
		{Scenario: "T3-sub", Rate: &r, Pipeline: "tcore", Seed: 1, ACC: acc(0.6)},
	}
	md := benchMarkdown(rows)
	for _, line := range []string{
		"| T0 | — | — | none | 2 | 81.0 ± 1.4 | — |",
		"| T2 | — | 0.1 | tcore | 1 | 80.0 | -1.00 |",
		"| T1 | — | — | none | 1 | 70.0 | — |",
		"| T1 | — | — | tcore | 1 | 72.5 | +2.50 |",
		"| T3-sub | — | 0.1 | tcore | 1 | 60.0 | — |",
	} {
		if !strings.Contains(md, line) {
			t.Errorf("results.md lacks %q:\n%s", line, md)
		}
	}
}

// TestLedgerKeepsEveryWritersRows: two benches that opened the same
// ledger each add a run; the file ends with both (neither rewrites the
// other's row away), and a run already there is not added twice.
func TestLedgerKeepsEveryWritersRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.jsonl")
	a, err := openLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := openLedger(path)
	v := map[string]string{"embed": "0.3.0"}
	id := func(seed int64) runID {
		return runID{Scenario: "s", Pipeline: "none", Seed: seed, Run: fmt.Sprint("run", seed), Recipe: "r", Versions: v}
	}
	for _, w := range []struct {
		l     *ledger
		seed  int64
		added bool
	}{{a, 1, true}, {b, 2, true}, {a, 2, false}, {b, 1, false}} {
		added, err := w.l.record(id(w.seed), benchRow{Scenario: "s", Pipeline: "none", Seed: w.seed, Dir: "/x/y"})
		if err != nil || added != w.added {
			t.Fatalf("seed %d: added %v (%v), want %v", w.seed, added, err, w.added)
		}
	}
	l, err := openLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.rows) != 2 {
		t.Fatalf("%d rows, want 2", len(l.rows))
	}
	for _, seed := range []int64{1, 2} {
		if r, ok := l.find(id(seed), false); !ok || r.Dir != "" {
			t.Errorf("seed %d: found %v, dir %q: want the row, without its folder", seed, ok, r.Dir)
		}
	}
}
