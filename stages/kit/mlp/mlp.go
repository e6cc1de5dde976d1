// Package mlp trains and runs the classifier heads of T-Core: a multilayer
// perceptron (default D -> 512 -> 256 -> C, ReLU) on frozen embeddings,
// trained with Adam on class-balanced batches, seeded. One API covers
// ordinary training, training interleaved with confusion batches (samples
// with uniformly random labels), and scoring any rows (loss, probabilities,
// predictions).
//
// # How it runs
//
// A training step (the forward and backward passes of a batch and Adam's
// update) is one ONNX graph run by ONNX Runtime, whose matrix products are
// an order of magnitude faster than Go's here. It reads the weights and
// Adam's moments from one set of Go-owned buffers and writes the next ones
// into another, the two swapped after each step, so no step allocates or
// copies; the update is the same float32 arithmetic as Go's (the
// package's tests check it bit for bit).
//
// # Formula
//
// For a batch of B rows with target rows y_i (one-hot, scaled by the row's
// weight w_i), loss = -(1/B) sum_i sum_c y_ic log softmax(f(x_i))_c. Adam:
// m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, w -= lr m^/(sqrt(v^)+eps)
// with bias correction, b1 = 0.9, b2 = 0.999, eps = 1e-8.
package mlp

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/advancedclimatesystems/gonnx/onnx"
	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Head is an MLP's weights. W[l] is [in][out] row-major (x W + b).
type Head struct {
	Sizes []int // D, hidden..., C
	W, B  [][]float32
}

// NewHead returns a head with He-initialised weights drawn from seed.
func NewHead(sizes []int, seed uint64) *Head {
	if len(sizes) < 2 {
		panic("mlp: NewHead needs at least input and output sizes")
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d6c70))
	h := &Head{Sizes: append([]int(nil), sizes...)}
	for l := 0; l+1 < len(sizes); l++ {
		in, out := sizes[l], sizes[l+1]
		w := make([]float32, in*out)
		s := math.Sqrt(2 / float64(in))
		for i := range w {
			w[i] = float32(rng.NormFloat64() * s)
		}
		h.W = append(h.W, w)
		h.B = append(h.B, make([]float32, out))
	}
	return h
}

// Clone returns a deep copy of h.
func (h *Head) Clone() *Head {
	c := &Head{Sizes: append([]int(nil), h.Sizes...)}
	for l := range h.W {
		c.W = append(c.W, append([]float32(nil), h.W[l]...))
		c.B = append(c.B, append([]float32(nil), h.B[l]...))
	}
	return c
}

// Predict returns the class h gives one input x (Sizes[0] values): a
// forward pass in Go, ReLU between layers, for the few rows where a
// session is not worth making.
func (h *Head) Predict(x []float32) int {
	a := x
	for l := range h.W {
		in, out := h.Sizes[l], h.Sizes[l+1]
		z := append([]float32(nil), h.B[l]...)
		for i := 0; i < in; i++ {
			if a[i] == 0 {
				continue
			}
			row := h.W[l][i*out : (i+1)*out]
			for j, w := range row {
				z[j] += a[i] * w
			}
		}
		if l+1 < len(h.W) {
			for j := range z {
				z[j] = max(z[j], 0)
			}
		}
		a = z
	}
	best := 0
	for j, v := range a {
		if v > a[best] {
			best = j
		}
	}
	return best
}

// Layers returns the head as onnxgraph layers (W transposed to [out][in]),
// for export.
func (h *Head) Layers() []onnxgraph.Dense {
	var out []onnxgraph.Dense
	for l := range h.W {
		in, o := h.Sizes[l], h.Sizes[l+1]
		w := make([]float32, in*o)
		for i := 0; i < in; i++ {
			for j := 0; j < o; j++ {
				w[j*in+i] = h.W[l][i*o+j]
			}
		}
		out = append(out, onnxgraph.Dense{In: in, Out: o, W: w, B: append([]float32(nil), h.B[l]...), Relu: l+1 < len(h.W)})
	}
	return out
}

