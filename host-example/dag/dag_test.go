package dag_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/stats"
)

var (
	catalog *plugin.Catalog
	binDir  string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "tcore-dag-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		defer plugin.CleanupClients()
		path, err := testplugin.Setup(dir, testplugin.EchoBinary,
			testplugin.Binary{Spec: stats.New().Spec(), Package: "github.com/tcore-dev/tcore/stages/stats/cmd/tcore-stats"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if catalog, err = plugin.LoadCatalog(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = filepath.Join(dir, "bin")
		return m.Run()
	}())
}

// writeDataset writes a Parquet file the way dataset hubs do: image bytes
// and an int64 label, no sample_id. badRow >= 0 gets bytes that are not an
// image.
func writeDataset(t *testing.T, rows, badRow int) string {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "image", Type: arrow.BinaryTypes.Binary},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := 0; i < rows; i++ {
		img := tabletest.PNG(8, 6, uint64(i))
		if i == badRow {
			img = []byte("\x89PNG\r\n\x1a\nthis is not a png")
		}
		b.Field(0).(*array.BinaryBuilder).Append(img)
		b.Field(1).(*array.Int64Builder).Append(int64(i % 3))
	}
	rec := b.NewRecord()
	defer rec.Release()
	rr, _ := array.NewRecordReader(schema, []arrow.Record{rec})
	defer rr.Release()
	path := filepath.Join(t.TempDir(), "train.parquet")
	if _, err := arrowio.WriteParquet(path, rr); err != nil {
		t.Fatal(err)
	}
	return path
}

