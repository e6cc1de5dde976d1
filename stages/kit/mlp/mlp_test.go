package mlp

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// The graph's gradients agree with finite differences of its own loss.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	ortlib.Init(t)
	sizes := []int{3, 4, 2}
	sess := gradSession(t, sizes)
	tr := &Trainer{sizes: sizes}
	h := NewHead(sizes, 3)
	rng := rand.New(rand.NewPCG(2, 2))
	const B = 5
	x := make([]float32, B*3)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]float32, B*2)
	for i := 0; i < B; i++ {
		y[i*2+i%2] = 1
	}
	lossAndGrads := func() (float64, [][]float32) {
		wts, free, err := tr.weightTensors(h)
		if err != nil {
			t.Fatal(err)
		}
		defer free()
		xt, _ := ortgo.NewTensor(ortgo.NewShape(B, 3), x)
		yt, _ := ortgo.NewTensor(ortgo.NewShape(B, 2), y)
		defer xt.Destroy()
		defer yt.Destroy()
		outs := make([]ortgo.Value, 5)
		if err := sess.Run(append([]ortgo.Value{xt, yt}, wts...), outs); err != nil {
			t.Fatal(err)
		}
		var loss float64
		for _, l := range outs[0].(*ortgo.Tensor[float32]).GetData() {
			loss += float64(l)
		}
		var g [][]float32
		for _, o := range outs[1:] {
			g = append(g, append([]float32(nil), o.(*ortgo.Tensor[float32]).GetData()...))
		}
		for _, o := range outs {
			o.Destroy()
		}
		return loss / B, g
	}
	_, grads := lossAndGrads()
	params := [][]float32{h.W[0], h.B[0], h.W[1], h.B[1]}
	for pi, p := range params {
		for j := range p {
			const eps = 1e-2
			old := p[j]
			p[j] = old + eps
			lp, _ := lossAndGrads()
			p[j] = old - eps
			lm, _ := lossAndGrads()
			p[j] = old
			num := (lp - lm) / (2 * eps)
			if math.Abs(num-float64(grads[pi][j])) > 2e-3+0.02*math.Abs(num) {
				t.Fatalf("param %d[%d]: graph gradient %v, finite difference %v", pi, j, grads[pi][j], num)
			}
		}
	}
}

// gradSession runs graphGrads for a head of the given sizes: x, y and the
// weights in, the loss per row and the gradients out. The test's cleanup
// releases it.
func gradSession(tb testing.TB, sizes []int) *ortgo.DynamicAdvancedSession {
	L := len(sizes) - 1
	model, err := graph(L, graphGrads)
	if err != nil {
		tb.Fatal(err)
	}
	var outs []string
	for _, n := range paramNames(L) {
		outs = append(outs, "d"+n)
	}
	sess, err := ort.NewRawSession(model, append([]string{"x", "y"}, paramNames(L)...), append([]string{"loss"}, outs...), ort.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sess.Destroy() })
	return sess
}

// stepper runs training steps of h's trainer (default config) on batches
// of B rows put into sb; the test's cleanup releases it.
type stepper struct {
	tr  *Trainer
	opt *adam
	sb  *stepBufs
}

func newStepper(tb testing.TB, h *Head, B int) *stepper {
	cfg := DefaultConfig(1)
	tr, err := NewTrainer(h.Sizes, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tr.Close)
	opt, err := newAdam(h, cfg.LR)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(opt.destroy)
	sb, err := newStepBufs(h, B)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sb.destroy)
	return &stepper{tr: tr, opt: opt, sb: sb}
}

// step runs one training step on sb's batch.
func (s *stepper) step(tb testing.TB) {
	in, out := s.opt.next()
	if err := s.tr.step.Run(append([]ortgo.Value{s.sb.xt, s.sb.yt}, in...), append([]ortgo.Value{s.sb.lt}, out...)); err != nil {
		tb.Fatal(err)
	}
	s.opt.done()
}

// adamInGo is Adam's update as the package doc writes it, in Go: the
// reference for the step graph's.
type adamInGo struct {
	m, v [][]float32
	t    int
}

