package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
)

// runners returns the echo stage in process and as a plugin process.
func runners(t *testing.T) map[string]plugin.Stage {
	return map[string]plugin.Stage{
		"local":  plugin.Local(testplugin.Echo{}),
		"plugin": launchEcho(t),
		// Every port's bytes over the gRPC stream, none as files.
		"plugin, streamed": launchEchoWith(t, plugin.LaunchOptions{StreamOnly: true}),
	}
}

// fileInputs serves ports from Arrow IPC files, as a run's node outputs
// are served: a plugin is handed their paths.
type fileInputs map[string]string

func (f fileInputs) Path(port string) string { return f[port] }
func (f fileInputs) Open(port string) (array.RecordReader, error) {
	path, ok := f[port]
	if !ok {
		return nil, plugin.ErrNotConnected
	}
	return arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
}

// asFiles writes every table of in into an Arrow IPC file under dir.
func asFiles(t testing.TB, dir string, in *plugin.Tables, ports ...string) fileInputs {
	t.Helper()
	f := fileInputs{}
	for _, port := range ports {
		tab := in.Get(port)
		path := filepath.Join(dir, port+".arrow")
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := ipc.NewFileWriter(out, ipc.WithSchema(tab.Schema))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range tab.Records {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		out.Close()
		f[port] = path
	}
	return f
}

func assertSameTable(t *testing.T, port string, want, got *plugin.Table) {
	t.Helper()
	if err := tabletest.Diff(want, got); err != nil {
		t.Fatalf("port %s: %v", port, err)
	}
}

func TestRoundTripEveryKind(t *testing.T) {
	cases := []struct {
		name       string
		rows       int
		batch, dim int
	}{
		{"empty", 0, 10, 4},
		{"small", 37, 10, 4},
		{"larger than a frame", 4096, 2048, 256}, // features: 4096*256*4 bytes = 4 MiB
	}
	for rname, st := range runners(t) {
		for _, kind := range arrowio.Kinds {
			for _, tc := range cases {
				for _, files := range []bool{false, true} {
					name := rname + "/" + string(kind) + "/" + tc.name
					if files {
						name += "/input files"
					}
					t.Run(name, func(t *testing.T) {
						mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
						defer mem.AssertSize(t, 0)
						port := strings.TrimSuffix(string(kind), "/v1")
						schema, recs := tabletest.Make(mem, kind, tc.rows, tc.batch, tc.dim, 3)
						in := plugin.NewTables()
						in.Put(port, schema, recs...)
						for _, r := range recs {
							r.Release()
						}
						out := plugin.NewTables()
						var ins plugin.Inputs = in
						if files {
							ins = asFiles(t, t.TempDir(), in, port)
						}
						m, err := st.Run(context.Background(), nil, ins, out, nil)
						if err != nil {
							t.Fatal(err)
						}
						assertSameTable(t, port, in.Get(port), out.Get(port))
						rows := m["rows"].(map[string]any)[port]
						if n, _ := rows.(float64); int(n) != tc.rows {
							t.Errorf("metrics rows got=%v, want=%d", rows, tc.rows)
						}
						in.Release()
						out.Release()
					})
				}
			}
		}
	}
}

// All five ports at once, read in the reverse order of sending, each port
// several frames long: the receiving side must not deadlock.
func TestPortsReadOutOfOrder(t *testing.T) {
	st := launchEcho(t)
	in := plugin.NewTables()
	defer in.Release()
	for _, kind := range arrowio.Kinds {
		s, recs := tabletest.Make(memory.DefaultAllocator, kind, 3000, 500, 512, 9)
		in.Put(strings.TrimSuffix(string(kind), "/v1"), s, recs...)
	}
	out := plugin.NewTables()
	defer out.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := st.Run(ctx, json.RawMessage(`{"reverse": true}`), in, out, nil); err != nil {
		t.Fatal(err)
	}
	for _, kind := range arrowio.Kinds {
		p := strings.TrimSuffix(string(kind), "/v1")
		assertSameTable(t, p, in.Get(p), out.Get(p))
	}
}

func featuresInput(t *testing.T, rows int) *plugin.Tables {
	in := plugin.NewTables()
	s, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindFeatures, rows, 100, 64, 1)
	in.Put("features", s, recs...)
	for _, r := range recs {
		r.Release()
	}
	t.Cleanup(in.Release)
	return in
}