func pipeline(t *testing.T, js string) *dag.Pipeline {
	t.Helper()
	p, err := dag.ParsePipeline(strings.NewReader(js), "test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const statsPipeline = `{"name": "stats", "nodes": [{"id": "train", "input": "train"}, {"id": "stats", "stage": "stats"}],
 "edges": [{"from": "train.table", "to": "stats.images"}]}`

// recorder is an Observer that keeps event times.
type recorder struct {
	mu       sync.Mutex
	started  map[string]time.Time
	finished map[string]time.Time
	onStart  func(id string)
}

func newRecorder() *recorder {
	return &recorder{started: map[string]time.Time{}, finished: map[string]time.Time{}}
}

func (r *recorder) NodeStarted(id, stage string) {
	r.mu.Lock()
	r.started[id] = time.Now()
	f := r.onStart
	r.mu.Unlock()
	if f != nil {
		f(id)
	}
}
func (r *recorder) NodeProgress(string, plugin.Event) {}
func (r *recorder) NodeFinished(id string, _ *dag.NodeResult, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[id] = time.Now()
}

func TestStatsPipelineAndCache(t *testing.T) {
	data := writeDataset(t, 50, -1)
	dir := t.TempDir()
	r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}}
	res, err := r.Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, dir)
	if err != nil {
		t.Fatal(err)
	}
	st := res.Nodes["stats"]
	if st.Cached || st.Outputs["scores"].Rows != 50 {
		t.Fatalf("stats node: cached=%v rows=%d, want a fresh run over 50 rows", st.Cached, st.Outputs["scores"].Rows)
	}
	classes := st.Metrics["classes"].(map[string]any)
	if classes["0"].(float64) != 17 || classes["1"].(float64) != 17 || classes["2"].(float64) != 16 {
		t.Fatalf("classes = %v, want 17/17/16", classes)
	}
	// The output is a scores/v1 Arrow IPC file in the run folder.
	path, _ := res.OutputPath("stats", "scores")
	rr, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := arrowio.KindOf(rr.Schema()); k != arrowio.KindScores {
		t.Fatalf("kind %s", k)
	}
	rr.Release()

	// Same inputs: everything is reused.
	res2, err := r.Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, dir)
	if err != nil {
		t.Fatal(err)
	}
	for id, n := range res2.Nodes {
		if !n.Cached {
			t.Errorf("node %s ran again, want reuse", id)
		}
	}
	// Changed parameters: the stage runs again, the input node is reused.
	changed := strings.Replace(statsPipeline, `"stage": "stats"}`, `"stage": "stats", "params": {"min_per_class": 2}}`, 1)
	res3, err := r.Run(context.Background(), pipeline(t, changed), map[string]string{"train": data}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !res3.Nodes["train"].Cached || res3.Nodes["stats"].Cached {
		t.Fatalf("train cached=%v stats cached=%v, want true/false", res3.Nodes["train"].Cached, res3.Nodes["stats"].Cached)
	}
	// Changed data: everything runs again.
	res4, err := r.Run(context.Background(), pipeline(t, changed), map[string]string{"train": writeDataset(t, 51, -1)}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res4.Nodes["train"].Cached || res4.Nodes["stats"].Cached || res4.Nodes["stats"].Outputs["scores"].Rows != 51 {
		t.Fatal("changed data was not re-run")
	}
}

func TestIndependentNodesRunInParallel(t *testing.T) {
	data := writeDataset(t, 20, -1)
	rec := newRecorder()
	r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}, Observer: rec}
	p := pipeline(t, `{"name": "two", "nodes": [{"id": "train", "input": "train"}, {"id": "a", "stage": "stats"}, {"id": "b", "stage": "stats"}],
	  "edges": [{"from": "train.table", "to": "a.images"}, {"from": "train.table", "to": "b.images"}]}`)
	if _, err := r.Run(context.Background(), p, map[string]string{"train": data}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if !rec.started["a"].Before(rec.finished["b"]) || !rec.started["b"].Before(rec.finished["a"]) {
		t.Fatalf("a and b did not overlap: a %v..%v, b %v..%v", rec.started["a"], rec.finished["a"], rec.started["b"], rec.finished["b"])
	}
}

// leftovers lists what a node left in the run folder.
func leftovers(t *testing.T, dir, node string) []string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir(filepath.Join(dir, "nodes"))
	for _, e := range entries {
		if e.Name() == node || strings.HasPrefix(e.Name(), "."+node) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestFailedNodeLeavesNoFiles(t *testing.T) {
	for _, mode := range []string{"exit", "panic", "error"} {
		t.Run(mode, func(t *testing.T) {
			data := writeDataset(t, 3000, -1)
			dir := t.TempDir()
			r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}, Read: arrowio.ReadOptions{BatchRows: 100}}
			p := pipeline(t, `{"name": "crash", "nodes": [{"id": "train", "input": "train"},
			  {"id": "echo", "stage": "echo", "params": {"fail": "`+mode+`", "after_batches": 5}}],
			  "edges": [{"from": "train.table", "to": "echo.images"}]}`)
			_, err := r.Run(context.Background(), p, map[string]string{"train": data}, dir)
			var se *plugin.Error
			if !errors.As(err, &se) || se.Stage != "echo" || se.Port != "images" || !strings.Contains(err.Error(), `node "echo"`) {
				t.Fatalf("got %v, want an error naming node echo, stage echo and port images", err)
			}
			if left := leftovers(t, dir, "echo"); len(left) > 0 {
				t.Fatalf("the failed node left %v", left)
			}
			if _, err := os.Stat(filepath.Join(dir, "nodes", "train", "table.arrow")); err != nil {
				t.Fatalf("the finished node's output is gone: %v", err)
			}
		})
	}
}

// pluginPids returns the pids of running processes of the test's plugin
// binaries.
func pluginPids(t *testing.T) []int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	var pids []int
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(exe, binDir+string(os.PathSeparator)) {
			continue
		}
		var pid int
		fmt.Sscanf(strings.Split(p, "/")[2], "%d", &pid)
		pids = append(pids, pid)
	}
	return pids
}

func TestCancelEndsPluginsAndLeavesNoFiles(t *testing.T) {
	data := writeDataset(t, 200, -1)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := newRecorder()
	var seen []int
	rec.onStart = func(id string) {
		if id != "hang" {
			return
		}
		go func() {
			time.Sleep(700 * time.Millisecond)
			seen = pluginPids(t)
			cancel()
		}()
	}
	r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}, Observer: rec, Read: arrowio.ReadOptions{BatchRows: 50}}
	p := pipeline(t, `{"name": "hang", "nodes": [{"id": "train", "input": "train"},
	  {"id": "hang", "stage": "echo", "params": {"fail": "hang", "after_batches": 2}}],
	  "edges": [{"from": "train.table", "to": "hang.images"}]}`)
	_, err := r.Run(ctx, p, map[string]string{"train": data}, dir)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want cancellation", err)
	}
	if len(seen) == 0 {
		t.Fatal("no plugin process was running before the cancel")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, pid := range seen {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.HasPrefix(exe, binDir) {
					left++
				}
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d plugin processes of %v still running after cancel", left, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if left := leftovers(t, dir, "hang"); len(left) > 0 {
		t.Fatalf("the cancelled node left %v", left)
	}
}

func TestBadInputIsNamed(t *testing.T) {
	good := writeDataset(t, 10, -1)
	garbage := filepath.Join(t.TempDir(), "garbage.parquet")
	os.WriteFile(garbage, []byte("PAR1 this is not really parquet PAR1"), 0o644)
	truthFile := filepath.Join(t.TempDir(), "truth.arrow")
	{
		s, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindTruth, 5, 5, 0, 1)
		rr, _ := array.NewRecordReader(s, recs)
		if _, err := arrowio.WriteIPCFile(truthFile, rr); err != nil {
			t.Fatal(err)
		}
		rr.Release()
	}
	cases := []struct {
		name     string
		pipeline string
		data     string
		want     []string
	}{
		{"unknown parameter", strings.Replace(statsPipeline, `"stage": "stats"}`, `"stage": "stats", "params": {"nope": 1}}`, 1), good,
			[]string{`node "stats"`, `unknown parameter "nope"`}},
		{"malformed parquet", statsPipeline, garbage, []string{garbage, "malformed Parquet"}},
		{"image that does not decode", statsPipeline, writeDataset(t, 10, 3), []string{`port "images"`, `row 3`, "sample_id 3", "not a PNG or JPEG"}},
		{"wrong table kind", statsPipeline, truthFile, []string{`port "images"`, "table kind truth/v1, want images/v1"}},
		{"edge between kinds", `{"name": "k", "nodes": [{"id": "train", "input": "train"}, {"id": "a", "stage": "stats"}, {"id": "b", "stage": "stats"}],
		  "edges": [{"from": "train.table", "to": "a.images"}, {"from": "a.scores", "to": "b.images"}]}`, good,
			[]string{"scores/v1 output into a images/v1 input"}},
		{"cycle", `{"name": "c", "nodes": [{"id": "a", "stage": "echo"}, {"id": "b", "stage": "echo"}],
		  "edges": [{"from": "a.images", "to": "b.images"}, {"from": "b.images", "to": "a.images"}]}`, good,
			[]string{"cycle"}},
		{"unknown stage", `{"name": "u", "nodes": [{"id": "a", "stage": "nosuch"}], "edges": []}`, good, []string{`unknown stage "nosuch"`}},
		{"unconnected required input", `{"name": "u", "nodes": [{"id": "train", "input": "train"}, {"id": "a", "stage": "stats"}], "edges": []}`, good,
			[]string{`required input port "images"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := pipeline(t, tc.pipeline)
			dir := t.TempDir()
			r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}}
			inputs := map[string]string{}
			for _, in := range p.Inputs() {
				inputs[in] = tc.data
			}
			_, err := r.Run(context.Background(), p, inputs, dir)
			if err == nil {
				t.Fatal("no error")
			}
			if !dag.IsBadInput(err) {
				t.Errorf("error %v is not marked as bad input", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "nodes"))
			for _, e := range entries {
				if strings.Contains(e.Name(), ".tmp-") {
					t.Errorf("left a temporary folder %s", e.Name())
				}
			}
		})
	}
}