// Config tunes training.
type Config struct {
	Epochs int     // default 20
	Batch  int     // default 256
	LR     float32 // default 1e-3
	// Balanced draws each batch row from a uniformly chosen class (default
	// true through DefaultConfig).
	Balanced bool
	// MinSteps is the least number of batches a Fit runs, however few the
	// rows: 20 epochs of 100 rows would otherwise be 20 steps (default
	// 0; DefaultConfig sets 300).
	MinSteps int
	// MaxSteps caps the ordinary batches of a Fit over all its epochs
	// (each epoch then draws fewer rows; confusion batches come on top);
	// 0: no cap.
	MaxSteps int
	Seed     uint64
	ORT      ort.Options
	// AloneThreads, when above ORT.Threads, is the intra-op thread count
	// of the steps a Fit runs while no other Fit of the same trainer runs
	// (on the CPU; 0: none). Paired sets it, so that the head of a pair
	// still training after its partner finished (a confusion head on every
	// row beside a benign head on the trusted ones) uses every core. A
	// fit's result does not depend on its thread count.
	AloneThreads int
	// Schedule is how the learning rate moves over a Fit's ordinary
	// batches: "" or "constant" keeps LR; "cosine" anneals it from LR to
	// 0 along half a cosine, LR·(1+cos(π·k/K))/2 at batch k of K (a
	// confusion batch takes the rate of the batch before it).
	Schedule string
	// Average, above 1, makes a Fit end with the mean of the head's
	// weights at the end of each of its last Average epochs (all of them
	// when it has fewer), taken in float64: stochastic weight averaging,
	// which smooths out the last batches' noise. 0 or 1: the last step's
	// weights.
	Average int
}

// Schedules are the values Config.Schedule takes.
var Schedules = []string{"constant", "cosine"}

// rate returns the learning rate of ordinary batch k of total under
// cfg.Schedule.
func (c Config) rate(k, total int) float32 {
	if c.Schedule != "cosine" || total <= 0 {
		return c.LR
	}
	return float32(float64(c.LR) * 0.5 * (1 + math.Cos(math.Pi*float64(k)/float64(total))))
}

// DefaultConfig returns docs/ALGORITHM.md's training defaults.
func DefaultConfig(seed uint64) Config {
	return Config{Epochs: 20, Batch: 256, LR: 1e-3, Balanced: true, MinSteps: 300, Seed: seed}
}

// Confusion interleaves confusion batches: after every Every ordinary
// batches, one batch of rows drawn from Rows with uniformly random labels,
// its loss weighted by Weight.
type Confusion struct {
	Rows   []int
	Every  int
	Weight float32
}

// Trainer holds the ONNX Runtime sessions for one head shape.
type Trainer struct {
	sizes []int
	step  *ortgo.DynamicAdvancedSession // graphStep: a whole training step
	// alone is graphStep with cfg.AloneThreads intra-op threads, for the
	// steps of a Fit that runs alone (nil: step serves every Fit).
	alone *ortgo.DynamicAdvancedSession
	fits  atomic.Int32 // Fits running now
	// aloneSteps counts the steps run on alone (for the tests).
	aloneSteps atomic.Int64
	// beforeStep, when set (by the tests), runs as each step picks its
	// session.
	beforeStep func()
	fwd        *ortgo.DynamicAdvancedSession
	cfg        Config
}

