package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

// ErrChecksum is wrapped by Launch's error when a binary's sha256 differs
// from the one recorded for it; the binary is not started.
var ErrChecksum = errors.New("plugin binary checksum mismatch")

// LaunchOptions tunes Launch.
type LaunchOptions struct {
	// Log receives the plugin's log lines, each tagged with the stage name.
	// The zero value discards them.
	Log zerolog.Logger
	// StartTimeout bounds the plugin's start (default 30 s).
	StartTimeout time.Duration
	// Env is added to the plugin process's environment (KEY=value), e.g.
	// where the ONNX Runtime library is.
	Env []string
	// StreamOnly sends every port's bytes over the gRPC stream. By
	// default, inputs that are files (FileInputs) are handed to the plugin
	// by path, and the plugin writes its outputs into a temporary folder
	// (in ScratchOutputs' folder, or the system's) that the host reads:
	// the plugin runs on this machine, and a file
	// moves features many times faster than gRPC's TLS and framing.
	StreamOnly bool
}

// Client runs a stage in a plugin process. It implements Stage, so a host
// uses it as it uses a local stage. Kill must be called when done (or the
// context given to Launch cancelled); CleanupClients ends every client.
type Client struct {
	name   string
	gp     *goplugin.Client
	stub   stagepb.StageClient
	spec   Spec
	tap    *stderrTap
	pid    int
	stopAF func() bool
	// cancelled is set before the launch context's cancellation kills the
	// process, so that a stream broken by that kill reads as cancellation
	// even when the run's own context has not seen it yet.
	cancelled atomic.Pointer[error]
	exit      *exitWatch
	// files: ports may travel as files (LaunchOptions.StreamOnly unset).
	files bool
}

// exitWatch reads go-plugin's log for the plugin's exit status ("exit
// status 7", "signal: killed"), which the client does not expose otherwise.
type exitWatch struct{ status atomic.Pointer[string] }