func TestPipelineJSONRejectsUnknownFields(t *testing.T) {
	_, err := dag.ParsePipeline(strings.NewReader(`{"name": "x", "nodes": [], "edgez": []}`), "x.json")
	if err == nil || !strings.Contains(err.Error(), "edgez") || !dag.IsBadInput(err) {
		t.Fatalf("got %v", err)
	}
}

func ExampleRunner() {
	// Run the stats stage in process over a folder of images.
	root, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(root)
	for i, class := range []string{"cat", "cat", "dog"} {
		os.MkdirAll(filepath.Join(root, "data", class), 0o755)
		os.WriteFile(filepath.Join(root, "data", class, fmt.Sprintf("%d.png", i)), tabletest.PNG(4, 4, uint64(i)), 0o644)
	}
	p, _ := dag.ParsePipeline(strings.NewReader(statsPipeline), "stats.json")
	r := &dag.Runner{Stages: dag.InProcess{"stats": stats.New()}}
	res, err := r.Run(context.Background(), p, map[string]string{"train": filepath.Join(root, "data")}, filepath.Join(root, "run"))
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.Marshal(res.Nodes["stats"].Metrics["classes"])
	fmt.Println(string(b))
	// Output: {"0":2,"1":1}
}

// A cached output changed after its node finished (same size, other
// bytes) is not reused: the node runs again and its output is whole again.
// A killed run's temporary node folder is cleaned up by the next run.
func TestCorruptedCacheRunsAgain(t *testing.T) {
	data := writeDataset(t, 40, -1)
	dir := t.TempDir()
	r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}}
	p := pipeline(t, statsPipeline)
	res, err := r.Run(context.Background(), p, map[string]string{"train": data}, dir)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := res.OutputPath("stats", "scores")
	good, _ := os.ReadFile(path)
	bad := append([]byte(nil), good...)
	for i := len(bad) / 2; i < len(bad)/2+64 && i < len(bad); i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "nodes", ".stats.tmp-123")
	os.MkdirAll(stale, 0o755)
	res2, err := r.Run(context.Background(), p, map[string]string{"train": data}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Nodes["stats"].Cached || !res2.Nodes["train"].Cached {
		t.Fatalf("stats cached=%v train cached=%v, want false/true", res2.Nodes["stats"].Cached, res2.Nodes["train"].Cached)
	}
	if again, _ := os.ReadFile(path); string(again) != string(good) {
		t.Fatal("the rerun node's output differs from the first run's")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary node folder left: %v", err)
	}
}

