package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

// Handshake is the go-plugin handshake every tcore plugin and host share.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "TCORE_STAGE_PLUGIN",
	MagicCookieValue: "a1c0f7e2-trusted-core-stage",
}

// ProtocolVersion is the version of the plugin protocol.
const ProtocolVersion = 1

// pluginName is the name under which the stage is dispensed.
const pluginName = "stage"

// Serve serves s as a plugin process over gRPC; it does not return while the
// host is connected. Call it from the plugin binary's main and print nothing
// on stdout before it. Logs are zerolog JSON lines on stderr, available to
// the stage through zerolog.Ctx(ctx).
func Serve(s Stage) {
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	go watchParent(log)
	if path := os.Getenv(ProfileEnv); path != "" {
		go profile(path, log)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{stage: s, log: log}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
				grpc.ForceServerCodecV2(newFrameCodec()))
			return grpc.NewServer(opts...)
		},
		Logger: nil,
	})
}

// ProfileEnv names an environment variable: when it is set to a path, a
// plugin writes a CPU profile of its first 4 seconds there (suffixed with
// its pid), for finding where a stage spends its time.
const ProfileEnv = "TCORE_PLUGIN_CPUPROFILE"

func profile(path string, log zerolog.Logger) {
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err != nil {
		log.Error().Err(err).Msg("cpu profile")
		return
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Error().Err(err).Msg("cpu profile")
		return
	}
	time.Sleep(4 * time.Second)
	pprof.StopCPUProfile()
}

// watchParent ends the plugin when its host is gone (re-parented), so that a
// host killed without cleanup leaves no orphan behind.
func watchParent(log zerolog.Logger) {
	ppid := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != ppid {
			log.Warn().Msg("host process is gone; exiting")
			os.Exit(3)
		}
	}
}

// grpcPlugin is the go-plugin adapter for a Stage.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	stage Stage
	log   zerolog.Logger
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	stagepb.RegisterStageServer(s, &server{stage: Local(p.stage), log: p.log})
	return nil
}

func (p *grpcPlugin) GRPCClient(ctx context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return stagepb.NewStageClient(c), nil
}

// server implements the Stage gRPC service over a (Local-wrapped) Stage.
type server struct {
	stagepb.UnimplementedStageServer
	stage Stage
	log   zerolog.Logger
}

var _ stagepb.StageServer = (*server)(nil)

func (s *server) Describe(context.Context, *stagepb.DescribeRequest) (*stagepb.StageSpec, error) {
	return specToProto(s.stage.Spec()), nil
}

// syncSender serialises sends on a stream shared by several goroutines.
type syncSender struct {
	mu     sync.Mutex
	stream stagepb.Stage_RunServer
}

func (s *syncSender) send(m *stagepb.PluginMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

func (s *syncSender) frame(port string, data []byte, eof bool) error {
	return s.send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: &stagepb.Frame{Port: port, Data: data, Eof: eof}}})
}

func (s *server) Run(stream stagepb.Stage_RunServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	spec := s.stage.Spec()
	log := s.log.With().Str("stage", spec.Name).Logger()
	ctx = log.WithContext(ctx)

	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return errors.New("plugin: first message of Run must be Start")
	}
	out := &syncSender{stream: stream}
	for _, p := range start.Ports {
		if _, ok := spec.Port(p, false); !ok {
			return out.send(errMsg(&Error{Stage: spec.Name, Port: p, Code: CodeBadInput, Msg: "no such input port"}))
		}
	}
	for p := range start.Files {
		if _, ok := spec.Port(p, false); !ok {
			return out.send(errMsg(&Error{Stage: spec.Name, Port: p, Code: CodeBadInput, Msg: "no such input port"}))
		}
	}
	d := newDemux(start.Ports)
	defer d.close()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				d.fail(err)
				return
			}
			f := m.GetFrame()
			if f == nil {
				d.fail(errors.New("plugin: unexpected message after Start"))
				return
			}
			if err := d.push(f.Port, f.Data, f.Eof); err != nil {
				d.fail(err)
				return
			}
		}
	}()

	in := &streamInputs{ctx: ctx, d: d, ports: start.Ports, files: start.Files, log: log}
	outs := &streamOutputs{send: out, dir: start.OutDir}
	prog := newThrottle(func(e Event) {
		_ = out.send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Progress{Progress: &stagepb.Progress{
			Done: e.Done, Total: e.Total, Unit: e.Unit, Message: e.Message}}})
	})
	prog.port = func(port string) {
		_ = out.send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Progress{Progress: &stagepb.Progress{Port: port}}})
	}
	metrics, runErr := s.stage.Run(ctx, json.RawMessage(start.ParamsJson), in, outs, prog)
	prog.flush()
	if runErr != nil {
		var se *Error
		if !errors.As(runErr, &se) {
			se = classify(spec.Name, runErr, ctx)
		}
		log.Error().Str("port", se.Port).Str("code", se.Code.String()).Msg(se.Msg)
		return out.send(errMsg(se))
	}
	if err := outs.err(); err != nil {
		return out.send(errMsg(classify(spec.Name, err, ctx)))
	}
	b, err := json.Marshal(metrics)
	if err != nil {
		return out.send(errMsg(&Error{Stage: spec.Name, Code: CodeInternal, Msg: fmt.Sprintf("metrics are not JSON: %v", err)}))
	}
	return out.send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Done{Done: &stagepb.Done{MetricsJson: string(b)}}})
}

