package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
)

// Stage is one step of a tcore pipeline.
//
// Run reads its input ports from in, writes its output ports to out, reports
// progress and returns metrics (a JSON object). It must return when ctx is
// cancelled. Run is called through [Local] or a plugin server, which check
// params and table kinds before Run sees them, so Run may rely on them.
type Stage interface {
	Spec() Spec
	Run(ctx context.Context, params json.RawMessage, in Inputs, out Outputs, progress Progress) (Metrics, error)
}

// Spec describes a stage: its name, version, ports and parameters.
type Spec struct {
	Name    string
	Version string
	Inputs  []PortSpec
	Outputs []PortSpec
	Params  []ParamSpec
	// NeedsAllRows is true when the stage holds every input row in memory
	// before it emits anything (kNN, training).
	NeedsAllRows bool
}

// PortSpec describes one input or output port.
type PortSpec struct {
	Name     string       `json:"name"`
	Kind     arrowio.Kind `json:"kind"`
	Optional bool         `json:"optional,omitempty"`
	Doc      string       `json:"doc,omitempty"`
}

// ParamSpec describes one parameter: its default value (JSON), what it
// does, its role for a host, and the values it takes. Stages declare them
// with ParamsOf.
type ParamSpec struct {
	Name    string          `json:"name"`
	Default json.RawMessage `json:"default"`
	Doc     string          `json:"doc,omitempty"`
	Role    Role            `json:"role,omitempty"`
	// Type is int, number, string, bool, list<T> (list<T>[n]: n values)
	// or json (any value the stage checks itself).
	Type  string   `json:"type,omitempty"`
	Range string   `json:"range,omitempty"` // allowed numbers, as [lo,hi] with open ends
	Enum  []string `json:"enum,omitempty"`  // allowed strings
}

// Port returns the input or output port named name.
func (s Spec) Port(name string, output bool) (PortSpec, bool) {
	ports := s.Inputs
	if output {
		ports = s.Outputs
	}
	for _, p := range ports {
		if p.Name == name {
			return p, true
		}
	}
	return PortSpec{}, false
}

// Inputs gives a stage its input ports.
type Inputs interface {
	// Open returns a reader of the port's record batches; the caller must
	// Release it. A port can be opened once. Open returns an error wrapping
	// ErrNotConnected for an optional port that is not connected.
	Open(port string) (array.RecordReader, error)
}

// FileInputs is implemented by Inputs whose ports are files on this
// machine (a run's node outputs): a plugin process is handed a port's path
// and reads the file itself, so that its bytes do not cross the gRPC
// stream.
type FileInputs interface {
	Inputs
	// Path returns the file holding port's Arrow IPC data (file or stream
	// format), or "" when the port is not connected or not a file.
	Path(port string) string
}

// Outputs receives a stage's output ports.
type Outputs interface {
	// Create starts writing port with the given schema, which must be of
	// the port's table kind.
	Create(port string, schema *arrow.Schema) (RecordWriter, error)
}

// ScratchOutputs is implemented by Outputs that own a folder (a run's node
// folder while the node runs): a plugin process writes its output files
// there, on the disk of their destination, instead of the system's
// temporary folder.
type ScratchOutputs interface {
	Outputs
	ScratchDir() string
}

// RecordWriter writes the record batches of one port. Write does not retain
// rec. Close ends the port; it must be called once every batch is written.
type RecordWriter interface {
	Write(rec arrow.Record) error
	Close() error
}

// Event is one progress report: Done of Total units (Total 0 when unknown).
type Event struct {
	Done, Total int64
	Unit        string
	Message     string
}

// Progress receives progress events. Report must be cheap and safe for
// concurrent use.
type Progress interface {
	Report(Event)
}

// PortActivity is an optional ability of a Progress: it is told which port
// the stage works on whenever that changes, so that a failure can name it.
type PortActivity interface {
	PortActive(port string)
}

// ProgressFunc adapts a function to Progress.
type ProgressFunc func(Event)

// Report calls f(e).
func (f ProgressFunc) Report(e Event) { f(e) }

// Metrics is a stage's result summary; it travels as a JSON object.
type Metrics map[string]any

// ErrNotConnected is wrapped by Inputs.Open for an optional port with no
// input.
var ErrNotConnected = errors.New("port not connected")

// ErrBadInput is matched (errors.Is) by every error caused by the input:
// parameters, table kinds, rows.
var ErrBadInput = errors.New("bad input")

// Code classifies a stage error.
type Code int

// The error codes.
const (
	CodeInternal Code = iota
	CodeBadInput
	CodeCancelled
)

func (c Code) String() string {
	switch c {
	case CodeBadInput:
		return "bad input"
	case CodeCancelled:
		return "cancelled"
	}
	return "internal"
}

// Error is the error a stage run returns, in process or across the plugin
// boundary.
type Error struct {
	Stage string // stage name
	Port  string // port involved, or ""
	Code  Code
	Msg   string
	Err   error // the underlying error, in process only
}

// Error implements error: `stage "s": port "p": msg`.
func (e *Error) Error() string {
	s := fmt.Sprintf("stage %q: ", e.Stage)
	if e.Port != "" {
		s += fmt.Sprintf("port %q: ", e.Port)
	}
	return s + e.Msg
}

// Unwrap lets errors.Is match ErrBadInput (CodeBadInput),
// context.Canceled (CodeCancelled) and the underlying error.
func (e *Error) Unwrap() []error {
	out := []error{}
	switch e.Code {
	case CodeBadInput:
		out = append(out, ErrBadInput)
	case CodeCancelled:
		out = append(out, context.Canceled)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// PortError marks err as being about port. It keeps err's code.
func PortError(port string, err error) error {
	if err == nil {
		return nil
	}
	return &portErr{port: port, err: err}
}

type portErr struct {
	port string
	err  error
}

func (p *portErr) Error() string { return p.err.Error() }
func (p *portErr) Unwrap() error { return p.err }

// BadInput marks err as caused by the input.
func BadInput(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBadInput, err)
}

// BadInputf formats a bad-input error.
func BadInputf(format string, args ...any) error {
	return BadInput(fmt.Errorf(format, args...))
}

// classify turns any error from a stage into an *Error of stage.
func classify(stage string, err error, ctx context.Context) *Error {
	var se *Error
	if errors.As(err, &se) {
		if se.Stage == "" {
			c := *se
			c.Stage = stage
			return &c
		}
		return se
	}
	e := &Error{Stage: stage, Code: CodeInternal, Msg: err.Error(), Err: err}
	var pe *portErr
	if errors.As(err, &pe) {
		e.Port = pe.port
	}
	switch {
	case errors.Is(err, ErrBadInput) || errors.Is(err, arrowio.ErrInvalid):
		e.Code = CodeBadInput
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || (ctx != nil && ctx.Err() != nil):
		e.Code = CodeCancelled
	}
	return e
}

// MetricsOf turns a stage's typed result into its metrics: the JSON object
// v marshals to.
func MetricsOf(v any) (Metrics, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var m Metrics
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("metrics: %T is not a JSON object: %w", v, err)
	}
	return m, nil
}