func TestStageErrorsNameStageAndPort(t *testing.T) {
	cases := []struct {
		name     string
		params   string
		input    func(t *testing.T) *plugin.Tables
		code     plugin.Code
		port     string
		contains string
	}{
		{"panic mid-stream", `{"fail": "panic", "after_batches": 2}`, func(t *testing.T) *plugin.Tables { return featuresInput(t, 500) },
			plugin.CodeInternal, "features", "panic: echo: deliberate panic"},
		{"error mid-stream", `{"fail": "error", "after_batches": 2}`, func(t *testing.T) *plugin.Tables { return featuresInput(t, 500) },
			plugin.CodeInternal, "features", "deliberate failure"},
		{"unknown parameter", `{"fial": "panic"}`, func(t *testing.T) *plugin.Tables { return featuresInput(t, 5) },
			plugin.CodeBadInput, "", `unknown parameter "fial"`},
		{"parameter of the wrong type", `{"after_batches": "two"}`, func(t *testing.T) *plugin.Tables { return featuresInput(t, 5) },
			plugin.CodeBadInput, "", `parameter "after_batches"`},
		{"wrong table kind", ``, func(t *testing.T) *plugin.Tables {
			in := plugin.NewTables()
			s, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindTruth, 5, 5, 0, 1)
			in.Put("images", s, recs...) // a truth table on the images port
			t.Cleanup(in.Release)
			return in
		}, plugin.CodeBadInput, "images", "table kind truth/v1, want images/v1"},
		{"duplicate sample_id", ``, func(t *testing.T) *plugin.Tables {
			in := plugin.NewTables()
			s, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindTruth, 5, 5, 0, 1)
			in.Put("truth", s, recs[0], recs[0])
			t.Cleanup(in.Release)
			return in
		}, plugin.CodeBadInput, "truth", "sample_id 0 repeats row 0"},
	}
	for rname, st := range runners(t) {
		for _, tc := range cases {
			t.Run(rname+"/"+tc.name, func(t *testing.T) {
				out := plugin.NewTables()
				defer out.Release()
				_, err := st.Run(context.Background(), json.RawMessage(tc.params), tc.input(t), out, nil)
				var se *plugin.Error
				if !errors.As(err, &se) {
					t.Fatalf("got %v (%T), want *plugin.Error", err, err)
				}
				if se.Stage != "echo" || se.Port != tc.port || se.Code != tc.code || !strings.Contains(se.Msg, tc.contains) {
					t.Fatalf("got stage=%q port=%q code=%v msg=%q; want stage echo, port %q, code %v, msg containing %q",
						se.Stage, se.Port, se.Code, se.Msg, tc.port, tc.code, tc.contains)
				}
				if errors.Is(err, plugin.ErrBadInput) != (tc.code == plugin.CodeBadInput) {
					t.Errorf("errors.Is(err, ErrBadInput)=%v for code %v", !(tc.code == plugin.CodeBadInput), tc.code)
				}
			})
		}
	}
}

func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPluginCrashIsReported(t *testing.T) {
	cl := launchEcho(t)
	pid := cl.Pid()
	out := plugin.NewTables()
	defer out.Release()
	_, err := cl.Run(context.Background(), json.RawMessage(`{"fail": "exit", "after_batches": 2}`), featuresInput(t, 500), out, nil)
	var se *plugin.Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want *plugin.Error", err)
	}
	if se.Stage != "echo" || se.Port != "features" || !strings.Contains(se.Msg, "exited") {
		t.Fatalf("got %q (port %q), want the stage, port features and 'exited'", se.Error(), se.Port)
	}
	waitGone(t, pid)
}