// A second run into a folder that another run holds fails at once, naming
// the holder's PID; once the first is done, the folder is free.
func TestBusyRunFolderIsRefused(t *testing.T) {
	data := writeDataset(t, 40, -1)
	dir := t.TempDir()
	started := make(chan struct{})
	rec := newRecorder()
	var once sync.Once
	rec.onStart = func(id string) { once.Do(func() { close(started) }) }
	slow := pipeline(t, `{"name": "slow", "nodes": [{"id": "train", "input": "train"},
	 {"id": "e", "stage": "echo", "params": {"fail": "hang"}}],
	 "edges": [{"from": "train.table", "to": "e.images"}]}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := (&dag.Runner{Stages: dag.Plugins{Catalog: catalog}, Observer: rec}).Run(ctx, slow, map[string]string{"train": data}, dir)
		done <- err
	}()
	<-started
	start := time.Now()
	_, err := (&dag.Runner{Stages: dag.Plugins{Catalog: catalog}}).Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, dir)
	if !errors.Is(err, dag.ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("PID %d", os.Getpid())) {
		t.Fatalf("second run: %v, want ErrBusy naming PID %d", err, os.Getpid())
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the second run waited %v", time.Since(start))
	}
	cancel()
	<-done
	if _, err := (&dag.Runner{Stages: dag.Plugins{Catalog: catalog}}).Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, dir); err != nil {
		t.Fatalf("after the first run ended: %v", err)
	}
}

// TestCopiedRunFolderIsReused: a parameter naming a file inside the run
// folder (bound from "$run") counts relative to it, so a copy of the run
// folder reuses every node; naming another file there runs the node again.
func TestCopiedRunFolderIsReused(t *testing.T) {
	data := writeDataset(t, 30, -1)
	r := &dag.Runner{Stages: dag.Plugins{Catalog: catalog}}
	run := func(dir, note string) *dag.Result {
		t.Helper()
		p := pipeline(t, `{"name": "note", "nodes": [{"id": "train", "input": "train"},
		  {"id": "echo", "stage": "echo", "params": {"note": "$run/`+note+`"}}],
		  "edges": [{"from": "train.table", "to": "echo.images"}]}`)
		if err := p.Bind(dag.Plugins{Catalog: catalog}, dag.Bindings{RunDir: dir}); err != nil {
			t.Fatal(err)
		}
		res, err := r.Run(context.Background(), p, map[string]string{"train": data}, dir)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := filepath.Join(t.TempDir(), "first")
	if res := run(first, "note.json"); res.Nodes["echo"].Cached {
		t.Fatal("the first run reused a node")
	}
	copied := filepath.Join(t.TempDir(), "copied")
	if err := os.CopyFS(copied, os.DirFS(first)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		note   string
		reused bool
	}{
		{"note.json", true},
		{"other.json", false},
	} {
		res := run(copied, tc.note)
		if got := res.Nodes["echo"].Cached; got != tc.reused {
			t.Errorf("note $run/%s in a copied run folder: echo reused = %v, want %v", tc.note, got, tc.reused)
		}
		if _, err := os.Stat(filepath.Join(copied, tc.note)); err != nil {
			t.Errorf("note $run/%s: %v", tc.note, err)
		}
	}
}

// versioned is a stage under another version.
type versioned struct {
	plugin.Stage
	version string
}

func (v versioned) Spec() plugin.Spec {
	s := v.Stage.Spec()
	s.Version = v.version
	return s
}

// TestInProcessAsReusesAnotherBuildsNodes: a run folder made by an
// in-process run serves InProcessAs naming that run's executable, for
// every stage whose version is unchanged; a new version, or another
// executable, runs the node again.
func TestInProcessAsReusesAnotherBuildsNodes(t *testing.T) {
	data := writeDataset(t, 30, -1)
	first := filepath.Join(t.TempDir(), "first")
	if _, err := (&dag.Runner{Stages: dag.InProcess{"stats": stats.New()}}).Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, first); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err := plugin.FileSHA256(exe)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		stage  plugin.Stage
		sha    string
		reused bool
	}{
		{"the build that made the folder", stats.New(), self, true},
		{"a new version of the stage", versioned{stats.New(), "99.0.0"}, self, false},
		{"another build", stats.New(), strings.Repeat("0", 64), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			if err := os.CopyFS(dir, os.DirFS(first)); err != nil {
				t.Fatal(err)
			}
			r := &dag.Runner{Stages: dag.InProcessAs{InProcess: dag.InProcess{"stats": tc.stage}, SHA256: tc.sha}}
			res, err := r.Run(context.Background(), pipeline(t, statsPipeline), map[string]string{"train": data}, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Nodes["stats"].Cached; got != tc.reused {
				t.Errorf("stats reused = %v, want %v", got, tc.reused)
			}
		})
	}
}
