package dag

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// Observer follows a run. Its methods are called from several goroutines.
type Observer interface {
	NodeStarted(id, stage string)
	NodeProgress(id string, e plugin.Event)
	NodeFinished(id string, res *NodeResult, err error)
}

// Runner executes pipelines.
type Runner struct {
	Stages Provider
	// Observer, when set, follows the run (progress bars).
	Observer Observer
	// Read tunes how input datasets are read.
	Read arrowio.ReadOptions
	// NodeTimeout, when positive, bounds each stage node's run: a stage
	// still running after it is stopped (its plugin process killed) and
	// the run fails naming the node, stage and port.
	NodeTimeout time.Duration
	// Clear names files of the run folder that are removed under its lock
	// before any node runs: what an earlier run wrote from its results,
	// which a failing run must not leave on show.
	Clear []string
}

// Output is one written output port.
type Output struct {
	Path   string `json:"path"` // relative to the run folder
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// NodeResult is what a finished node left.
type NodeResult struct {
	ID      string            `json:"id"`
	Stage   string            `json:"stage,omitempty"`
	Input   string            `json:"input,omitempty"`
	Key     string            `json:"key"`
	Outputs map[string]Output `json:"outputs"`
	Metrics plugin.Metrics    `json:"metrics"`
	Seconds float64           `json:"seconds"`
	Cached  bool              `json:"-"`
}

// Result is a finished run.
type Result struct {
	Dir   string
	Nodes map[string]*NodeResult
	Order []string
}

// OutputPath returns the absolute path of a node's output port.
func (r *Result) OutputPath(node, port string) (string, bool) {
	n, ok := r.Nodes[node]
	if !ok {
		return "", false
	}
	o, ok := n.Outputs[port]
	if !ok {
		return "", false
	}
	return filepath.Join(r.Dir, o.Path), true
}

const nodeFile = "node.json"

// Run executes p in the run folder dir, binding the pipeline's input nodes
// to the given dataset paths. Nodes whose stage fingerprint, parameters and
// input contents match what dir already holds are reused. On failure the
// error names the node (and, through *plugin.Error, the stage and port);
// the failed node leaves no files, finished nodes keep theirs.
func (r *Runner) Run(ctx context.Context, p *Pipeline, inputs map[string]string, dir string) (*Result, error) {
	pl, err := p.validate(r.Stages)
	if err != nil {
		return nil, err
	}
	for _, name := range p.Inputs() {
		if _, ok := inputs[name]; !ok {
			return nil, plugin.BadInputf("pipeline %q needs input %q", p.Name, name)
		}
	}
	for name := range inputs {
		if !contains(p.Inputs(), name) {
			return nil, plugin.BadInputf("pipeline %q has no input %q (its inputs: %v)", p.Name, name, p.Inputs())
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeStale(filepath.Join(dir, "nodes"))
	for _, name := range r.Clear {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	res := &Result{Dir: dir, Nodes: map[string]*NodeResult{}, Order: pl.order}
	caller := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var mu sync.Mutex
	doneCh := map[string]chan struct{}{}
	for _, id := range pl.order {
		doneCh[id] = make(chan struct{})
	}
	var firstErr error
	var wg sync.WaitGroup
	for _, id := range pl.order {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer close(doneCh[id])
			for _, d := range pl.deps(id) {
				select {
				case <-doneCh[d]:
				case <-ctx.Done():
					return
				}
				mu.Lock()
				_, ok := res.Nodes[d]
				mu.Unlock()
				if !ok {
					return // an upstream node failed
				}
			}
			if ctx.Err() != nil {
				return
			}
			mu.Lock()
			upstream := map[string]*NodeResult{}
			for k, v := range res.Nodes {
				upstream[k] = v
			}
			mu.Unlock()
			nr, err := r.runNode(ctx, pl, pl.nodes[id], inputs, upstream, dir)
			if r.Observer != nil {
				r.Observer.NodeFinished(id, nr, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("node %q: %w", id, err)
				}
				cancel()
				return
			}
			res.Nodes[id] = nr
		}(id)
	}
	wg.Wait()
	if firstErr != nil {
		if err := caller.Err(); err != nil && !errors.Is(firstErr, err) {
			// The caller cancelled; what broke afterwards is a consequence.
			return res, fmt.Errorf("%w (%v)", err, firstErr)
		}
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(res.Nodes) != len(pl.order) {
		return res, context.Canceled
	}
	return res, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// runNode runs (or reuses) one node.
func (r *Runner) runNode(ctx context.Context, pl *plan, n *Node, inputs map[string]string, upstream map[string]*NodeResult, dir string) (*NodeResult, error) {
	key, err := r.cacheKey(pl, n, inputs, upstream, dir)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(dir, "nodes", n.ID)
	if nr, ok := loadCached(final, key); ok {
		nr.Cached = true
		return nr, nil
	}
	if r.Observer != nil {
		r.Observer.NodeStarted(n.ID, n.Stage)
	}
	tmp, err := os.MkdirTemp(filepath.Join(dir, "nodes"), "."+n.ID+".tmp-")
	if err != nil {
		return nil, err
	}
	// MkdirTemp makes it 0700; a node folder is as readable as the rest of
	// the run folder.
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	start := time.Now()
	nr := &NodeResult{ID: n.ID, Stage: n.Stage, Input: n.Input, Key: key}
	outs := &fileOutputs{dir: tmp, final: final, runDir: dir, files: map[string]*portFile{}}
	defer outs.abort()
	if n.Input != "" {
		err = r.readInput(ctx, inputs[n.Input], outs, n.ID)
		nr.Metrics = plugin.Metrics{"path": inputs[n.Input]}
	} else {
		var st plugin.Stage
		var stop func()
		st, stop, err = r.Stages.Start(ctx, n.Stage)
		if err != nil {
			return nil, err
		}
		ins := &fileInputs{runDir: dir, in: pl.in[n.ID], upstream: upstream}
		var prog plugin.Progress
		if r.Observer != nil {
			prog = plugin.ProgressFunc(func(e plugin.Event) { r.Observer.NodeProgress(n.ID, e) })
		}
		runCtx, cancelRun := ctx, context.CancelFunc(func() {})
		if r.NodeTimeout > 0 {
			runCtx, cancelRun = context.WithTimeout(ctx, r.NodeTimeout)
		}
		nr.Metrics, err = st.Run(runCtx, n.Params, ins, outs, prog)
		timedOut := err != nil && ctx.Err() == nil && errors.Is(runCtx.Err(), context.DeadlineExceeded)
		cancelRun()
		ins.releaseAll()
		stop()
		if timedOut {
			err = timeoutError(n.Stage, r.NodeTimeout, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := outs.err(); err != nil {
		return nil, err
	}
	nr.Seconds = time.Since(start).Seconds()
	nr.Outputs = outs.results()
	b, _ := json.MarshalIndent(nr, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, nodeFile), b, 0o644); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := os.RemoveAll(final); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	ok = true
	return nr, nil
}

// timeoutError explains a stage stopped by NodeTimeout, keeping the port
// the stage was busy with when it was stopped.
func timeoutError(stage string, after time.Duration, err error) error {
	e := &plugin.Error{Stage: stage, Code: plugin.CodeInternal,
		Msg: fmt.Sprintf("no result after %v (the stage timeout); the stage was stopped", after), Err: context.DeadlineExceeded}
	var pe *plugin.Error
	if errors.As(err, &pe) {
		e.Port = pe.Port
	}
	return e
}

// readInput reads a dataset file into the node's "table" port.
func (r *Runner) readInput(ctx context.Context, path string, outs *fileOutputs, id string) error {
	rr, err := arrowio.OpenDataset(ctx, path, r.Read)
	if err != nil {
		return err
	}
	defer rr.Release()
	w, err := outs.Create(InputPort, rr.Schema())
	if err != nil {
		return err
	}
	var rows int64
	for rr.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.Write(rr.Record()); err != nil {
			return err
		}
		rows += rr.Record().NumRows()
		if r.Observer != nil {
			r.Observer.NodeProgress(id, plugin.Event{Done: rows, Unit: "rows"})
		}
	}
	if err := rr.Err(); err != nil {
		return err
	}
	return w.Close()
}

// cacheKey hashes what determines a node's outputs: the stage's code
// fingerprint and parameters (defaults filled in), or the input dataset's
// content and read options; and the content hashes of its inputs. A
// parameter naming a path inside the run folder dir counts relative to it,
// so a copied or moved run folder still reuses its nodes.
func (r *Runner) cacheKey(pl *plan, n *Node, inputs map[string]string, upstream map[string]*NodeResult, dir string) (string, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	if n.Input != "" {
		sum, err := HashPath(inputs[n.Input])
		if err != nil {
			return "", plugin.BadInputf("input %q: %v", n.Input, err)
		}
		enc.Encode([]any{"input", sum, r.Read.ImageCol, r.Read.LabelCol, r.Read.BatchRows})
	} else {
		params, err := effectiveParams(pl.specs[n.ID], n.Params)
		if err != nil {
			return "", err
		}
		var pm map[string]any
		json.Unmarshal([]byte(params), &pm)
		enc.Encode([]any{"stage", n.Stage, r.Stages.Fingerprint(n.Stage), runRelative(pm, dir)})
		// Files named by parameters (an encoder, a model: their role says
		// so) count by content.
		for _, ps := range pl.specs[n.ID].Params {
			name := ps.Name
			if !ps.Role.IsFile() {
				continue
			}
			if path, ok := pm[name].(string); ok && path != "" {
				sum, err := HashPath(path)
				if err != nil {
					return "", plugin.BadInputf("node %q: parameter %q: %v", n.ID, name, err)
				}
				enc.Encode([]any{name, sum})
			}
		}
		ports := make([]string, 0, len(pl.in[n.ID]))
		for p := range pl.in[n.ID] {
			ports = append(ports, p)
		}
		sort.Strings(ports)
		for _, p := range ports {
			src := pl.in[n.ID][p]
			sn, sp, _ := splitRef(src)
			o, ok := upstream[sn].Outputs[sp]
			if !ok {
				enc.Encode([]any{p, "absent"})
				continue
			}
			enc.Encode([]any{p, o.SHA256})
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runRelative returns the parameters pm as canonical JSON, with the
// strings that name a path inside the run folder dir written as
// "$run/..."; pm itself is left as it is.
func runRelative(pm map[string]any, dir string) string {
	out := make(map[string]any, len(pm))
	prefix := ""
	if abs, err := filepath.Abs(dir); err == nil {
		prefix = abs + string(filepath.Separator)
	}
	for k, v := range pm {
		if s, ok := v.(string); ok && prefix != "" && strings.HasPrefix(s, prefix) {
			v = "$run/" + filepath.ToSlash(s[len(prefix):])
		}
		out[k] = v
	}
	b, _ := json.Marshal(out) // maps marshal with sorted keys
	return string(b)
}

// effectiveParams returns the parameters with defaults filled in, as
// canonical JSON.
func effectiveParams(spec plugin.Spec, given json.RawMessage) (string, error) {
	m := map[string]any{}
	for _, p := range spec.Params {
		var v any
		if err := json.Unmarshal(p.Default, &v); err == nil {
			m[p.Name] = v
		}
	}
	if len(given) > 0 {
		var g map[string]any
		if err := json.Unmarshal(given, &g); err != nil {
			return "", plugin.BadInputf("params: %v", err)
		}
		for k, v := range g {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m) // maps marshal with sorted keys
	return string(b), nil
}

// HashPath returns the sha256 (hex) of a file, or of every file of a
// folder (names and contents): how the cache counts a dataset or a file
// parameter.
func HashPath(path string) (string, error) {
	h := sha256.New()
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(path, p)
		fmt.Fprintf(h, "%s\x00", rel)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(h, f)
		return err
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// loadCached returns the node result kept in dir when its key matches and
// every output file is there with the recorded size and sha256 (a file
// changed after its node finished is never reused: the node runs again).
func loadCached(dir, key string) (*NodeResult, bool) {
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return nil, false
	}
	var nr NodeResult
	if json.Unmarshal(b, &nr) != nil || nr.Key != key {
		return nil, false
	}
	runDir := filepath.Dir(filepath.Dir(dir))
	for _, o := range nr.Outputs {
		path := filepath.Join(runDir, o.Path)
		st, err := os.Stat(path)
		if err != nil || st.Size() != o.Bytes {
			return nil, false
		}
		if sum, err := plugin.FileSHA256(path); err != nil || sum != o.SHA256 {
			return nil, false
		}
	}
	return &nr, true
}

// fileInputs opens a node's inputs from its upstream nodes' files.
type fileInputs struct {
	runDir   string
	in       map[string]string
	upstream map[string]*NodeResult
	mu       sync.Mutex
	opened   []array.RecordReader
}

func (f *fileInputs) Open(port string) (array.RecordReader, error) {
	src, ok := f.in[port]
	if !ok {
		return nil, fmt.Errorf("%w", plugin.ErrNotConnected)
	}
	sn, sp, _ := splitRef(src)
	o, ok := f.upstream[sn].Outputs[sp]
	if !ok {
		return nil, fmt.Errorf("%w: %s wrote nothing", plugin.ErrNotConnected, src)
	}
	r, err := arrowio.OpenDataset(context.Background(), filepath.Join(f.runDir, o.Path), arrowio.ReadOptions{})
	if err != nil {
		return nil, err
	}
	r.Retain()
	f.mu.Lock()
	f.opened = append(f.opened, r)
	f.mu.Unlock()
	return r, nil
}

// Path implements plugin.FileInputs: a plugin process reads the upstream
// node's file itself.
func (f *fileInputs) Path(port string) string {
	src, ok := f.in[port]
	if !ok {
		return ""
	}
	sn, sp, _ := splitRef(src)
	o, ok := f.upstream[sn].Outputs[sp]
	if !ok {
		return ""
	}
	return filepath.Join(f.runDir, o.Path)
}

func (f *fileInputs) releaseAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.opened {
		r.Release()
	}
	f.opened = nil
}

// fileOutputs writes a node's output ports as Arrow IPC files into its
// temporary folder.
type fileOutputs struct {
	dir, final, runDir string
	mu                 sync.Mutex
	files              map[string]*portFile
	e                  error
}

type portFile struct {
	af   *arrowio.AtomicFile
	w    *ipc.FileWriter
	rows int64
	res  *Output
}

func (f *fileOutputs) Create(port string, schema *arrow.Schema) (plugin.RecordWriter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.files[port]; dup {
		return nil, fmt.Errorf("output port %q created twice", port)
	}
	af, err := arrowio.CreateAtomic(filepath.Join(f.dir, port+".arrow"))
	if err != nil {
		return nil, err
	}
	w, err := ipc.NewFileWriter(af, ipc.WithSchema(schema))
	if err != nil {
		af.Abort()
		return nil, err
	}
	pf := &portFile{af: af, w: w}
	f.files[port] = pf
	return &portWriter{f: f, port: port, pf: pf}, nil
}

type portWriter struct {
	f    *fileOutputs
	port string
	pf   *portFile
}

func (w *portWriter) Write(rec arrow.Record) error {
	w.pf.rows += rec.NumRows()
	return w.pf.w.Write(rec)
}

func (w *portWriter) Close() error {
	if w.pf.res != nil {
		return nil
	}
	if err := w.pf.w.Close(); err != nil {
		return err
	}
	rel, _ := filepath.Rel(w.f.runDir, filepath.Join(w.f.final, w.port+".arrow"))
	res := &Output{Path: filepath.ToSlash(rel), Rows: w.pf.rows, Bytes: w.pf.af.Size(), SHA256: w.pf.af.Sum()}
	if err := w.pf.af.Commit(); err != nil {
		return err
	}
	w.f.mu.Lock()
	w.pf.res = res
	w.f.mu.Unlock()
	return nil
}

// ScratchDir implements plugin.ScratchOutputs: a plugin's output files
// go into the node's temporary folder, on the run's disk.
func (f *fileOutputs) ScratchDir() string { return f.dir }

func (f *fileOutputs) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, pf := range f.files {
		if pf.res == nil {
			return fmt.Errorf("output port %q was not closed", p)
		}
	}
	return f.e
}

func (f *fileOutputs) results() map[string]Output {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Output{}
	for p, pf := range f.files {
		if pf.res != nil {
			out[p] = *pf.res
		}
	}
	return out
}

// abort removes every file not committed.
func (f *fileOutputs) abort() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, pf := range f.files {
		if pf.res == nil {
			pf.af.Abort()
		}
	}
}

// IsBadInput reports whether err is the user's to fix (exit status 2).
func IsBadInput(err error) bool {
	return errors.Is(err, plugin.ErrBadInput) || errors.Is(err, arrowio.ErrInvalid)
}
