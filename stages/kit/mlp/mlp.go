// Package mlp trains and runs the classifier heads of T-Core: a multilayer
// perceptron (default D -> 512 -> 256 -> C, ReLU) on frozen embeddings,
// trained with Adam on class-balanced batches, seeded. One API covers
// ordinary training, training interleaved with confusion batches (samples
// with uniformly random labels), and scoring any rows (loss, probabilities,
// predictions).
//
// # How it runs
//
// The forward and backward passes of a batch are one ONNX graph run by ONNX
// Runtime (its matrix products are an order of magnitude faster than Go's
// here); the Adam update runs in Go on the weights, which ONNX Runtime reads
// in place.
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
	"sync"

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
	step  *ortgo.DynamicAdvancedSession
	fwd   *ortgo.DynamicAdvancedSession
	cfg   Config
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
	t := &Trainer{sizes: sizes, cfg: cfg}
	stepModel, fwdModel, err := graphs(len(sizes) - 1)
	if err != nil {
		return nil, err
	}
	ins := []string{"x", "y"}
	for l := 0; l+1 < len(sizes); l++ {
		ins = append(ins, fmt.Sprintf("w%d", l), fmt.Sprintf("b%d", l))
	}
	outs := []string{"loss"}
	for l := 0; l+1 < len(sizes); l++ {
		outs = append(outs, fmt.Sprintf("dw%d", l), fmt.Sprintf("db%d", l))
	}
	if t.step, err = ort.NewRawSession(stepModel, ins, outs, cfg.ORT); err != nil {
		return nil, err
	}
	fins := append([]string{"x"}, ins[2:]...)
	if t.fwd, err = ort.NewRawSession(fwdModel, fins, []string{"logits"}, cfg.ORT); err != nil {
		t.step.Destroy()
		return nil, err
	}
	return t, nil
}

// Close releases the sessions.
func (t *Trainer) Close() {
	t.step.Destroy()
	t.fwd.Destroy()
}

// graphs builds the training step (loss and gradients) and the forward
// pass for an MLP of L layers.
func graphs(L int) (step, fwd []byte, err error) {
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
		for l := L - 1; l >= 0; l-- {
			at := b.Op("Transpose", "", []string{acts[l]})
			b.Op("MatMul", fmt.Sprintf("dw%d", l), []string{at, g})
			b.Op("ReduceSum", fmt.Sprintf("db%d", l), []string{g, ax0}, onnxgraph.IntAttr("keepdims", 0))
			if l > 0 {
				wt := b.Op("Transpose", "", []string{fmt.Sprintf("w%d", l)})
				ga := b.Op("MatMul", "", []string{g, wt})
				mask := b.Op("Sign", "", []string{acts[l]})
				g = b.Op("Mul", "", []string{ga, mask})
			}
		}
		b.Output("loss", 1)
		for l := 0; l < L; l++ {
			b.Output(fmt.Sprintf("dw%d", l), 2)
			b.Output(fmt.Sprintf("db%d", l), 1)
		}
		return b.Model().Bytes()
	}
	if step, err = build(true); err != nil {
		return nil, nil, err
	}
	fwd, err = build(false)
	return step, fwd, err
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

// adam is the optimiser state of one head.
type adam struct {
	m, v [][]float32
	t    int
}

func newAdam(h *Head) *adam {
	a := &adam{}
	for l := range h.W {
		a.m = append(a.m, make([]float32, len(h.W[l])), make([]float32, len(h.B[l])))
		a.v = append(a.v, make([]float32, len(h.W[l])), make([]float32, len(h.B[l])))
	}
	return a
}