func TestCancelEndsPluginProcess(t *testing.T) {
	c, err := plugin.LoadCatalog(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cl, err := c.Launch(ctx, "echo", plugin.LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid := cl.Pid()
	if pid <= 0 || !alive(pid) {
		t.Fatalf("pid %d is not a running plugin", pid)
	}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		out := plugin.NewTables()
		defer out.Release()
		_, err := cl.Run(ctx, json.RawMessage(`{"fail": "hang"}`), featuresInput(t, 50), out,
			plugin.ProgressFunc(func(plugin.Event) {}))
		done <- err
	}()
	go func() { time.Sleep(300 * time.Millisecond); close(started) }()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want a cancellation", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitGone(t, pid)
}

func TestSecurityRefusals(t *testing.T) {
	dir := t.TempDir()
	c, err := plugin.LoadCatalog(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := c.Entry("echo")
	data, err := os.ReadFile(good.Path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tcore-echo")
	if err := os.WriteFile(tampered, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "started")
	t.Setenv(testplugin.MarkerEnv, marker)

	t.Run("sha256 differs", func(t *testing.T) {
		e := good
		e.Path = tampered // the lock's sha256 is the original binary's
		_, err := plugin.Launch(context.Background(), e, plugin.LaunchOptions{})
		if !errors.Is(err, plugin.ErrChecksum) {
			t.Fatalf("got %v, want ErrChecksum", err)
		}
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			t.Fatal("the tampered binary was started")
		}
	})
	t.Run("no sha256 recorded", func(t *testing.T) {
		e := good
		e.SHA256 = ""
		if _, err := plugin.Launch(context.Background(), e, plugin.LaunchOptions{}); err == nil || !strings.Contains(err.Error(), "no sha256") {
			t.Fatalf("got %v, want a refusal", err)
		}
	})
	t.Run("not in the manifest", func(t *testing.T) {
		_, err := c.Launch(context.Background(), "tcore-echo-evil", plugin.LaunchOptions{})
		if !errors.Is(err, plugin.ErrUnknownStage) {
			t.Fatalf("got %v, want ErrUnknownStage", err)
		}
	})
	t.Run("the lock is for another binary", func(t *testing.T) {
		e := good
		sum, _ := plugin.FileSHA256(tampered)
		e.SHA256 = sum // matches the tampered file, not the started one
		if _, err := plugin.Launch(context.Background(), e, plugin.LaunchOptions{}); !errors.Is(err, plugin.ErrChecksum) {
			t.Fatalf("got %v, want ErrChecksum", err)
		}
	})
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("a refused binary was started")
	}
}

func TestVerifyComparesDescribeWithManifest(t *testing.T) {
	c, err := plugin.LoadCatalog(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Verify(context.Background(), plugin.LaunchOptions{}) {
		if !r.OK {
			t.Fatalf("%s: %v", r.Name, r.Err)
		}
	}
	e, _ := c.Entry("echo")
	for i := range e.Params {
		if e.Params[i].Name == "after_batches" {
			e.Params[i].Default = json.RawMessage(`5`)
		}
	}
	dir := t.TempDir()
	if err := os.Link(e.Path, filepath.Join(dir, "tcore-echo")); err != nil {
		t.Fatal(err)
	}
	e.Binary = "tcore-echo"
	path, err := testplugin.WriteManifest(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := plugin.LoadCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	res := c2.Verify(context.Background(), plugin.LaunchOptions{})
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Err.Error(), "after_batches") {
		t.Fatalf("got %+v, want a params mismatch", res)
	}
}

// failingInputs gives a port whose reader fails after a few batches, as a
// corrupt upstream file does while it streams.
type failingInputs struct{ t *plugin.Tables }

func (f failingInputs) Open(port string) (array.RecordReader, error) {
	r, err := f.t.Open(port)
	if err != nil {
		return nil, err
	}
	return &failAfter{RecordReader: r, left: 3}, nil
}

type failAfter struct {
	array.RecordReader
	left int
	err  error
}

func (f *failAfter) Next() bool {
	if f.left == 0 {
		f.err = errors.New("checksum mismatch in batch 4")
		return false
	}
	f.left--
	return f.RecordReader.Next()
}

func (f *failAfter) Err() error { return f.err }

// An input that fails while it streams ends the run on both sides at once:
// the plugin is not left waiting for the rest of the port, and the error
// names the stage, the port and the reader's reason.
func TestFailingInputEndsBothSides(t *testing.T) {
	for name, st := range runners(t) {
		t.Run(name, func(t *testing.T) {
			in := featuresInput(t, 2000)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			out := plugin.NewTables()
			defer out.Release()
			_, err := st.Run(ctx, json.RawMessage(`{"sink": true}`), failingInputs{in}, out, nil)
			var se *plugin.Error
			if !errors.As(err, &se) || se.Stage != "echo" || se.Port != "features" || !strings.Contains(err.Error(), "checksum mismatch") {
				t.Fatalf("got %v, want an error of stage echo, port features, naming the reader's reason", err)
			}
			if se.Code == plugin.CodeCancelled {
				t.Fatalf("reported as cancelled: %v", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("took %v: a side waited", d)
			}
		})
	}
}

// TestTablesCopyTo: CopyTo writes every port, each with its own rows, to
// other outputs; both sides own their records (released on either side,
// nothing leaks), and a copy of no tables writes nothing.
func TestTablesCopyTo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ports []string
	}{
		{"two ports", []string{"scores", "features"}},
		{"none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			src := plugin.NewTables()
			for i, port := range tc.ports {
				schema, recs := tabletest.Make(mem, arrowio.KindFeatures, 10+i, 4, 3, 3)
				src.Put(port, schema, recs...)
				for _, r := range recs {
					r.Release()
				}
			}
			dst := plugin.NewTables()
			if err := src.CopyTo(dst); err != nil {
				t.Fatal(err)
			}
			for _, port := range tc.ports {
				assertSameTable(t, port, src.Get(port), dst.Get(port))
			}
			src.Release()
			for i, port := range tc.ports {
				if got := dst.Get(port); got == nil || got.Rows() != int64(10+i) {
					t.Errorf("port %s after the source's release: %v", port, got)
				}
			}
			dst.Release()
		})
	}
}