// NewTrainer prepares the training and scoring graphs for heads of sizes.
func NewTrainer(sizes []int, cfg Config) (*Trainer, error) {
	if cfg.Epochs == 0 {
		cfg.Epochs = 20
	}
	if cfg.Batch == 0 {
		cfg.Batch = 256
	}
	if cfg.LR == 0 {
		cfg.LR = 1e-3
	}
	if cfg.Schedule != "" && !slices.Contains(Schedules, cfg.Schedule) {
		return nil, fmt.Errorf("mlp: schedule %q is not one of %v", cfg.Schedule, Schedules)
	}
	t := &Trainer{sizes: sizes, cfg: cfg}
	L := len(sizes) - 1
	stepModel, err := graph(L, graphStep)
	if err != nil {
		return nil, err
	}
	fwdModel, err := graph(L, graphForward)
	if err != nil {
		return nil, err
	}
	names := paramNames(L)
	ins := slices.Concat([]string{"x", "y"}, names, []string{"c1", "c2", "lr", "w", "m", "v"})
	outs := []string{"loss", "next_w", "next_m", "next_v"}
	if t.step, err = ort.NewRawSession(stepModel, ins, outs, cfg.ORT); err != nil {
		return nil, err
	}
	if t.fwd, err = ort.NewRawSession(fwdModel, append([]string{"x"}, names...), []string{"logits"}, cfg.ORT); err != nil {
		t.step.Destroy()
		return nil, err
	}
	if kind, _, _ := ort.ParseDevice(cfg.ORT.Device); kind == "cpu" && cfg.AloneThreads > cfg.ORT.IntraOpThreads() {
		wide := cfg.ORT
		wide.Threads = cfg.AloneThreads
		if t.alone, err = ort.NewRawSession(stepModel, ins, outs, wide); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// Close releases the sessions.
func (t *Trainer) Close() {
	t.step.Destroy()
	t.fwd.Destroy()
	if t.alone != nil {
		t.alone.Destroy()
	}
}

// stepSession is the session of a Fit's next step: the wide one while
// that Fit is the trainer's only one.
func (t *Trainer) stepSession() *ortgo.DynamicAdvancedSession {
	if t.beforeStep != nil {
		t.beforeStep()
	}
	if t.alone != nil && t.fits.Load() == 1 {
		t.aloneSteps.Add(1)
		return t.alone
	}
	return t.step
}

// The graphs of a head of L layers.
const (
	graphForward = iota // x, weights -> logits
	graphGrads          // x, y, weights -> loss per row, gradients
	graphStep           // x, y, weights, c1, c2, lr, flat weights and moments -> loss per row, the next flat weights and moments
)

// graph builds one of the graphs of an MLP of L layers.
// graphStep is a whole training step: the gradients of graphGrads and
// Adam's update of the weights and moments (the package doc's formula,
// each operation in float32 in the order Go would compute it, so that the
// two agree bit for bit: TestStepGraphEqualsAdamInGo). The inputs of the
// forward and backward passes are declared as they always were (every
// dimension symbolic), because ONNX Runtime picks its kernels by the
// declared shapes and so the trained heads stay what they were. Adam runs
// once over the whole head: its inputs w, m and v are the parameters and
// moments laid end to end (the forward pass reads w through the per-layer
// inputs, views of the same buffer), declared without a shape, as ONNX
// Runtime would otherwise plan their buffers by the symbolic names and
// take a bias for a batch.
func graph(L, kind int) ([]byte, error) {
	build := func(train bool) ([]byte, error) {
		b := onnxgraph.NewBuilder("x", []int64{-1, -1}, 13)
		if train {
			b.AddInput("y", []int64{-1, -1})
		}
		for l := 0; l < L; l++ {
			b.AddInput(fmt.Sprintf("w%d", l), []int64{-1, -1})
			b.AddInput(fmt.Sprintf("b%d", l), []int64{-1})
		}
		acts := []string{"x"} // inputs of each layer
		var zs []string
		a := "x"
		for l := 0; l < L; l++ {
			m := b.Op("MatMul", "", []string{a, fmt.Sprintf("w%d", l)})
			z := b.Op("Add", "", []string{m, fmt.Sprintf("b%d", l)})
			zs = append(zs, z)
			if l+1 < L {
				a = b.Op("Relu", "", []string{z})
				acts = append(acts, a)
			}
		}
		logits := zs[L-1]
		if !train {
			b.Op("Identity", "logits", []string{logits})
			b.Output("logits", 2)
			return b.Model().Bytes()
		}
		// loss_i = -sum_c y_ic log p_ic
		lsm := b.Op("LogSoftmax", "", []string{logits}, onnxgraph.IntAttr("axis", 1))
		prod := b.Op("Mul", "", []string{"y", lsm})
		ax1 := b.Int64Const(1)
		ax0 := b.Int64Const(0)
		rs := b.Op("ReduceSum", "", []string{prod, ax1}, onnxgraph.IntAttr("keepdims", 0))
		b.Op("Neg", "loss", []string{rs})
		// dlogits = (p * sum_c y_ic - y) / B
		p := b.Op("Softmax", "", []string{logits}, onnxgraph.IntAttr("axis", 1))
		ysum := b.Op("ReduceSum", "", []string{"y", ax1}, onnxgraph.IntAttr("keepdims", 1))
		py := b.Op("Mul", "", []string{p, ysum})
		diff := b.Op("Sub", "", []string{py, "y"})
		shape := b.Op("Shape", "", []string{"x"})
		bdim := b.Op("Gather", "", []string{shape, b.Int64Const(0)}, onnxgraph.IntAttr("axis", 0))
		bf := b.Op("Cast", "", []string{bdim}, onnxgraph.IntAttr("to", int64(onnx.TensorProto_FLOAT)))
		g := b.Op("Div", "", []string{diff, bf})
		zero := b.Const([]int64{1}, []float32{0})
		for l := L - 1; l >= 0; l-- {
			at := b.Op("Transpose", "", []string{acts[l]})
			b.Op("MatMul", fmt.Sprintf("dw%d", l), []string{at, g})
			b.Op("ReduceSum", fmt.Sprintf("db%d", l), []string{g, ax0}, onnxgraph.IntAttr("keepdims", 0))
			if l > 0 {
				wt := b.Op("Transpose", "", []string{fmt.Sprintf("w%d", l)})
				ga := b.Op("MatMul", "", []string{g, wt})
				mask := b.Op("Cast", "", []string{b.Op("Greater", "", []string{acts[l], zero})}, onnxgraph.IntAttr("to", int64(onnx.TensorProto_FLOAT)))
				g = b.Op("Mul", "", []string{ga, mask})
			}
		}
		b.Output("loss", 1)
		if kind == graphGrads {
			for l := 0; l < L; l++ {
				b.Output(fmt.Sprintf("dw%d", l), 2)
				b.Output(fmt.Sprintf("db%d", l), 1)
			}
			return b.Model().Bytes()
		}
		// Adam over every parameter at once: the gradients laid end to
		// end in paramNames' order (as the flat buffers w, m and v hold
		// the parameters and moments), so that each operation is one node
		// over the whole head instead of one per weight and bias. Each
		// element goes through the same float32 operations as before.
		flat := b.Int64Const(-1)
		var gs []string
		for _, name := range paramNames(L) {
			gs = append(gs, b.Op("Reshape", "", []string{"d" + name, flat}))
		}
		g = b.Op("Concat", "", gs, onnxgraph.IntAttr("axis", 0))
		for _, n := range []string{"c1", "c2", "lr"} {
			b.AddInput(n, []int64{1})
		}
		for _, n := range []string{"w", "m", "v"} {
			b.AddInput(n, nil)
		}
		scalar := func(v float32) string { return b.Const([]int64{1}, []float32{v}) }
		b1, omb1, b2, omb2, eps := scalar(adamB1), scalar(1-adamB1), scalar(adamB2), scalar(1-adamB2), scalar(adamEps)
		m := b.Op("Add", "next_m", []string{b.Op("Mul", "", []string{b1, "m"}), b.Op("Mul", "", []string{omb1, g})})
		v := b.Op("Add", "next_v", []string{b.Op("Mul", "", []string{b2, "v"}), b.Op("Mul", "", []string{b.Op("Mul", "", []string{omb2, g}), g})})
		num := b.Op("Mul", "", []string{"lr", b.Op("Div", "", []string{m, "c1"})})
		den := b.Op("Add", "", []string{b.Op("Sqrt", "", []string{b.Op("Div", "", []string{v, "c2"})}), eps})
		b.Op("Sub", "next_w", []string{"w", b.Op("Div", "", []string{num, den})})
		for _, n := range []string{"next_w", "next_m", "next_v"} {
			b.Output(n, 1)
		}
		return b.Model().Bytes()
	}
	return build(kind != graphForward)
}

// paramNames are a head's weights in the order the graphs take them: w0,
// b0, w1, b1, ...
func paramNames(L int) []string {
	var out []string
	for l := 0; l < L; l++ {
		out = append(out, fmt.Sprintf("w%d", l), fmt.Sprintf("b%d", l))
	}
	return out
}

// weightTensors wraps the head's weights (in place) as ORT inputs.
func (t *Trainer) weightTensors(h *Head) ([]ortgo.Value, func(), error) {
	var vals []ortgo.Value
	free := func() {
		for _, v := range vals {
			v.Destroy()
		}
	}
	for l := range h.W {
		w, err := ortgo.NewTensor(ortgo.NewShape(int64(h.Sizes[l]), int64(h.Sizes[l+1])), h.W[l])
		if err != nil {
			free()
			return nil, nil, err
		}
		vals = append(vals, w)
		b, err := ortgo.NewTensor(ortgo.NewShape(int64(h.Sizes[l+1])), h.B[l])
		if err != nil {
			free()
			return nil, nil, err
		}
		vals = append(vals, b)
	}
	return vals, free, nil
}

// Adam's constants (the package doc's formula).
const adamB1, adamB2, adamEps = 0.9, 0.999, 1e-8

// adam is the optimiser state of one Fit: two sets of flat buffers for the
// parameters (paramNames' order, end to end) and their moments, one that a
// step reads and one it writes, swapped after each step. Each set's
// weights are also wrapped layer by layer (views of its flat buffer) for
// the forward and backward passes.
type adam struct {
	w, m, v    [2]*ortgo.Tensor[float32] // flat
	views      [2][]*ortgo.Tensor[float32]
	sc         []float32 // c1, c2, lr: the step's bias corrections and learning rate
	c1, c2, lr *ortgo.Tensor[float32]
	cur        int // the set the next step reads
	t          int // steps taken
}

func newAdam(h *Head, lr float32) (*adam, error) {
	a := &adam{sc: []float32{0, 0, lr}}
	wrap := func(data []float32, dims ...int) (*ortgo.Tensor[float32], error) {
		shape := make([]int64, len(dims))
		for i, d := range dims {
			shape[i] = int64(d)
		}
		return ortgo.NewTensor(ortgo.NewShape(shape...), data)
	}
	n := 0
	for l := range h.W {
		n += len(h.W[l]) + len(h.B[l])
	}
	for set := 0; set < 2; set++ {
		w := make([]float32, n)
		var err error
		for _, add := range []struct {
			to   **ortgo.Tensor[float32]
			data []float32
		}{{&a.w[set], w}, {&a.m[set], make([]float32, n)}, {&a.v[set], make([]float32, n)}} {
			if *add.to, err = wrap(add.data, n); err != nil {
				a.destroy()
				return nil, err
			}
		}
		off := 0
		for l := range h.W {
			in, out := h.Sizes[l], h.Sizes[l+1]
			for _, p := range []struct {
				data []float32
				dims []int
			}{{h.W[l], []int{in, out}}, {h.B[l], []int{out}}} {
				view := w[off : off+len(p.data) : off+len(p.data)]
				if set == 0 {
					copy(view, p.data)
				}
				off += len(p.data)
				t, err := wrap(view, p.dims...)
				if err != nil {
					a.destroy()
					return nil, err
				}
				a.views[set] = append(a.views[set], t)
			}
		}
	}
	var err error
	for i, dst := range []**ortgo.Tensor[float32]{&a.c1, &a.c2, &a.lr} {
		if *dst, err = wrap(a.sc[i:i+1], 1); err != nil {
			a.destroy()
			return nil, err
		}
	}
	return a, nil
}

// next sets the bias corrections of the next step and returns its inputs
// after x and y, and its outputs after the loss.
func (a *adam) next() (in, out []ortgo.Value) {
	a.t++
	a.sc[0] = float32(1 - math.Pow(adamB1, float64(a.t)))
	a.sc[1] = float32(1 - math.Pow(adamB2, float64(a.t)))
	r, w := a.cur, 1-a.cur
	for _, t := range a.views[r] {
		in = append(in, t)
	}
	in = append(in, a.c1, a.c2, a.lr, a.w[r], a.m[r], a.v[r])
	return in, []ortgo.Value{a.w[w], a.m[w], a.v[w]}
}

// done swaps the sets after a step ran.
func (a *adam) done() { a.cur = 1 - a.cur }

// params returns the parameters the next step reads, one slice per
// weight and bias in paramNames' order (views of the flat buffer).
func (a *adam) params() [][]float32 {
	out := make([][]float32, len(a.views[a.cur]))
	for i, t := range a.views[a.cur] {
		out[i] = t.GetData()
	}
	return out
}

// finish leaves the last step's weights in h.
func (a *adam) finish(h *Head) {
	ps := a.params()
	for l := range h.W {
		copy(h.W[l], ps[2*l])
		copy(h.B[l], ps[2*l+1])
	}
}

func (a *adam) destroy() {
	for set := 0; set < 2; set++ {
		for _, t := range append([]*ortgo.Tensor[float32]{a.w[set], a.m[set], a.v[set]}, a.views[set]...) {
			if t != nil {
				t.Destroy()
			}
		}
	}
	for _, t := range []*ortgo.Tensor[float32]{a.c1, a.c2, a.lr} {
		if t != nil {
			t.Destroy()
		}
	}
}

// stepBufs are the tensors of a Fit's training steps, made once per Fit
// for its batch size: the batch's inputs, its labels and the loss per
// row, which ONNX Runtime writes in place (outputs it allocated itself
// would cost a copy into Go memory at every step).
type stepBufs struct {
	x, y, loss []float32
	xt, yt, lt *ortgo.Tensor[float32]
}

func newStepBufs(h *Head, k int) (*stepBufs, error) {
	d, c := h.Sizes[0], h.Sizes[len(h.Sizes)-1]
	sb := &stepBufs{x: make([]float32, k*d), y: make([]float32, k*c), loss: make([]float32, k)}
	var err error
	if sb.xt, err = ortgo.NewTensor(ortgo.NewShape(int64(k), int64(d)), sb.x); err == nil {
		if sb.yt, err = ortgo.NewTensor(ortgo.NewShape(int64(k), int64(c)), sb.y); err == nil {
			sb.lt, err = ortgo.NewTensor(ortgo.NewShape(int64(k)), sb.loss)
		}
	}
	if err != nil {
		sb.destroy()
		return nil, err
	}
	return sb, nil
}

func (sb *stepBufs) destroy() {
	for _, t := range []*ortgo.Tensor[float32]{sb.xt, sb.yt, sb.lt} {
		if t != nil {
			t.Destroy()
		}
	}
}

// Fit trains h on the rows rows of x (n rows of D values) with labels y,
// for the configured epochs, optionally with confusion batches. Every
// batch holds Batch rows drawn with replacement; an epoch is
// ⌈len(rows)/Batch⌉ of them, raised to MinSteps or capped at MaxSteps
// over all epochs. It returns the mean loss of the last epoch's
// ordinary batches.
func (t *Trainer) Fit(h *Head, x []float32, y []int32, rows []int, conf *Confusion) (float64, error) {
	return t.fit(h, t.cfg.Seed, x, y, nil, rows, conf)
}

// Targets gives some rows (by index) a distribution over the classes to
// train towards instead of the one-hot of their label: soft labels. A
// row's label still decides the class its batch draws count it under.
// Each distribution has one value per class and sums to 1.
type Targets map[int][]float32

// check reports the first row whose target is not a distribution over c
// classes.
func (tg Targets) check(c int) error {
	for r, p := range tg {
		if len(p) != c {
			return fmt.Errorf("mlp: row %d's target has %d values for %d classes", r, len(p), c)
		}
		var s float64
		for _, v := range p {
			if v < 0 || math.IsNaN(float64(v)) {
				return fmt.Errorf("mlp: row %d's target holds %v", r, v)
			}
			s += float64(v)
		}
		if math.Abs(s-1) > 1e-3 {
			return fmt.Errorf("mlp: row %d's target sums to %v, not 1", r, s)
		}
	}
	return nil
}

// fit is Fit with its batches drawn from seed; rows with a target in
// soft train towards it (the caller checks soft).
func (t *Trainer) fit(h *Head, seed uint64, x []float32, y []int32, soft Targets, rows []int, conf *Confusion) (float64, error) {
	d, c := h.Sizes[0], h.Sizes[len(h.Sizes)-1]
	if len(rows) == 0 {
		return 0, fmt.Errorf("mlp: no rows to train on")
	}
	t.fits.Add(1)
	defer t.fits.Add(-1)
	rng := rand.New(rand.NewPCG(seed, 0x666974))
	byClass := map[int32][]int{}
	var classes []int32
	for _, r := range rows {
		if len(byClass[y[r]]) == 0 {
			classes = append(classes, y[r])
		}
		byClass[y[r]] = append(byClass[y[r]], r)
	}
	for _, cl := range classes {
		if int(cl) >= c || cl < 0 {
			return 0, fmt.Errorf("mlp: label %d outside 0..%d", cl, c-1)
		}
	}
	bs := t.cfg.Batch
	opt, err := newAdam(h, t.cfg.LR)
	if err != nil {
		return 0, err
	}
	defer opt.destroy()
	sb, err := newStepBufs(h, bs) // every batch, ordinary or confusion, is a full one
	if err != nil {
		return 0, err
	}
	defer sb.destroy()
	draw := func() int {
		if t.cfg.Balanced {
			cl := classes[rng.IntN(len(classes))]
			rs := byClass[cl]
			return rs[rng.IntN(len(rs))]
		}
		return rows[rng.IntN(len(rows))]
	}
	// run trains one batch of the rows pick draws, each towards its
	// label's one-hot times weight, or its target in tg.
	run := func(weight float32, tg Targets, pick func() (int, int32)) (float64, error) {
		clear(sb.y)
		for i := 0; i < bs; i++ {
			r, lbl := pick()
			copy(sb.x[i*d:(i+1)*d], x[r*d:(r+1)*d])
			if p, ok := tg[r]; ok {
				copy(sb.y[i*c:(i+1)*c], p)
				continue
			}
			sb.y[i*c+int(lbl)] = weight
		}
		in, out := opt.next()
		if err := t.stepSession().Run(append([]ortgo.Value{sb.xt, sb.yt}, in...), append([]ortgo.Value{sb.lt}, out...)); err != nil {
			return 0, fmt.Errorf("mlp: training step: %w", err)
		}
		opt.done()
		var loss float64
		for _, l := range sb.loss {
			loss += float64(l)
		}
		return loss / float64(bs), nil
	}
	var last float64
	steps := (len(rows) + bs - 1) / bs
	epochs := t.cfg.Epochs
	if t.cfg.MinSteps > steps*epochs {
		// Few rows: more, full-size batches instead of 20 tiny epochs.
		steps = (t.cfg.MinSteps + epochs - 1) / epochs
	}
	if t.cfg.MaxSteps > 0 && steps*epochs > t.cfg.MaxSteps {
		// Many rows: a head on embeddings needs no more batches.
		steps = max(1, t.cfg.MaxSteps/epochs)
	}
	var avg []float64 // the flat weights summed over the averaged epochs
	for ep := 0; ep < epochs; ep++ {
		var sum float64
		for s := 0; s < steps; s++ {
			opt.sc[2] = t.cfg.rate(ep*steps+s, epochs*steps)
			// Every batch is a full one: the draws are with replacement,
			// so an epoch's last batch has no rows of its own to finish.
			// A short one (a lone row when len(rows) is one past a
			// multiple of the batch) swells Adam's second moment with one
			// row's gradient and slows every later step
			// (TestOddRowDoesNotSlowTheFit).
			l, err := run(1, soft, func() (int, int32) { r := draw(); return r, y[r] })
			if err != nil {
				return 0, err
			}
			sum += l
			if conf != nil && len(conf.Rows) > 0 && (s+1)%max(conf.Every, 1) == 0 {
				if _, err := run(conf.Weight, nil, func() (int, int32) {
					return conf.Rows[rng.IntN(len(conf.Rows))], int32(rng.IntN(c))
				}); err != nil {
					return 0, err
				}
			}
		}
		last = sum / float64(steps)
		if t.cfg.Average > 1 && ep >= epochs-t.cfg.Average {
			w := opt.w[opt.cur].GetData()
			if avg == nil {
				avg = make([]float64, len(w))
			}
			for j, v := range w {
				avg[j] += float64(v)
			}
		}
	}
	if avg != nil {
		n := float64(min(t.cfg.Average, epochs))
		w := opt.w[opt.cur].GetData()
		for j, v := range avg {
			w[j] = float32(v / n)
		}
	}
	opt.finish(h)
	return last, nil
}

// FitMean trains k heads of t's sizes afresh on rows, side by side
// (Together), and returns their Mean and the mean of their last epochs'
// losses. Head j starts from NewHead(sizes, seed+j) and draws its batches
// from the trainer's seed plus j, so the first head is exactly Fit's on
// NewHead(sizes, seed), and k = 1 is that head itself. A trainer made
// with Config.Paired runs two of them at a time on half the threads each.
// Rows with a target in soft train towards it (nil: every row towards its
// label).
func (t *Trainer) FitMean(k int, seed uint64, x []float32, y []int32, soft Targets, rows []int) (*Head, float64, error) {
	if k < 1 {
		return nil, 0, fmt.Errorf("mlp: a mean of %d heads", k)
	}
	if err := soft.check(t.sizes[len(t.sizes)-1]); err != nil {
		return nil, 0, err
	}
	heads := make([]*Head, k)
	losses := make([]float64, k)
	fns := make([]func() error, k)
	for j := range fns {
		heads[j] = NewHead(t.sizes, seed+uint64(j))
		fns[j] = func() (err error) {
			losses[j], err = t.fit(heads[j], t.cfg.Seed+uint64(j), x, y, soft, rows, nil)
			return err
		}
	}
	if err := Together(fns...); err != nil {
		return nil, 0, err
	}
	var loss float64
	for _, l := range losses {
		loss += l
	}
	return Mean(heads...), loss / float64(k), nil
}

// Mean returns one head whose logits are the mean of the given heads'
// logits (an ensemble as a single MLP): the heads side by side, their
// first layers' outputs joined, their hidden layers block-diagonal, and
// the last layer summing their outputs scaled by 1/len(heads). The heads
// must have the same sizes; one head is returned as it is.
func Mean(heads ...*Head) *Head {
	if len(heads) == 1 {
		return heads[0]
	}
	k := len(heads)
	sz := heads[0].Sizes
	for _, h := range heads[1:] {
		if !slices.Equal(h.Sizes, sz) {
			panic(fmt.Sprintf("mlp: Mean of heads of sizes %v and %v", sz, h.Sizes))
		}
	}
	L := len(sz) - 1
	m := &Head{Sizes: append([]int(nil), sz...)}
	for l := 1; l < L; l++ {
		m.Sizes[l] = k * sz[l]
	}
	scale := 1 / float32(k)
	for l := 0; l < L; l++ {
		in, out := sz[l], sz[l+1]
		mIn, mout := m.Sizes[l], m.Sizes[l+1]
		w := make([]float32, mIn*mout)
		b := make([]float32, mout)
		for j, h := range heads {
			// Head j reads its block of the inputs (all of them in the
			// first layer) and writes its block of the outputs (all of
			// them, summed, in the last).
			r0, c0 := j*in, j*out
			if l == 0 {
				r0 = 0
			}
			if l == L-1 {
				c0 = 0
			}
			for i := 0; i < in; i++ {
				row := w[(r0+i)*mout+c0 : (r0+i)*mout+c0+out]
				src := h.W[l][i*out : (i+1)*out]
				if l == L-1 {
					for o, v := range src {
						row[o] += v * scale
					}
				} else {
					copy(row, src)
				}
			}
			if l == L-1 {
				for o, v := range h.B[l] {
					b[o] += v * scale
				}
			} else {
				copy(b[c0:c0+out], h.B[l])
			}
		}
		m.W = append(m.W, w)
		m.B = append(m.B, b)
	}
	return m
}

// Logits returns the head's logits for the n rows of x ([n*C]).
func (t *Trainer) Logits(h *Head, x []float32, n int) ([]float32, error) {
	d, c := h.Sizes[0], h.Sizes[len(h.Sizes)-1]
	wts, free, err := t.weightTensors(h)
	if err != nil {
		return nil, err
	}
	defer free()
	out := make([]float32, n*c)
	const bs = 4096
	for s := 0; s < n; s += bs {
		k := min(bs, n-s)
		xt, err := ortgo.NewTensor(ortgo.NewShape(int64(k), int64(d)), x[s*d:(s+k)*d])
		if err != nil {
			return nil, err
		}
		outs := []ortgo.Value{nil}
		err = t.fwd.Run(append([]ortgo.Value{xt}, wts...), outs)
		xt.Destroy()
		if err != nil {
			return nil, fmt.Errorf("mlp: forward: %w", err)
		}
		copy(out[s*c:], outs[0].(*ortgo.Tensor[float32]).GetData())
		outs[0].Destroy()
	}
	return out, nil
}

// Scores are a head's verdict on rows.
type Scores struct {
	Prob []float32 // n*C softmax probabilities
	Loss []float32 // cross-entropy of each row's given label
	Pred []int32   // argmax
	PY   []float32 // probability of the given label
}

// FitScore fits h on rows (Fit) and then scores every row of x (Score): a
// head of a pair trained side by side (Together).
func (t *Trainer) FitScore(h *Head, x []float32, y []int32, rows []int, conf *Confusion) (*Scores, error) {
	if _, err := t.Fit(h, x, y, rows, conf); err != nil {
		return nil, err
	}
	return t.Score(h, x, y)
}

// Score runs h on the n rows of x and scores them against labels y.
func (t *Trainer) Score(h *Head, x []float32, y []int32) (*Scores, error) {
	n := len(y)
	c := h.Sizes[len(h.Sizes)-1]
	logits, err := t.Logits(h, x, n)
	if err != nil {
		return nil, err
	}
	s := &Scores{Prob: make([]float32, n*c), Loss: make([]float32, n), Pred: make([]int32, n), PY: make([]float32, n)}
	for i := 0; i < n; i++ {
		row := logits[i*c : (i+1)*c]
		mx := row[0]
		arg := 0
		for j, v := range row {
			if v > mx {
				mx, arg = v, j
			}
		}
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v - mx))
		}
		for j, v := range row {
			s.Prob[i*c+j] = float32(math.Exp(float64(v-mx)) / z)
		}
		s.Pred[i] = int32(arg)
		s.PY[i] = s.Prob[i*c+int(y[i])]
		s.Loss[i] = float32(math.Log(z) - float64(row[y[i]]-mx))
	}
	return s, nil
}

// Together runs fns at once, each on its own goroutine, waits for all of
// them and returns the first error in fns' order. Heads that do not depend
// on each other (the two halves of a held-out pair, a benign and a
// confusion head) train side by side: their batches being small, two fits
// on one core each finish sooner than one after the other on two cores
// (BenchmarkFitPair).
// A Trainer's sessions may be run from several goroutines, and each Fit and
// Score computes what it would alone.
func Together(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