func (a *adam) update(params [][]float32, grads [][]float32, lr float32) {
	const b1, b2, eps = 0.9, 0.999, 1e-8
	a.t++
	c1 := float32(1 - math.Pow(b1, float64(a.t)))
	c2 := float32(1 - math.Pow(b2, float64(a.t)))
	for i, p := range params {
		g, m, v := grads[i], a.m[i], a.v[i]
		for j := range p {
			m[j] = b1*m[j] + (1-b1)*g[j]
			v[j] = b2*v[j] + (1-b2)*g[j]*g[j]
			p[j] -= lr * (m[j] / c1) / (float32(math.Sqrt(float64(v[j]/c2))) + eps)
		}
	}
}

// Fit trains h on the rows rows of x (n rows of D values) with labels y,
// for the configured epochs (one epoch draws len(rows) samples), optionally
// with confusion batches. It returns the mean loss of the last epoch's
// ordinary batches.
func (t *Trainer) Fit(h *Head, x []float32, y []int32, rows []int, conf *Confusion) (float64, error) {
	d, c := h.Sizes[0], h.Sizes[len(h.Sizes)-1]
	if len(rows) == 0 {
		return 0, fmt.Errorf("mlp: no rows to train on")
	}
	rng := rand.New(rand.NewPCG(t.cfg.Seed, 0x666974))
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
	xb := make([]float32, bs*d)
	yb := make([]float32, bs*c)
	wts, free, err := t.weightTensors(h)
	if err != nil {
		return 0, err
	}
	defer free()
	opt := newAdam(h)
	params := [][]float32{}
	for l := range h.W {
		params = append(params, h.W[l], h.B[l])
	}
	draw := func() int {
		if t.cfg.Balanced {
			cl := classes[rng.IntN(len(classes))]
			rs := byClass[cl]
			return rs[rng.IntN(len(rs))]
		}
		return rows[rng.IntN(len(rows))]
	}
	run := func(k int, weight float32, pick func() (int, int32)) (float64, error) {
		clear(yb[:k*c])
		for i := 0; i < k; i++ {
			r, lbl := pick()
			copy(xb[i*d:(i+1)*d], x[r*d:(r+1)*d])
			yb[i*c+int(lbl)] = weight
		}
		xt, err := ortgo.NewTensor(ortgo.NewShape(int64(k), int64(d)), xb[:k*d])
		if err != nil {
			return 0, err
		}
		defer xt.Destroy()
		yt, err := ortgo.NewTensor(ortgo.NewShape(int64(k), int64(c)), yb[:k*c])
		if err != nil {
			return 0, err
		}
		defer yt.Destroy()
		outs := make([]ortgo.Value, 1+len(params))
		if err := t.step.Run(append([]ortgo.Value{xt, yt}, wts...), outs); err != nil {
			return 0, fmt.Errorf("mlp: training step: %w", err)
		}
		grads := make([][]float32, len(params))
		for i := range params {
			grads[i] = outs[1+i].(*ortgo.Tensor[float32]).GetData()
		}
		opt.update(params, grads, t.cfg.LR)
		var loss float64
		for _, l := range outs[0].(*ortgo.Tensor[float32]).GetData() {
			loss += float64(l)
		}
		for _, o := range outs {
			o.Destroy()
		}
		return loss / float64(k), nil
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
	for ep := 0; ep < epochs; ep++ {
		var sum float64
		for s := 0; s < steps; s++ {
			k := bs
			if s*bs < len(rows) {
				k = min(bs, len(rows)-s*bs)
			}
			l, err := run(k, 1, func() (int, int32) { r := draw(); return r, y[r] })
			if err != nil {
				return 0, err
			}
			sum += l
			if conf != nil && len(conf.Rows) > 0 && (s+1)%max(conf.Every, 1) == 0 {
				if _, err := run(bs, conf.Weight, func() (int, int32) {
					return conf.Rows[rng.IntN(len(conf.Rows))], int32(rng.IntN(c))
				}); err != nil {
					return 0, err
				}
			}
		}
		last = sum / float64(steps)
	}
	return last, nil
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
// confusion head) train side by side: one Fit keeps about one core busy
// however many intra-op threads its session has, its batches being small.
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