func (a *adamInGo) update(params, grads [][]float32, lr float32) {
	const b1, b2, eps = adamB1, adamB2, adamEps
	if a.m == nil {
		for _, p := range params {
			a.m = append(a.m, make([]float32, len(p)))
			a.v = append(a.v, make([]float32, len(p)))
		}
	}
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

// The step graph's weights after each of 30 steps equal, bit for bit,
// the gradient graph's gradients put through Adam in Go: the update moved
// into ONNX Runtime is the same arithmetic.
func TestStepGraphEqualsAdamInGo(t *testing.T) {
	ortlib.Init(t)
	sizes := []int{64, 256, 128, 3}
	const B = 128
	cfg := DefaultConfig(1)
	grads := gradSession(t, sizes)
	inGraph := NewHead(sizes, 7)
	ref := inGraph.Clone()
	st := newStepper(t, inGraph, B)
	tr, opt, sb := st.tr, st.opt, st.sb
	var refOpt adamInGo
	rng := rand.New(rand.NewPCG(4, 4))
	for step := 0; step < 30; step++ {
		clear(sb.y)
		for i := range sb.x {
			sb.x[i] = float32(rng.NormFloat64())
		}
		for i := 0; i < B; i++ {
			sb.y[i*3+rng.IntN(3)] = 1
		}
		st.step(t)
		wts, free, err := tr.weightTensors(ref)
		if err != nil {
			t.Fatal(err)
		}
		gouts := make([]ortgo.Value, 1+2*(len(sizes)-1))
		if err := grads.Run(append([]ortgo.Value{sb.xt, sb.yt}, wts...), gouts); err != nil {
			t.Fatal(err)
		}
		var params, gs [][]float32
		for l := range ref.W {
			params = append(params, ref.W[l], ref.B[l])
		}
		for _, o := range gouts[1:] {
			gs = append(gs, o.(*ortgo.Tensor[float32]).GetData())
		}
		refOpt.update(params, gs, cfg.LR)
		for _, o := range gouts {
			o.Destroy()
		}
		free()
		for i, got := range opt.params() {
			for j, v := range got {
				if math.Float32bits(v) != math.Float32bits(params[i][j]) {
					t.Fatalf("step %d, param %d[%d]: graph %v, Adam in Go %v", step, i, j, v, params[i][j])
				}
			}
		}
	}
	opt.finish(inGraph)
	for l := range ref.W {
		if !slices.Equal(inGraph.W[l], ref.W[l]) || !slices.Equal(inGraph.B[l], ref.B[l]) {
			t.Fatalf("layer %d: the head's weights after finish differ from the last step's", l)
		}
	}
}

func blobs(n, d, c int, seed uint64) ([]float32, []int32) {
	rng := rand.New(rand.NewPCG(seed, 5))
	x := make([]float32, n*d)
	y := make([]int32, n)
	for i := 0; i < n; i++ {
		y[i] = int32(i % c)
		for j := 0; j < d; j++ {
			x[i*d+j] = float32(rng.NormFloat64())
			if j%c == int(y[i]) {
				x[i*d+j] += 2
			}
		}
	}
	return x, y
}

func TestFitLearnsAndIsDeterministic(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 1200, 16, 4
	x, y := blobs(n, d, c, 1)
	rows := make([]int, 1000)
	for i := range rows {
		rows[i] = i
	}
	cfg := DefaultConfig(7)
	cfg.Epochs = 10
	tr, err := NewTrainer([]int{d, 64, 32, c}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	fit := func() *Head {
		h := NewHead([]int{d, 64, 32, c}, 7)
		if _, err := tr.Fit(h, x, y, rows, nil); err != nil {
			t.Fatal(err)
		}
		return h
	}
	h1, h2 := fit(), fit()
	if l := firstDiff(h1, h2); l >= 0 {
		t.Fatalf("same seed, different weights at layer %d", l)
	}
	s, err := tr.Score(h1, x[1000*d:], y[1000:])
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for i, p := range s.Pred {
		if p == y[1000+i] {
			ok++
		}
		if want := -math.Log(float64(s.PY[i])); math.Abs(want-float64(s.Loss[i])) > 1e-3*(1+want) {
			t.Fatalf("row %d: loss %v, -log p(y) %v", i, s.Loss[i], want)
		}
	}
	if acc := float64(ok) / 200; acc < 0.95 {
		t.Fatalf("held-out accuracy %.3f, want >= 0.95", acc)
	}
	// Predict, the forward pass in Go, gives the session's class.
	for i, p := range s.Pred {
		if got := h1.Predict(x[(1000+i)*d : (1001+i)*d]); got != int(p) {
			t.Fatalf("row %d: Predict %d, the session %d", i, got, p)
		}
	}
}

// Confusion batches with random labels on the training rows wipe out what
// the head learnt from them: confidence in the true label drops.
func TestConfusionBatchesLowerConfidence(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 800, 16, 4
	x, y := blobs(n, d, c, 3)
	rows := allRows(n)
	cfg := DefaultConfig(3)
	cfg.Epochs = 8
	tr, err := NewTrainer([]int{d, 64, 32, c}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	mean := func(conf *Confusion) float64 {
		h := NewHead([]int{d, 64, 32, c}, 3)
		if _, err := tr.Fit(h, x, y, rows, conf); err != nil {
			t.Fatal(err)
		}
		s, _ := tr.Score(h, x, y)
		var m float64
		for _, p := range s.PY {
			m += float64(p)
		}
		return m / n
	}
	plain, confused := mean(nil), mean(&Confusion{Rows: rows, Every: 1, Weight: 1})
	if !(confused < plain-0.1) {
		t.Fatalf("mean p(y): plain %.3f, with confusion %.3f; want a clear drop", plain, confused)
	}
}

// BenchmarkFitEpoch trains the default head (256 -> 512 -> 256 -> 10) for
// one epoch over 20,000 rows.
func BenchmarkFitEpoch(b *testing.B) {
	ortlib.Init(b)
	const n, d, c = 20000, 256, 10
	x, y := blobs(n, d, c, 1)
	rows := allRows(n)
	cfg := DefaultConfig(1)
	cfg.Epochs = 1
	tr, err := NewTrainer([]int{d, 512, 256, c}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	h := NewHead([]int{d, 512, 256, c}, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Fit(h, x, y, rows, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// MaxSteps caps the batches of a fit (it wins over MinSteps): a head
// capped at a handful of steps is left far less trained.
func TestMaxStepsCapsTraining(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 1000, 16, 4
	x, y := blobs(n, d, c, 2)
	rows := allRows(n)
	loss := map[int]float64{}
	for _, limit := range []int{0, 10} {
		cfg := DefaultConfig(3)
		cfg.Epochs, cfg.MaxSteps = 10, limit
		tr, err := NewTrainer([]int{d, 32, c}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if loss[limit], err = tr.Fit(NewHead([]int{d, 32, c}, 3), x, y, rows, nil); err != nil {
			t.Fatal(err)
		}
		tr.Close()
	}
	if !(loss[10] > 2*loss[0]) {
		t.Fatalf("last-epoch loss %.4f uncapped, %.4f capped at 10 steps; want the capped one far higher", loss[0], loss[10])
	}
}

// allRows returns 0..n-1: every row of a test set.
func allRows(n int) []int {
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	return rows
}

// Two heads trained side by side (Together) on one Trainer end with the
// same weights, bit for bit, as trained one after the other; an error of
// either is returned.
func TestTogetherMatchesOneAfterTheOther(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 2000, 32, 4
	x, y := blobs(n, d, c, 5)
	sizes := []int{d, 64, c}
	tr, err := NewTrainer(sizes, DefaultConfig(7))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	halves := [2][]int{}
	for i := 0; i < n; i++ {
		halves[i%2] = append(halves[i%2], i)
	}
	fit := func(h *Head, rows []int) func() error {
		return func() error { _, err := tr.Fit(h, x, y, rows, nil); return err }
	}
	var alone, together [2]*Head
	for f := range alone {
		alone[f] = NewHead(sizes, uint64(f))
		if err := fit(alone[f], halves[f])(); err != nil {
			t.Fatal(err)
		}
		together[f] = NewHead(sizes, uint64(f))
	}
	if err := Together(fit(together[0], halves[0]), fit(together[1], halves[1])); err != nil {
		t.Fatal(err)
	}
	for f := range alone {
		if l := firstDiff(alone[f], together[f]); l >= 0 {
			t.Fatalf("head %d layer %d differs trained side by side", f, l)
		}
	}
	if err := Together(fit(NewHead(sizes, 1), halves[0]), fit(NewHead(sizes, 2), nil)); err == nil {
		t.Fatal("a fit with no rows: no error from Together")
	}
}

// BenchmarkFitPair trains two default heads (256 -> 512 -> 256 -> 10) for
// one epoch over 10,000 rows each, one after the other, side by side
// (Together), and side by side on a Paired trainer; compare the rows/s
// figures of one run.
func BenchmarkFitPair(b *testing.B) {
	ortlib.Init(b)
	const n, d, c = 20000, 256, 10
	x, y := blobs(n, d, c, 1)
	var halves [2][]int
	for i := 0; i < n; i++ {
		halves[i%2] = append(halves[i%2], i)
	}
	cfg := DefaultConfig(1)
	cfg.Epochs, cfg.MinSteps = 1, 0
	sizes := []int{d, 512, 256, c}
	tr, err := NewTrainer(sizes, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	paired, err := NewTrainer(sizes, cfg.Paired())
	if err != nil {
		b.Fatal(err)
	}
	defer paired.Close()
	fit := func(tr *Trainer, f int) func() error {
		h := NewHead(sizes, uint64(f))
		return func() error { _, err := tr.Fit(h, x, y, halves[f], nil); return err }
	}
	for _, mode := range []string{"one after the other", "together", "together, paired threads"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var err error
				switch mode {
				case "together":
					err = Together(fit(tr, 0), fit(tr, 1))
				case "together, paired threads":
					err = Together(fit(paired, 0), fit(paired, 1))
				default:
					if err = fit(tr, 0)(); err == nil {
						err = fit(tr, 1)()
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// unevenPair is a pair of fits as expand runs them: a short one (a benign
// head on a quarter of the rows) beside a long one (every row).
func unevenPair(n int) (short, long []int) {
	long = allRows(n)
	return long[:n/4], long
}

// A fit of a pair that goes on after its partner finished switches to the
// trainer's wide session (Config.AloneThreads) and still ends with the
// weights it has alone on one thread, bit for bit; so does its partner.
// The switch is checked on a partner that leaves at a set step (when two
// fits really run together, which one finishes first and when is up to
// the scheduler: on a loaded machine the short one can still be in its
// last step when the long one ends); the real pair is checked for its
// weights.
func TestAFitLeftAloneTakesEveryThread(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 4000, 256, 10
	x, y := blobs(n, d, c, 6)
	sizes := []int{d, 512, 256, c}
	short, long := unevenPair(n)
	cfg := DefaultConfig(5)
	cfg.Epochs, cfg.MinSteps = 2, 0
	alone := func(rows []int) *Head {
		one := cfg
		one.ORT.Threads = 1
		tr, err := NewTrainer(sizes, one)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		h := NewHead(sizes, uint64(len(rows)))
		if _, err := tr.Fit(h, x, y, rows, nil); err != nil {
			t.Fatal(err)
		}
		return h
	}
	pair := cfg
	pair.ORT.Threads, pair.AloneThreads = 1, 2
	tr, err := NewTrainer(sizes, pair)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	hs, hl := NewHead(sizes, uint64(len(short))), NewHead(sizes, uint64(len(long)))
	fit := func(h *Head, rows []int) func() error {
		return func() error { _, err := tr.Fit(h, x, y, rows, nil); return err }
	}
	if err := Together(fit(hs, short), fit(hl, long)); err != nil {
		t.Fatal(err)
	}
	// A partner that leaves as the long fit's sixth step starts.
	const leaves = 6
	tr.fits.Add(1)
	step := 0
	tr.beforeStep = func() {
		if step++; step == leaves {
			tr.fits.Add(-1)
		}
	}
	hw := NewHead(sizes, uint64(len(long)))
	before := tr.aloneSteps.Load()
	if err := fit(hw, long)(); err != nil {
		t.Fatal(err)
	}
	tr.beforeStep = nil
	if got, want := tr.aloneSteps.Load()-before, int64(step-leaves+1); got != want {
		t.Fatalf("%d of the long fit's %d steps ran on the wide session, want the %d after its partner left", got, step, want)
	}
	want := alone(long)
	for _, c := range []struct {
		name      string
		got, want *Head
	}{{"short", hs, alone(short)}, {"long", hl, want}, {"long, partner leaving at a set step", hw, want}} {
		if l := firstDiff(c.got, c.want); l >= 0 {
			t.Fatalf("%s fit: layer %d differs from the fit alone on one thread", c.name, l)
		}
	}
}

// BenchmarkFitUnevenPair compares, in one run, an uneven pair of fits
// (unevenPair) on a paired trainer whose long fit keeps half the threads
// once alone, and on one whose long fit takes them all back
// (Config.AloneThreads, as Paired sets it). `make bench` prints the ratio.
func BenchmarkFitUnevenPair(b *testing.B) {
	ortlib.Init(b)
	const n, d, c = 20000, 256, 10
	x, y := blobs(n, d, c, 1)
	short, long := unevenPair(n)
	cfg := DefaultConfig(1)
	cfg.Epochs, cfg.MinSteps = 1, 0
	sizes := []int{d, 512, 256, c}
	for _, mode := range []string{"half-threads", "every-thread-alone"} {
		b.Run(mode, func(b *testing.B) {
			pc := cfg.Paired()
			if mode == "half-threads" {
				pc.AloneThreads = 0
			}
			tr, err := NewTrainer(sizes, pc)
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			fit := func(rows []int) func() error {
				h := NewHead(sizes, uint64(len(rows)))
				return func() error { _, err := tr.Fit(h, x, y, rows, nil); return err }
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := Together(fit(short), fit(long)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((len(short)+len(long))*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// A fit ends with the same weights, bit for bit, whatever the intra-op
// thread count of its trainer's sessions (Config.Paired relies on it).
func TestThreadsDoNotChangeAFit(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 4000, 256, 10
	x, y := blobs(n, d, c, 5)
	sizes := []int{d, 512, 256, c}
	var heads []*Head
	for _, threads := range []int{1, 2, 3} {
		cfg := DefaultConfig(7)
		cfg.ORT.Threads = threads
		tr, err := NewTrainer(sizes, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := NewHead(sizes, 3)
		if _, err := tr.Fit(h, x, y, allRows(n), nil); err != nil {
			t.Fatal(err)
		}
		tr.Close()
		heads = append(heads, h)
	}
	for k := 1; k < len(heads); k++ {
		if l := firstDiff(heads[0], heads[k]); l >= 0 {
			t.Fatalf("layer %d differs at %d threads from 1 thread", l, k+1)
		}
	}
}

// BenchmarkTrainingStep compares, in one run, a training step of the
// default head on 256-value embeddings (batch 256) as this package runs it
// (one graph that also updates the weights, into buffers made once) with
// the way it ran before: a gradient graph whose outputs ONNX Runtime
// allocates and Go copies, then Adam in Go. `make bench` prints the ratio.
func BenchmarkTrainingStep(b *testing.B) {
	ortlib.Init(b)
	sizes := []int{256, 512, 256, 10}
	const B = 256
	fill := func(sb *stepBufs) {
		rng := rand.New(rand.NewPCG(1, 1))
		for i := range sb.x {
			sb.x[i] = float32(rng.NormFloat64())
		}
		for i := 0; i < B; i++ {
			sb.y[i*10+i%10] = 1
		}
	}
	b.Run("one-graph", func(b *testing.B) {
		st := newStepper(b, NewHead(sizes, 1), B)
		fill(st.sb)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			st.step(b)
		}
	})
	b.Run("grads-then-adam-in-go", func(b *testing.B) {
		grads := gradSession(b, sizes)
		tr := &Trainer{sizes: sizes}
		h := NewHead(sizes, 1)
		sb, err := newStepBufs(h, B)
		if err != nil {
			b.Fatal(err)
		}
		defer sb.destroy()
		fill(sb)
		wts, free, err := tr.weightTensors(h)
		if err != nil {
			b.Fatal(err)
		}
		defer free()
		var params [][]float32
		for l := range h.W {
			params = append(params, h.W[l], h.B[l])
		}
		var opt adamInGo
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			outs := make([]ortgo.Value, 1+len(params))
			if err := grads.Run(append([]ortgo.Value{sb.xt, sb.yt}, wts...), outs); err != nil {
				b.Fatal(err)
			}
			gs := make([][]float32, len(params))
			for j := range params {
				gs[j] = outs[1+j].(*ortgo.Tensor[float32]).GetData()
			}
			opt.update(params, gs, 1e-3)
			for _, o := range outs {
				o.Destroy()
			}
		}
	})
}

// The learning rate of each schedule at the start, the middle and the end
// of a fit's batches.
func TestScheduleRates(t *testing.T) {
	const lr, total = 1e-3, 1000
	for _, tc := range []struct {
		schedule string
		k        int
		want     float64
	}{
		{"", 0, lr}, {"", 500, lr}, {"", 999, lr},
		{"constant", 0, lr}, {"constant", 999, lr},
		{"cosine", 0, lr},
		{"cosine", 250, lr * (1 + math.Sqrt2/2) / 2},
		{"cosine", 500, lr / 2},
		{"cosine", 999, lr * (1 + math.Cos(math.Pi*999/1000)) / 2},
	} {
		c := Config{LR: lr, Schedule: tc.schedule}
		if got := float64(c.rate(tc.k, total)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%q at batch %d of %d: rate %g, want %g", tc.schedule, tc.k, total, got, tc.want)
		}
	}
}

// "constant" is the schedule a Config without one gets, bit for bit; a
// cosine fit is deterministic and lands elsewhere (the rate moves); an
// unknown schedule is refused when the trainer is made.
func TestSchedules(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 600, 16, 4
	x, y := blobs(n, d, c, 2)
	fit := func(schedule string) *Head {
		cfg := DefaultConfig(3)
		cfg.Epochs, cfg.Schedule = 4, schedule
		tr, err := NewTrainer([]int{d, 32, c}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		h := NewHead([]int{d, 32, c}, 3)
		if _, err := tr.Fit(h, x, y, allRows(n), nil); err != nil {
			t.Fatal(err)
		}
		return h
	}
	same := func(a, b *Head) bool { return firstDiff(a, b) < 0 }
	if !same(fit(""), fit("constant")) {
		t.Error(`schedule "constant" changes the fit of a Config without a schedule`)
	}
	cos := fit("cosine")
	if !same(cos, fit("cosine")) {
		t.Error("two cosine fits with the same seed differ")
	}
	if same(cos, fit("constant")) {
		t.Error("the cosine fit equals the constant one: the schedule is not applied")
	}
	cfg := DefaultConfig(1)
	cfg.Schedule = "step"
	if tr, err := NewTrainer([]int{d, c}, cfg); err == nil {
		tr.Close()
		t.Error(`schedule "step" accepted`)
	}
}

// firstDiff returns the first layer whose weights or biases differ, bit for
// bit, between two heads of the same sizes (-1: none).
func firstDiff(a, b *Head) int {
	for l := range a.W {
		if !slices.Equal(a.W[l], b.W[l]) || !slices.Equal(a.B[l], b.B[l]) {
			return l
		}
	}
	return -1
}

// Config.Average ends a fit with the mean of its last epochs' weights: with
// a constant rate and no step floor, a fit of E epochs follows the first E
// epochs of a longer one, so the averaged head is the float64 mean of the
// heads of shorter fits, bit for bit; 0 and 1 leave the last step's
// weights, and more epochs than the fit has average them all.
func TestAverage(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 600, 16, 4
	x, y := blobs(n, d, c, 2)
	sizes := []int{d, 32, c}
	fit := func(epochs, average int) *Head {
		cfg := DefaultConfig(3)
		cfg.Epochs, cfg.MinSteps, cfg.Average = epochs, 0, average
		tr, err := NewTrainer(sizes, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		h := NewHead(sizes, 3)
		if _, err := tr.Fit(h, x, y, allRows(n), nil); err != nil {
			t.Fatal(err)
		}
		return h
	}
	params := func(h *Head) (out [][]float32) {
		for l := range h.W {
			out = append(out, h.W[l], h.B[l])
		}
		return out
	}
	mean := func(hs ...*Head) *Head {
		out := hs[0].Clone()
		var of [][][]float32
		for _, h := range hs {
			of = append(of, params(h))
		}
		for i, dst := range params(out) {
			for j := range dst {
				var s float64
				for _, p := range of {
					s += float64(p[i][j])
				}
				dst[j] = float32(s / float64(len(hs)))
			}
		}
		return out
	}
	for _, tc := range []struct {
		name            string
		epochs, average int
		want            *Head
	}{
		{"average 0", 5, 0, fit(5, 0)},
		{"average 1", 5, 1, fit(5, 0)},
		{"average 3", 5, 3, mean(fit(3, 0), fit(4, 0), fit(5, 0))},
		{"average 9 of 2 epochs", 2, 9, mean(fit(1, 0), fit(2, 0))},
	} {
		got := fit(tc.epochs, tc.average)
		if l := firstDiff(got, tc.want); l >= 0 {
			t.Errorf("%s: layer %d is not the expected head", tc.name, l)
		}
		if tc.average > 1 && firstDiff(got, fit(tc.epochs, 0)) < 0 {
			t.Errorf("%s: the averaged head equals the last step's", tc.name)
		}
	}
}

// Mean's single head gives the mean of its heads' logits, on heads of
// every depth; FitMean's heads are Fit's with the seeds it documents, so
// one head is Fit's head bit for bit and two are the mean of two Fits.
func TestMean(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 300, 8, 3
	x, y := blobs(n, d, c, 4)
	for _, sizes := range [][]int{{d, c}, {d, 16, c}, {d, 16, 12, c}} {
		tr, err := NewTrainer(sizes, DefaultConfig(5))
		if err != nil {
			t.Fatal(err)
		}
		heads := []*Head{NewHead(sizes, 1), NewHead(sizes, 2), NewHead(sizes, 3)}
		for _, h := range heads {
			for l := range h.B {
				for j := range h.B[l] {
					h.B[l][j] = float32(j%5) * 0.1 // biases too must be carried
				}
			}
		}
		m := Mean(heads...)
		got, err := tr.Logits(m, x, n)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float64, n*c)
		for _, h := range heads {
			lg, err := tr.Logits(h, x, n)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range lg {
				want[i] += float64(v) / float64(len(heads))
			}
		}
		for i := range got {
			if math.Abs(float64(got[i])-want[i]) > 1e-4*(1+math.Abs(want[i])) {
				t.Fatalf("sizes %v: logit %d of the mean head is %v, the mean of the heads' %v", sizes, i, got[i], want[i])
			}
		}
		if Mean(heads[0]) != heads[0] {
			t.Errorf("sizes %v: the mean of one head is not that head", sizes)
		}
		tr.Close()
	}

	sizes := []int{d, 16, c}
	cfg := DefaultConfig(9)
	cfg.Epochs = 3
	fit := func(headSeed, batchSeed uint64) *Head {
		cfg := cfg
		cfg.Seed = batchSeed
		tr, err := NewTrainer(sizes, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		h := NewHead(sizes, headSeed)
		if _, err := tr.Fit(h, x, y, allRows(n), nil); err != nil {
			t.Fatal(err)
		}
		return h
	}
	tr, err := NewTrainer(sizes, cfg.Paired())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, tc := range []struct {
		name string
		k    int
		want *Head
	}{
		{"one head", 1, fit(40, 9)},
		{"two heads", 2, Mean(fit(40, 9), fit(41, 10))},
	} {
		got, _, err := tr.FitMean(tc.k, 40, x, y, nil, allRows(n))
		if err != nil {
			t.Fatal(err)
		}
		if l := firstDiff(got, tc.want); l >= 0 {
			t.Errorf("%s: layer %d differs from the Fits' mean", tc.name, l)
		}
	}
	if _, _, err := tr.FitMean(0, 40, x, y, nil, allRows(n)); err == nil {
		t.Error("a mean of 0 heads was accepted")
	}
}

// A fit on one row more than a whole number of batches trains as well as
// one on that whole number: the epoch's last batch is a full one, not a
// batch of the one odd row, whose lone gradient would swell Adam's second
// moment and slow every later step (a GTSRB head fell from 66% to 54%
// on 10,241 rows that way, and trained as well as the rest on 10,240).
func TestOddRowDoesNotSlowTheFit(t *testing.T) {
	ortlib.Init(t)
	const d, c, bs = 32, 20, 256
	tests := []struct {
		name string
		n    int
	}{
		{"whole batches", 10 * bs},
		{"one odd row", 10*bs + 1},
		{"three odd rows", 10*bs + 3},
	}
	x, y := blobs(11*bs, d, c, 4)
	loss := make([]float64, len(tests))
	for i, tc := range tests {
		cfg := DefaultConfig(5)
		cfg.Epochs = 20
		tr, err := NewTrainer([]int{d, 64, c}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := NewHead([]int{d, 64, c}, 5)
		if _, err = tr.Fit(h, x, y, allRows(tc.n), nil); err != nil {
			t.Fatal(err)
		}
		s, err := tr.Score(h, x[:10*bs*d], y[:10*bs])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range s.Loss {
			loss[i] += float64(l) / (10 * bs)
		}
		tr.Close()
	}
	for i, tc := range tests[1:] {
		if loss[i+1] > 1.2*loss[0] {
			t.Errorf("%s: mean loss %.4f on the whole batches' rows, %.4f when trained on them alone; want within 20%%", tc.name, loss[i+1], loss[0])
		}
	}
	t.Logf("mean losses %.4f", loss)
}

// Rows with a soft target train towards it: when every row of class 0
// trains towards half class 1 and half class 2, the head splits unseen
// class-0 rows between those two and gives class 0 itself next to nothing,
// while the other classes keep their labels.
func TestSoftTargets(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 1200, 16, 4
	x, y := blobs(n, d, c, 11)
	rows := allRows(1000)
	soft := Targets{}
	for _, r := range rows {
		if y[r] == 0 {
			soft[r] = []float32{0, 0.5, 0.5, 0}
		}
	}
	cfg := DefaultConfig(5)
	cfg.Epochs = 10
	sizes := []int{d, 64, 32, c}
	tr, err := NewTrainer(sizes, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	h, _, err := tr.FitMean(1, 5, x, y, soft, rows)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tr.Score(h, x[1000*d:], y[1000:])
	if err != nil {
		t.Fatal(err)
	}
	var mean [c]float64
	zeros, right, others := 0, 0, 0
	for i := range s.Pred {
		p := s.Prob[i*c : (i+1)*c]
		if y[1000+i] != 0 {
			others++
			if s.Pred[i] == y[1000+i] {
				right++
			}
			continue
		}
		zeros++
		for k := range mean {
			mean[k] += float64(p[k])
		}
	}
	for k := range mean {
		mean[k] /= float64(zeros)
	}
	if mean[0] > 0.1 || mean[3] > 0.1 || mean[1] < 0.3 || mean[1] > 0.7 || mean[2] < 0.3 || mean[2] > 0.7 {
		t.Errorf("unseen class-0 rows: mean probabilities %.3f, want about 0, 0.5, 0.5, 0", mean)
	}
	if acc := float64(right) / float64(others); acc < 0.95 {
		t.Errorf("the other classes' accuracy %.3f, want >= 0.95", acc)
	}
	// Without the targets the same fit learns class 0 as labelled.
	h, _, err = tr.FitMean(1, 5, x, y, nil, rows)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = tr.Score(h, x[1000*d:], y[1000:]); err != nil {
		t.Fatal(err)
	}
	for i, p := range s.Pred {
		if y[1000+i] == 0 && p != 0 {
			t.Fatalf("without targets, class-0 row %d predicted %d", 1000+i, p)
		}
	}
}

// A target that is not a distribution over the head's classes is refused,
// naming the row.
func TestSoftTargetsChecked(t *testing.T) {
	ortlib.Init(t)
	const n, d, c = 300, 8, 3
	x, y := blobs(n, d, c, 2)
	tr, err := NewTrainer([]int{d, 16, c}, DefaultConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, tc := range []struct {
		name   string
		target []float32
	}{
		{"too few classes", []float32{0.5, 0.5}},
		{"does not sum to 1", []float32{0.5, 0.2, 0.2}},
		{"negative", []float32{1.5, -0.5, 0}},
		{"NaN", []float32{float32(math.NaN()), 0.5, 0.5}},
	} {
		_, _, err := tr.FitMean(1, 1, x, y, Targets{7: tc.target}, allRows(n))
		if err == nil || !strings.Contains(err.Error(), "row 7") {
			t.Errorf("%s: err %v, want one naming row 7", tc.name, err)
		}
	}
}