func (w *exitWatch) Write(p []byte) (int, error) {
	var line struct {
		Message string `json:"@message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(p, &line) == nil && line.Message == "plugin process exited" && line.Error != "" {
		w.status.Store(&line.Error)
	}
	return len(p), nil
}

// exitStatus is how the plugin process ended, or "" when not known.
func (c *Client) exitStatus() string {
	if c.exit == nil {
		return ""
	}
	if s := c.exit.status.Load(); s != nil {
		return *s
	}
	return ""
}

var _ Stage = (*Client)(nil)

// CleanupClients kills every plugin process this host started. Call it on
// every exit path of a host (go-plugin's Managed clients).
func CleanupClients() { goplugin.CleanupClients() }

// Launch starts the plugin binary of e after checking its sha256 (e.SHA256,
// from the lock file) and returns a connected client. The process is killed
// when ctx is cancelled. The binary must describe itself with e's name and
// version.
func Launch(ctx context.Context, e Entry, opt LaunchOptions) (*Client, error) {
	if e.SHA256 == "" {
		return nil, fmt.Errorf("plugin: stage %q: no sha256 recorded for %s (build the plugins: make plugins)", e.Name, e.Binary)
	}
	sum, err := hex.DecodeString(e.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin: stage %q: malformed sha256 %q in the lock file", e.Name, e.SHA256)
	}
	if opt.StartTimeout == 0 {
		opt.StartTimeout = 30 * time.Second
	}
	tap := &stderrTap{log: opt.Log.With().Str("stage", e.Name).Logger()}
	cmd := exec.Command(e.Path)
	if len(opt.Env) > 0 {
		cmd.Env = append(os.Environ(), opt.Env...)
	}
	setDeathSignal(cmd)
	exit := &exitWatch{}
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          goplugin.PluginSet{pluginName: &grpcPlugin{}},
		Cmd:              cmd,
		SecureConfig:     &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		StartTimeout:     opt.StartTimeout,
		Logger:           hclog.New(&hclog.LoggerOptions{Output: exit, JSONFormat: true, Level: hclog.Error}),
		Stderr:           tap,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize),
			grpc.ForceCodecV2(newFrameCodec()))},
	})
	rpc, err := gp.Client()
	if err != nil {
		gp.Kill()
		if errors.Is(err, goplugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("plugin: stage %q: %s: %w (refused to start it)", e.Name, e.Path, ErrChecksum)
		}
		return nil, fmt.Errorf("plugin: stage %q: starting %s: %w%s", e.Name, e.Path, err, tap.tail())
	}
	raw, err := rpc.Dispense(pluginName)
	if err != nil {
		gp.Kill()
		return nil, fmt.Errorf("plugin: stage %q: %w", e.Name, err)
	}
	c := &Client{name: e.Name, gp: gp, stub: raw.(stagepb.StageClient), tap: tap, exit: exit, files: !opt.StreamOnly}
	if rc := gp.ReattachConfig(); rc != nil {
		c.pid = rc.Pid
	}
	c.stopAF = context.AfterFunc(ctx, func() {
		err := context.Cause(ctx)
		c.cancelled.Store(&err)
		gp.Kill()
	})
	ps, err := c.stub.Describe(ctx, &stagepb.DescribeRequest{})
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("plugin: stage %q: Describe: %w", e.Name, err)
	}
	c.spec = specFromProto(ps)
	if c.spec.Name != e.Name || c.spec.Version != e.Version {
		c.Kill()
		return nil, fmt.Errorf("plugin: %s describes itself as %s %s, the manifest says %s %s",
			e.Path, c.spec.Name, c.spec.Version, e.Name, e.Version)
	}
	return c, nil
}

// Spec returns the spec the plugin described.
func (c *Client) Spec() Spec { return c.spec }

// Pid returns the plugin process id.
func (c *Client) Pid() int { return c.pid }

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.gp.Exited() }

// Kill ends the plugin process (gracefully, then by force).
func (c *Client) Kill() {
	if c.stopAF != nil {
		c.stopAF()
	}
	c.gp.Kill()
}

// Run runs the stage in the plugin: it sends params and every connected
// input port, writes what the plugin sends back to out (validating the table
// kinds and rows), passes progress on and returns the plugin's metrics. On
// error nothing more is written to out and the error is an *Error naming
// the stage and, where one is involved, the port.
func (c *Client) Run(ctx context.Context, params json.RawMessage, in Inputs, out Outputs, progress Progress) (Metrics, error) {
	spec := c.spec
	fail := func(port string, code Code, format string, args ...any) error {
		return &Error{Stage: spec.Name, Port: port, Code: code, Msg: fmt.Sprintf(format, args...)}
	}
	if err := CheckParams(spec, params); err != nil {
		return nil, classify(spec.Name, err, ctx)
	}
	if progress == nil {
		progress = ProgressFunc(func(Event) {})
	}
	// Open every connected input and check its table kind before anything
	// is sent.
	type inPort struct {
		name string
		r    array.RecordReader
	}
	var inputs []inPort
	defer func() {
		for _, p := range inputs {
			p.r.Release()
		}
	}()
	for _, ps := range spec.Inputs {
		r, err := in.Open(ps.Name)
		if errors.Is(err, ErrNotConnected) {
			if ps.Optional {
				continue
			}
			return nil, fail(ps.Name, CodeBadInput, "required input port is not connected")
		}
		if err != nil {
			return nil, classify(spec.Name, PortError(ps.Name, err), ctx)
		}
		inputs = append(inputs, inPort{ps.Name, r})
		if err := arrowio.ValidateSchema(r.Schema(), ps.Kind); err != nil {
			return nil, classify(spec.Name, PortError(ps.Name, err), ctx)
		}
	}

	c.tap.readingPort() // forget an earlier run's
	// Inputs that are files go by path; the rest as frames.
	files := map[string]string{}
	var names []string
	streamed := inputs[:0:0]
	for _, p := range inputs {
		if fi, ok := in.(FileInputs); ok && c.files {
			if path := fi.Path(p.name); path != "" {
				if abs, err := filepath.Abs(path); err == nil {
					files[p.name] = abs
					continue
				}
			}
		}
		streamed, names = append(streamed, p), append(names, p.name)
	}
	outDir := ""
	if c.files {
		base := ""
		if so, ok := out.(ScratchOutputs); ok {
			base = so.ScratchDir()
		}
		var err error
		if outDir, err = os.MkdirTemp(base, ".plugin-"+spec.Name+"-"); err != nil {
			return nil, fail("", CodeInternal, "a folder for the plugin's outputs: %v", err)
		}
		defer os.RemoveAll(outDir)
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.stub.Run(ctx)
	if err != nil {
		return nil, c.crashed(ctx, "", err)
	}
	if err := stream.Send(&stagepb.HostMessage{Msg: &stagepb.HostMessage_Start{Start: &stagepb.Start{
		ParamsJson: string(params), Ports: names, Files: files, OutDir: outDir}}}); err != nil {
		return nil, c.crashed(ctx, "", err)
	}

	// Send the inputs, one port after the other, while receiving.
	var sendMu sync.Mutex
	sending := ""
	sendErr := make(chan error, 1)
	sendDone := make(chan struct{})
	// The inputs are released by an earlier defer: stop the sender (the
	// cancelled stream fails its next Send) and wait for it first.
	defer func() {
		cancel()
		<-sendDone
	}()
	go func() {
		defer close(sendDone)
		frame := func(port string, data []byte, eof bool) error {
			if err := stream.Send(&stagepb.HostMessage{Msg: &stagepb.HostMessage_Frame{Frame: &stagepb.Frame{Port: port, Data: data, Eof: eof}}}); err != nil {
				return &sendError{err}
			}
			return nil
		}
		for _, p := range streamed {
			sendMu.Lock()
			sending = p.name
			sendMu.Unlock()
			fw := newFrameWriter(p.name, frame)
			w := ipc.NewWriter(fw, ipc.WithSchema(p.r.Schema()))
			var err error
			for err == nil && p.r.Next() {
				err = w.Write(p.r.Record())
			}
			if err == nil {
				err = p.r.Err()
			}
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = fw.Close()
			}
			if err != nil {
				sendErr <- PortError(p.name, err)
				// The plugin waits for the rest of the port: end the
				// stream so that neither side hangs.
				var send *sendError
				if !errors.As(err, &send) {
					cancel()
				}
				return
			}
		}
		sendMu.Lock()
		sending = ""
		sendMu.Unlock()
		if err := stream.CloseSend(); err != nil {
			sendErr <- &sendError{err}
			return
		}
		sendErr <- nil
	}()

	rx := newOutputSink(ctx, spec, out)
	rx.dir = outDir
	defer rx.abort(errors.New("run ended"))
	var active string // the port the plugin said it works on
	lastPort := func() string {
		if active != "" {
			return active
		}
		if p := rx.lastPort(); p != "" {
			return p
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		return sending
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			// The stream broke: the input side may know why.
			select {
			case se := <-sendErr:
				// An input that failed to read is the cause; a Send that
				// failed is a consequence of the broken stream.
				var send *sendError
				if se != nil && !errors.As(se, &send) {
					return nil, classify(spec.Name, se, parent)
				}
			default:
			}
			return nil, c.crashed(ctx, lastPort(), err)
		}
		switch msg := m.Msg.(type) {
		case *stagepb.PluginMessage_Progress:
			p := msg.Progress
			if p.Port != "" {
				active = p.Port
				if p.Done == 0 && p.Total == 0 && p.Message == "" {
					continue
				}
			}
			progress.Report(Event{Done: p.Done, Total: p.Total, Unit: p.Unit, Message: p.Message})
		case *stagepb.PluginMessage_Frame:
			f := msg.Frame
			var err error
			if f.Path != "" {
				err = rx.pushFile(f.Port, f.Path)
			} else {
				err = rx.push(f.Port, f.Data, f.Eof)
			}
			if err != nil {
				return nil, classify(spec.Name, err, ctx)
			}
		case *stagepb.PluginMessage_Error:
			e := msg.Error
			return nil, &Error{Stage: spec.Name, Port: e.Port, Code: codeFromProto(e.Code), Msg: e.Message}
		case *stagepb.PluginMessage_Done:
			if err := rx.wait(); err != nil {
				return nil, classify(spec.Name, err, ctx)
			}
			var metrics Metrics
			if err := json.Unmarshal([]byte(msg.Done.MetricsJson), &metrics); err != nil {
				return nil, fail("", CodeInternal, "malformed metrics from plugin: %v", err)
			}
			return metrics, nil
		default:
			return nil, fail(lastPort(), CodeInternal, "malformed message from plugin")
		}
	}
}

// sendError is a frame the host could not send: the stream broke, and
// the stream's own error says why.
type sendError struct{ err error }

func (e *sendError) Error() string { return "sending to the plugin: " + e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// crashed explains a broken stream: cancelled, or the plugin died.
func (c *Client) crashed(ctx context.Context, port string, err error) error {
	// A cancelled run is no port's fault: the port busy at the time is
	// named only when a deadline ran out (where the stage was stuck).
	if ctx.Err() != nil {
		e := &Error{Stage: c.name, Code: CodeCancelled, Msg: "run cancelled", Err: ctx.Err()}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.Port = port
		}
		return e
	}
	if cause := c.cancelled.Load(); cause != nil {
		return &Error{Stage: c.name, Code: CodeCancelled, Msg: "run cancelled", Err: *cause}
	}
	// Give the process a moment to be reaped so that Exited is accurate.
	for i := 0; i < 20 && !c.gp.Exited(); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if port == "" {
		// A plugin that read its inputs from files may have died before
		// its progress message naming the port left.
		port = c.tap.readingPort()
	}
	what := "plugin connection broke"
	if c.gp.Exited() {
		what = "plugin process exited"
		if st := c.exitStatus(); st != "" {
			what += " (" + st + ")"
		}
	}
	msg := fmt.Sprintf("%s while streaming: %v%s", what, err, c.tap.tail())
	if port == "" {
		msg = fmt.Sprintf("%s: %v%s", what, err, c.tap.tail())
	}
	return &Error{Stage: c.name, Port: port, Code: CodeInternal, Msg: msg}
}

// outputSink turns the frames of each output port into records written to
// out, one goroutine per port, validating kinds and rows.
type outputSink struct {
	ctx   context.Context
	spec  Spec
	out   Outputs
	mu    sync.Mutex
	pipes map[string]*io.PipeWriter
	wg    sync.WaitGroup
	errs  []error
	last  string
	// dir is the folder the plugin may write output files into ("": none).
	dir string
}

func newOutputSink(ctx context.Context, spec Spec, out Outputs) *outputSink {
	return &outputSink{ctx: ctx, spec: spec, out: out, pipes: map[string]*io.PipeWriter{}}
}

func (s *outputSink) lastPort() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *outputSink) push(port string, data []byte, eof bool) error {
	s.mu.Lock()
	s.last = port
	pw, ok := s.pipes[port]
	if !ok {
		ps, known := s.spec.Port(port, true)
		if !known {
			s.mu.Unlock()
			return PortError(port, fmt.Errorf("plugin sent frames for an undeclared output port"))
		}
		pr, w := io.Pipe()
		pw = w
		s.pipes[port] = pw
		s.wg.Add(1)
		go s.consume(ps, pr, func() (array.RecordReader, error) {
			r, err := ipc.NewReader(pr, ipc.WithAllocator(readAlloc))
			if err != nil {
				return nil, fmt.Errorf("malformed Arrow IPC stream from plugin: %w", err)
			}
			return r, nil
		})
	}
	s.mu.Unlock()
	if len(data) > 0 {
		if _, err := pw.Write(data); err != nil {
			return s.firstErr(err)
		}
	}
	if eof {
		pw.Close()
	}
	return nil
}

// pushFile takes a whole output port from a file the plugin wrote into
// the sink's folder; it is read (and validated) as frames are.
func (s *outputSink) pushFile(port, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = port
	ps, known := s.spec.Port(port, true)
	if !known {
		return PortError(port, fmt.Errorf("plugin sent a file for an undeclared output port"))
	}
	if _, dup := s.pipes[port]; dup {
		return PortError(port, fmt.Errorf("plugin sent the output port twice"))
	}
	if s.dir == "" || filepath.Dir(path) != s.dir {
		return PortError(port, fmt.Errorf("plugin sent a file outside the folder it was given: %s", path))
	}
	pr, pw := io.Pipe() // the port's entry in pipes; nothing is written to it
	s.pipes[port] = pw
	s.wg.Add(1)
	go s.consume(ps, pr, func() (array.RecordReader, error) {
		return arrowio.OpenIPC(path, readAlloc)
	})
	return nil
}

func (s *outputSink) firstErr(fallback error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return s.errs[0]
	}
	return fallback
}

func (s *outputSink) consume(ps PortSpec, pr *io.PipeReader, open func() (array.RecordReader, error)) {
	defer s.wg.Done()
	err := func() error {
		r, err := open()
		if err != nil {
			return err
		}
		defer r.Release()
		if err := arrowio.ValidateSchema(r.Schema(), ps.Kind); err != nil {
			return fmt.Errorf("plugin sent the wrong table: %w", err)
		}
		w, err := s.out.Create(ps.Name, r.Schema())
		if err != nil {
			return err
		}
		v := arrowio.NewValidator(ps.Kind, "output port "+ps.Name)
		for r.Next() {
			if err := v.Check(r.Record()); err != nil {
				return err
			}
			if err := w.Write(r.Record()); err != nil {
				return err
			}
		}
		if err := r.Err(); err != nil {
			return fmt.Errorf("malformed Arrow IPC stream from plugin: %w", err)
		}
		return w.Close()
	}()
	if err != nil {
		// What a plugin sends wrong is the plugin's fault, not the
		// user's input: an internal error, though the check is the one
		// that calls bad rows of a dataset bad input. It is recorded
		// before the pipe closes: the sender's failed write then finds
		// it (firstErr) instead of the bare error, whichever goroutine
		// runs first.
		perr := &Error{Port: ps.Name, Code: CodeInternal, Msg: err.Error()}
		s.mu.Lock()
		s.errs = append(s.errs, perr)
		s.mu.Unlock()
		pr.CloseWithError(perr)
	}
}

// wait waits for every port's consumer and returns the first error. A
// required port that never came is an error.
func (s *outputSink) wait() error {
	s.mu.Lock()
	for p, pw := range s.pipes {
		_ = p
		pw.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.firstErr(nil); err != nil {
		return err
	}
	for _, p := range s.spec.Outputs {
		if _, ok := s.pipes[p.Name]; !ok && !p.Optional {
			return PortError(p.Name, fmt.Errorf("plugin did not send required output port"))
		}
	}
	return nil
}

// abort ends every consumer with err (no-op once they finished).
func (s *outputSink) abort(err error) {
	s.mu.Lock()
	for _, pw := range s.pipes {
		pw.CloseWithError(err)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// stderrTap receives the plugin's stderr lines: zerolog JSON lines are
// logged with the stage's name, other lines are logged raw; the last raw
// lines are kept to explain a crash.
type stderrTap struct {
	log   zerolog.Logger
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []string
	panic []string
	// reading is the input port the plugin last said it opened from its
	// file (readingFileMsg): written to stderr before the stage reads
	// it, the line outlives a crash that a progress message on the
	// stream may not.
	reading string
}

// readingFileMsg is the plugin's log message when it opens an input port
// from the file the host handed over.
const readingFileMsg = "reading input port from its file"

// readingPort returns the input port the plugin last opened from its file
// and forgets it.
func (t *stderrTap) readingPort() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.reading
	t.reading = ""
	return p
}

func (t *stderrTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	for {
		line, err := t.buf.ReadString('\n')
		if err != nil {
			t.buf.Reset()
			t.buf.WriteString(line)
			break
		}
		t.line(strings.TrimRight(line, "\r\n"))
	}
	return len(p), nil
}

func (t *stderrTap) line(line string) {
	if line == "" {
		return
	}
	var m map[string]any
	if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &m) == nil {
		// zerolog lines (level, message) from stages; hclog lines (@level,
		// @message) from go-plugin's own plumbing.
		str := func(keys ...string) string {
			for _, k := range keys {
				if v, ok := m[k].(string); ok {
					return v
				}
			}
			return ""
		}
		if str("message") == readingFileMsg {
			t.reading = str("port")
		}
		lvl, err := zerolog.ParseLevel(str("level", "@level"))
		if err != nil || lvl == zerolog.NoLevel {
			lvl = zerolog.InfoLevel
		}
		ev := t.log.WithLevel(lvl)
		for k, v := range m {
			switch k {
			case "level", "message", "time", "stage", "@level", "@message", "@timestamp", "@module":
			default:
				ev = ev.Interface(k, v)
			}
		}
		ev.Msg(str("message", "@message"))
		return
	}
	if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
		t.panic = append(t.panic, line)
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > 20 {
		t.lines = t.lines[len(t.lines)-20:]
	}
	t.log.Warn().Msg(line)
}

// tail returns a suffix for error messages: the panic line, else the last
// raw stderr line.
func (t *stderrTap) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.panic) > 0 {
		return " (" + t.panic[0] + ")"
	}
	if len(t.lines) > 0 {
		return " (stderr: " + t.lines[len(t.lines)-1] + ")"
	}
	return ""
}
