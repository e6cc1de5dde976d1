package ort

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/tcore-dev/tcore/plugin"

	onnx "github.com/yalue/onnxruntime_go"
)

// Options configures a session.
type Options struct {
	// Device is "cpu" (default), "cuda" or "cuda:N".
	Device string
	// Threads is the number of intra-op threads (0: one per CPU).
	Threads int
	// OptLevel is the graph optimisation level: "all" (default),
	// "extended", "basic" or "none".
	OptLevel string
	// Batch is the model's fixed batch size (an export without a dynamic
	// batch axis), or 0 when any batch size runs. With a fixed batch,
	// Run of another size goes through ONNX Runtime in chunks of Batch
	// rows, the last one padded with zeros.
	Batch int64
}

// ThreadsEnvVar names an environment variable that sets the intra-op
// threads of every session that does not set its own (default: one per
// CPU): on a machine shared by several runs, each can take its share.
const ThreadsEnvVar = "TCORE_ORT_THREADS"

// DefaultThreads is the intra-op thread count of a session that does not
// set one: $TCORE_ORT_THREADS when it is a positive number, else one per
// CPU.
func DefaultThreads() int {
	if n, err := strconv.Atoi(os.Getenv(ThreadsEnvVar)); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// ParseDevice splits "cpu", "cuda" or "cuda:N" into kind and device id.
func ParseDevice(d string) (kind string, id int, err error) {
	switch {
	case d == "" || d == "cpu":
		return "cpu", 0, nil
	case d == "cuda":
		return "cuda", 0, nil
	case strings.HasPrefix(d, "cuda:"):
		n, err := strconv.Atoi(d[5:])
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("ort: device %q: want cuda:N with N >= 0", d)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("ort: device %q: want cpu, cuda or cuda:N", d)
}

// IntraOpThreads is the intra-op thread count a session made with o gets:
// Threads, or DefaultThreads when Threads is not positive.
func (o Options) IntraOpThreads() int {
	if o.Threads > 0 {
		return o.Threads
	}
	return DefaultThreads()
}

func (o Options) sessionOptions() (*onnx.SessionOptions, error) {
	so, err := onnx.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	if err := so.SetIntraOpNumThreads(o.IntraOpThreads()); err != nil {
		so.Destroy()
		return nil, err
	}
	so.SetInterOpNumThreads(1)
	lvl := map[string]onnx.GraphOptimizationLevel{
		"": onnx.GraphOptimizationLevelEnableAll, "all": onnx.GraphOptimizationLevelEnableAll,
		"extended": onnx.GraphOptimizationLevelEnableExtended, "basic": onnx.GraphOptimizationLevelEnableBasic,
		"none": onnx.GraphOptimizationLevelDisableAll,
	}
	l, ok := lvl[o.OptLevel]
	if !ok {
		so.Destroy()
		return nil, fmt.Errorf("ort: optimisation level %q: want all, extended, basic or none", o.OptLevel)
	}
	if err := so.SetGraphOptimizationLevel(l); err != nil {
		so.Destroy()
		return nil, err
	}
	kind, id, err := ParseDevice(o.Device)
	if err != nil {
		so.Destroy()
		return nil, err
	}
	if kind == "cuda" {
		co, err := onnx.NewCUDAProviderOptions()
		if err == nil {
			err = co.Update(map[string]string{"device_id": strconv.Itoa(id)})
			if err == nil {
				err = so.AppendExecutionProviderCUDA(co)
			}
			co.Destroy()
		}
		if err != nil {
			so.Destroy()
			return nil, fmt.Errorf("ort: device %s: the CUDA execution provider is not available in %s (%v); use --device cpu, or point --ort-lib at an ONNX Runtime build with CUDA on a machine with an NVIDIA GPU", o.Device, initPath, err)
		}
	}
	return so, nil
}

// Session runs one model with float32 inputs and outputs. It reuses its
// input and output tensors across calls of the same batch size. A Session
// is not safe for concurrent use.
type Session struct {
	s       *onnx.DynamicAdvancedSession
	inputs  []string
	outputs []string
	outDims [][]int64 // per-sample output dims (without the batch)
	cache   map[int64]*batchTensors
	fixed   int64         // Options.Batch
	chunk   *batchTensors // the fixed batch's tensors, for chunked runs
	mu      sync.Mutex
}

type batchTensors struct {
	in  []*onnx.Tensor[float32]
	out []*onnx.Tensor[float32]
}

// NewSession loads model (ONNX bytes) for the named inputs and outputs.
// outDims gives each output's shape without the leading batch dimension;
// nil outDims lets ONNX Runtime allocate outputs (RunAlloc only).
func NewSession(model []byte, inputs, outputs []string, outDims [][]int64, opt Options) (*Session, error) {
	s, err := NewRawSession(model, inputs, outputs, opt)
	if err != nil {
		return nil, err
	}
	return &Session{s: s, inputs: inputs, outputs: outputs, outDims: outDims, cache: map[int64]*batchTensors{}, fixed: opt.Batch}, nil
}

func prod(d []int64) int64 {
	p := int64(1)
	for _, x := range d {
		p *= x
	}
	return p
}

// Buffers returns the input buffers for a batch of n (one per input,
// shaped [n, inDims[i]...]) to fill before Run(n).
func (s *Session) Buffers(n int64, inDims [][]int64) ([][]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bt, err := s.tensors(n, inDims)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(bt.in))
	for i, t := range bt.in {
		out[i] = t.GetData()
	}
	return out, nil
}

func (s *Session) tensors(n int64, inDims [][]int64) (*batchTensors, error) {
	if bt, ok := s.cache[n]; ok {
		return bt, nil
	}
	bt, err := s.newTensors(n, inDims)
	if err != nil {
		return nil, err
	}
	if s.fixed > 0 && n != s.fixed && s.chunk == nil {
		if s.chunk, err = s.newTensors(s.fixed, inDims); err != nil {
			bt.destroy()
			return nil, err
		}
	}
	// Keep at most a few batch sizes (the full one and a tail).
	if len(s.cache) >= 4 {
		for k, v := range s.cache {
			v.destroy()
			delete(s.cache, k)
		}
	}
	s.cache[n] = bt
	return bt, nil
}

// newTensors allocates the input and output tensors of a batch of n.
func (s *Session) newTensors(n int64, inDims [][]int64) (*batchTensors, error) {
	bt := &batchTensors{}
	for _, d := range inDims {
		t, err := onnx.NewEmptyTensor[float32](onnx.NewShape(append([]int64{n}, d...)...))
		if err != nil {
			bt.destroy()
			return nil, err
		}
		bt.in = append(bt.in, t)
	}
	for _, d := range s.outDims {
		t, err := onnx.NewEmptyTensor[float32](onnx.NewShape(append([]int64{n}, d...)...))
		if err != nil {
			bt.destroy()
			return nil, err
		}
		bt.out = append(bt.out, t)
	}
	return bt, nil
}

func (bt *batchTensors) destroy() {
	for _, t := range bt.in {
		t.Destroy()
	}
	for _, t := range bt.out {
		t.Destroy()
	}
}

// Run runs a batch of n whose inputs were filled through Buffers, and
// returns the outputs' data (valid until the next Run of the same n).
func (s *Session) Run(n int64) ([][]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bt, ok := s.cache[n]
	if !ok {
		return nil, fmt.Errorf("ort: Run(%d) without Buffers(%d)", n, n)
	}
	if s.fixed > 0 && n != s.fixed {
		if err := s.runChunks(bt, n); err != nil {
			return nil, err
		}
	} else if err := s.s.Run(values(bt.in), values(bt.out)); err != nil {
		return nil, fmt.Errorf("ort: run: %w", err)
	}
	res := make([][]float32, len(bt.out))
	for i, t := range bt.out {
		res[i] = t.GetData()
	}
	return res, nil
}

func values(ts []*onnx.Tensor[float32]) []onnx.Value {
	vs := make([]onnx.Value, len(ts))
	for i, t := range ts {
		vs[i] = t
	}
	return vs
}

// runChunks runs the batch of n in bt through a model with a fixed batch:
// rows are copied into the fixed batch's tensors a chunk at a time (the
// last chunk padded with zeros) and the outputs copied back.
func (s *Session) runChunks(bt *batchTensors, n int64) error {
	f, c := s.fixed, s.chunk
	for start := int64(0); start < n; start += f {
		m := min(f, n-start)
		for i, t := range bt.in {
			src, dst := t.GetData(), c.in[i].GetData()
			per := int64(len(src)) / n
			copy(dst, src[start*per:(start+m)*per])
			clear(dst[m*per:])
		}
		if err := s.s.Run(values(c.in), values(c.out)); err != nil {
			return fmt.Errorf("ort: run (rows %d-%d in the model's fixed batch of %d): %w", start, start+m-1, f, err)
		}
		for i, t := range bt.out {
			dst, src := t.GetData(), c.out[i].GetData()
			per := int64(len(dst)) / n
			copy(dst[start*per:(start+m)*per], src[:m*per])
		}
	}
	return nil
}

// RunAlloc runs one input tensor of the given shape and lets ONNX Runtime
// allocate the outputs; it returns their data and shapes.
func (s *Session) RunAlloc(input []float32, shape []int64) ([][]float32, [][]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, err := onnx.NewTensor(onnx.NewShape(shape...), input)
	if err != nil {
		return nil, nil, err
	}
	defer in.Destroy()
	outs := make([]onnx.Value, len(s.outputs))
	if err := s.s.Run([]onnx.Value{in}, outs); err != nil {
		return nil, nil, fmt.Errorf("ort: run: %w", err)
	}
	data := make([][]float32, len(outs))
	shapes := make([][]int64, len(outs))
	for i, o := range outs {
		shapes[i] = o.GetShape()
		if t, ok := o.(*onnx.Tensor[float32]); ok {
			data[i] = append([]float32(nil), t.GetData()...)
		}
		o.Destroy()
	}
	return data, shapes, nil
}

// Close releases the session and its tensors.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bt := range s.cache {
		bt.destroy()
	}
	if s.chunk != nil {
		s.chunk.destroy()
	}
	s.cache, s.chunk = nil, nil
	s.s.Destroy()
}

// NewRawSession returns an onnxruntime_go session for models with inputs or
// outputs other than float32 (kNN's TopK indices, say); outputs passed as
// nil to Run are allocated by ONNX Runtime.
func NewRawSession(model []byte, inputs, outputs []string, opt Options) (*onnx.DynamicAdvancedSession, error) {
	if err := ensureInit(); err != nil {
		return nil, err
	}
	so, err := opt.sessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	s, err := onnx.NewDynamicAdvancedSessionWithONNXData(model, inputs, outputs, so)
	if err != nil {
		return nil, fmt.Errorf("ort: creating session: %w", err)
	}
	return s, nil
}

// CheckDevice validates a stage's "device" parameter (cpu, cuda, cuda:N)
// as a bad-input error naming the parameter.
func CheckDevice(device string) error {
	if _, _, err := ParseDevice(device); err != nil {
		return plugin.BadInputf("parameter \"device\": %v", err)
	}
	return nil
}
