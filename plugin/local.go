package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
)

// Local returns s wrapped with the checks every run gets, in process or in
// a plugin: parameters are checked against the spec, each input port's
// table kind and rows are validated as they are read, each output port's
// schema is checked on Create, every required output must be written, and a
// panic in the stage becomes an *Error naming the port it was working on.
// Errors come back as *Error.
func Local(s Stage) Stage {
	if l, ok := s.(*local); ok {
		return l
	}
	return &local{s: s}
}

type local struct{ s Stage }

func (l *local) Spec() Spec { return l.s.Spec() }

func (l *local) Run(ctx context.Context, params json.RawMessage, in Inputs, out Outputs, progress Progress) (m Metrics, err error) {
	spec := l.s.Spec()
	if err := CheckParams(spec, params); err != nil {
		return nil, classify(spec.Name, err, ctx)
	}
	if progress == nil {
		progress = ProgressFunc(func(Event) {})
	}
	t := &tracker{}
	if pa, ok := progress.(PortActivity); ok {
		t.notify = pa.PortActive
	}
	ci := &checkedInputs{in: in, spec: spec, t: t}
	co := &checkedOutputs{out: out, spec: spec, t: t, open: map[string]*checkedWriter{}}
	defer func() {
		if r := recover(); r != nil {
			zerolog.Ctx(ctx).Error().Str("stack", string(debug.Stack())).Msgf("panic: %v", r)
			m, err = nil, &Error{Stage: spec.Name, Port: t.port(), Code: CodeInternal, Msg: fmt.Sprintf("panic: %v", r)}
		}
		ci.releaseAll()
	}()
	m, err = l.s.Run(ctx, params, ci, co, progress)
	if err == nil {
		err = co.finish()
	}
	if err != nil {
		e := classify(spec.Name, err, ctx)
		// Bad data read from a port is that port's fault; a bad parameter,
		// encoder or library is no port's, though a port was touched last.
		if e.Port == "" && errors.Is(err, arrowio.ErrInvalid) {
			e.Port = t.port()
		}
		return nil, e
	}
	// Metrics travel as JSON across the plugin boundary; normalising them
	// here gives in-process runs the same types (numbers are float64).
	b, jerr := json.Marshal(m)
	if jerr != nil {
		return nil, &Error{Stage: spec.Name, Code: CodeInternal, Msg: fmt.Sprintf("metrics are not JSON: %v", jerr)}
	}
	norm := Metrics{}
	if err := json.Unmarshal(b, &norm); err != nil || norm == nil {
		norm = Metrics{}
	}
	return norm, nil
}

// tracker remembers the port a stage touched last, for error messages.
type tracker struct {
	p      atomic.Value
	notify func(string)
}

func (t *tracker) set(port string) {
	if old, _ := t.p.Swap(port).(string); old != port && t.notify != nil {
		t.notify(port)
	}
}
func (t *tracker) port() string {
	s, _ := t.p.Load().(string)
	return s
}

type checkedInputs struct {
	in     Inputs
	spec   Spec
	t      *tracker
	mu     sync.Mutex
	opened []array.RecordReader
	seen   map[string]bool
}

func (c *checkedInputs) Open(port string) (array.RecordReader, error) {
	ps, ok := c.spec.Port(port, false)
	if !ok {
		return nil, fmt.Errorf("plugin: stage %q has no input port %q", c.spec.Name, port)
	}
	c.mu.Lock()
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[port] {
		c.mu.Unlock()
		return nil, fmt.Errorf("plugin: input port %q opened twice", port)
	}
	c.seen[port] = true
	c.mu.Unlock()
	c.t.set(port)
	if c.in == nil {
		return nil, PortError(port, fmt.Errorf("%w", ErrNotConnected))
	}
	r, err := c.in.Open(port)
	if err != nil {
		return nil, PortError(port, err)
	}
	if err := arrowio.ValidateSchema(r.Schema(), ps.Kind); err != nil {
		r.Release()
		return nil, PortError(port, err)
	}
	vr := &validReader{RecordReader: r, v: arrowio.NewValidator(ps.Kind, "input port "+port), t: c.t, port: port}
	c.mu.Lock()
	c.opened = append(c.opened, r)
	c.mu.Unlock()
	r.Retain()
	return vr, nil
}

// releaseAll drops the references the checker kept, so that a stage that
// forgets to release a reader does not keep the stream open.
func (c *checkedInputs) releaseAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.opened {
		r.Release()
	}
	c.opened = nil
}

// validReader validates every batch it passes on.
type validReader struct {
	array.RecordReader
	v    *arrowio.Validator
	t    *tracker
	port string
	err  error
}

func (r *validReader) Next() bool {
	r.t.set(r.port)
	if r.err != nil || !r.RecordReader.Next() {
		return false
	}
	if err := r.v.Check(r.RecordReader.Record()); err != nil {
		r.err = PortError(r.port, err)
		return false
	}
	return true
}

func (r *validReader) Err() error {
	if r.err != nil {
		return r.err
	}
	if err := r.RecordReader.Err(); err != nil {
		return PortError(r.port, err)
	}
	return nil
}

type checkedOutputs struct {
	out  Outputs
	spec Spec
	t    *tracker
	mu   sync.Mutex
	open map[string]*checkedWriter
}

func (c *checkedOutputs) Create(port string, schema *arrow.Schema) (RecordWriter, error) {
	ps, ok := c.spec.Port(port, true)
	if !ok {
		return nil, fmt.Errorf("plugin: stage %q has no output port %q", c.spec.Name, port)
	}
	c.t.set(port)
	if err := arrowio.ValidateSchema(schema, ps.Kind); err != nil {
		return nil, PortError(port, fmt.Errorf("output schema: %w", err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.open[port]; dup {
		return nil, PortError(port, fmt.Errorf("output port created twice"))
	}
	w, err := c.out.Create(port, schema)
	if err != nil {
		return nil, PortError(port, err)
	}
	cw := &checkedWriter{w: w, schema: schema, port: port, t: c.t}
	c.open[port] = cw
	return cw, nil
}

// finish checks that every required output was written and closed.
func (c *checkedOutputs) finish() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.spec.Outputs {
		w, ok := c.open[p.Name]
		if !ok {
			if p.Optional {
				continue
			}
			return PortError(p.Name, fmt.Errorf("stage returned without writing required output port"))
		}
		if !w.closed {
			if err := w.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

type checkedWriter struct {
	w      RecordWriter
	schema *arrow.Schema
	port   string
	t      *tracker
	closed bool
}

func (w *checkedWriter) Write(rec arrow.Record) error {
	w.t.set(w.port)
	if w.closed {
		return PortError(w.port, fmt.Errorf("write after Close"))
	}
	if !rec.Schema().Equal(w.schema) {
		return PortError(w.port, fmt.Errorf("record schema %s differs from the port's schema %s", rec.Schema(), w.schema))
	}
	return PortError(w.port, w.w.Write(rec))
}

func (w *checkedWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return PortError(w.port, w.w.Close())
}