func errMsg(e *Error) *stagepb.PluginMessage {
	return &stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Error{Error: &stagepb.Error{
		Code: codeToProto(e.Code), Message: e.Msg, Port: e.Port}}}
}

// streamInputs reads input ports from the demultiplexed Run stream, or
// from the files the host handed over.
type streamInputs struct {
	ctx   context.Context
	d     *demux
	ports []string
	files map[string]string
	log   zerolog.Logger
}

func (in *streamInputs) Open(port string) (array.RecordReader, error) {
	if path, ok := in.files[port]; ok {
		// On stderr, written before the stage reads a byte: the host
		// names this port if the process dies now (stderrTap.reading).
		in.log.Debug().Str("port", port).Msg(readingFileMsg)
		return arrowio.OpenIPC(path, readAlloc)
	}
	found := false
	for _, p := range in.ports {
		found = found || p == port
	}
	if !found {
		return nil, fmt.Errorf("%w", ErrNotConnected)
	}
	r, err := ipc.NewReader(in.d.reader(port), ipc.WithAllocator(readAlloc))
	if err != nil {
		return nil, fmt.Errorf("reading Arrow IPC stream: %w", err)
	}
	return r, nil
}

// streamOutputs writes output ports as frames on the Run stream, or into
// files in dir (when the host gave one) whose paths it sends.
type streamOutputs struct {
	send *syncSender
	dir  string
	mu   sync.Mutex
	e    error
}

func (o *streamOutputs) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.e
}

func (o *streamOutputs) Create(port string, schema *arrow.Schema) (RecordWriter, error) {
	if o.dir != "" {
		path := filepath.Join(o.dir, port+".arrows")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("output port %q: %w", port, err)
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		return &filePortWriter{o: o, port: port, path: path, f: f, bw: bw, w: ipc.NewWriter(bw, ipc.WithSchema(schema))}, nil
	}
	fw := newFrameWriter(port, o.send.frame)
	return &ipcPortWriter{fw: fw, w: ipc.NewWriter(fw, ipc.WithSchema(schema))}, nil
}

// filePortWriter writes one port as an IPC stream into a file and, once
// closed, sends the file's path.
type filePortWriter struct {
	o          *streamOutputs
	port, path string
	f          *os.File
	bw         *bufio.Writer
	w          *ipc.Writer
}

func (w *filePortWriter) Write(rec arrow.Record) error { return w.w.Write(rec) }
func (w *filePortWriter) Close() error {
	err := w.w.Close()
	if err == nil {
		err = w.bw.Flush()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return w.o.send.send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: &stagepb.Frame{Port: w.port, Path: w.path, Eof: true}}})
}

// ipcPortWriter writes one port as an IPC stream into frames.
type ipcPortWriter struct {
	fw *frameWriter
	w  *ipc.Writer
}

func (w *ipcPortWriter) Write(rec arrow.Record) error { return w.w.Write(rec) }
func (w *ipcPortWriter) Close() error {
	if err := w.w.Close(); err != nil {
		return err
	}
	return w.fw.Close()
}

// throttle passes progress events on at most every 100 ms (and the last one
// on flush).
type throttle struct {
	mu      sync.Mutex
	f       func(Event)
	port    func(string)
	last    time.Time
	pending *Event
}

func newThrottle(f func(Event)) *throttle { return &throttle{f: f} }

func (t *throttle) Report(e Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.last) < 100*time.Millisecond {
		t.pending = &e
		return
	}
	t.last = time.Now()
	t.pending = nil
	t.f(e)
}

// PortActive implements PortActivity.
func (t *throttle) PortActive(port string) {
	if t.port != nil {
		t.port(port)
	}
}

func (t *throttle) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending != nil {
		t.f(*t.pending)
		t.pending = nil
	}
}
