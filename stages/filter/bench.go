package filter

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// bench is what every step of the filter measures on: the trusted scan
// images (of different classes, preprocessed for the encoder) and one
// session of the encoder with a run-time mask on every probed layer, whose
// switched-off channels take their mean on trusted rows (the mean fill).
// Through it one session measures the encoder under any mask: scan,
// suspicion, the greedy choice and the searches on the masked encoder.
// Views that switch nothing off run through a second session without the
// masks (plain), which costs less and gives the same values to float
// rounding.
type bench struct {
	p       Params
	in      *chanfilter.Inputs
	t       *feat.Table
	trusted []bool
	rng     *rand.Rand
	src     *rand.PCG // rng's source, whose state the scan memo restores
	sess    *encoder.Encoder
	// plain is the same encoder without run-time masks, for the views
	// that switch no channel off (nil while caps are set, which only
	// sess carries): every mask input costs two passes over its layer's
	// feature map.
	plain *encoder.Encoder
	// plainOf is the model plain runs: it outlives a change of the
	// trusted means (distrust), which only the masked session holds.
	plainOf *encoder.Model
	// model is the encoder the session runs: the stage's, or a copy that
	// blurs its input (setSmooth).
	model *encoder.Model
	x     []float32 // the scan images in canonical form at the canvas's size, n of them
	n     int
	pre   encoder.Preprocess
	// canvas is the canonical form patterns are painted in: the data's
	// resolution (its median image size) when the encoder's input is at
	// least 1.5 times larger, else the encoder's. Painted images reach the
	// encoder resampled as the data's own images do (paint), so that a
	// pattern is one the data could carry: a 32-px image upscaled to
	// 224 px never holds a sharper edge or finer texture than one data
	// pixel.
	canvas encoder.Preprocess
	means  map[string][]float32 // per probed layer, each channel's mean on trusted rows
	spread [][]float64          // per probed layer, each channel's standard deviation over all rows
	caps   map[string][]float32 // per probed layer, each channel's cap (nil: none)
	// sizeScale is the encoder's input size over the data's image size
	// when it is 1.5 or more (patterns then painted at the data's size),
	// else 1.
	sizeScale float64
	// scanImages is how many trusted images the scan collapses
	// (scanImages(p, ...)).
	scanImages int
	// held are the training images in canonical form, once read (images).
	held Images
	// tail scores masks from a layer on (openTails; nil until then);
	// noTails runs every score through the whole network.
	tail    *tails
	noTails bool
}

// scanImages is the scan's image count for an encoder input of h x w:
// scan_images_large from large_side pixels on the shorter side, else
// scan_images.
func scanImages(p Params, h, w int) int {
	if min(h, w) >= p.LargeSide {
		return p.ScanImagesLarge
	}
	return p.ScanImages
}

// upscale is the encoder's input size (h x w) over the data's (a median
// dataH x dataW) when it is at least 1.5, else 1 (data as large as the
// input, or larger, is painted at the encoder's size).
func upscale(h, w, dataH, dataW int) float64 {
	if dataH <= 0 || dataW <= 0 {
		return 1
	}
	scale := math.Min(float64(h)/float64(dataH), float64(w)/float64(dataW))
	if scale < 1.5 {
		return 1
	}
	return scale
}

func newBench(p Params, in *chanfilter.Inputs) (*bench, error) {
	src := rand.NewPCG(p.Seed, 0x66696c)
	b := &bench{p: p, in: in, t: in.Table, trusted: in.Trusted, rng: rand.New(src), src: src, pre: in.Model.Preprocess(), model: in.Model}
	if b.trusted == nil {
		return nil, plugin.PortError("trusted", plugin.BadInputf("not connected: the filter measures on trusted rows"))
	}
	b.means = b.t.LayerMeans(b.trusted)
	if err := b.open(); err != nil {
		return nil, err
	}
	b.scanImages = scanImages(p, b.pre.H, b.pre.W)
	want := b.pickTrusted(b.scanImages)
	if len(want) < 8 {
		b.close()
		return nil, plugin.PortError("trusted", plugin.BadInputf("only %d trusted images; the scan needs at least 8", len(want)))
	}
	var err error
	var dataH, dataW int
	b.canvas = encoder.Preprocess{C: 3, H: b.pre.H, W: b.pre.W}
	if b.x, b.n, dataH, dataW, err = decode(in, b.canvas, want, true); err != nil {
		b.close()
		return nil, err
	}
	// Patterns are painted at the data's resolution: on images smaller
	// than the encoder's input (32-px data into a 224-px model) a patch of
	// 3 model pixels would cover less than one data pixel, and a texture
	// of model pixels is nothing the data can hold.
	if b.sizeScale = upscale(b.pre.H, b.pre.W, dataH, dataW); b.sizeScale > 1 {
		b.canvas = encoder.Preprocess{C: 3, H: dataH, W: dataW}
		if b.x, b.n, _, _, err = decode(in, b.canvas, want, true); err != nil {
			b.close()
			return nil, err
		}
	}
	b.spread = make([][]float64, len(b.t.Layers))
	for li, l := range b.t.Layers {
		b.spread[li] = channelStd(l)
	}
	return b, nil
}

// open makes the bench's session: every probed layer's per-channel means
// as outputs, a run-time mask on every probed layer (fill: the trusted
// means) and the caps, if any, built in.
func (b *bench) open() error {
	opt := ort.Options{Device: b.p.Device}
	s, err := b.model.Session(encoder.Config{Layers: b.in.LayerNames(), MaskInputs: b.maskInputs(), ORT: opt})
	if err != nil {
		return err
	}
	if b.sess != nil {
		b.sess.Close()
	}
	b.sess = s
	if b.plain != nil && (b.caps != nil || b.plainOf != b.model) {
		b.plain.Close()
		b.plain, b.plainOf = nil, nil
	}
	if b.plain == nil && b.caps == nil {
		if b.plain, err = b.model.Session(encoder.Config{Layers: b.in.LayerNames(), ORT: opt}); err != nil {
			b.closeSessions()
			return err
		}
		b.plainOf = b.model
	}
	b.tail.close()
	b.tail = nil
	return nil
}

// maskInputs are the bench's run-time masks: one per probed layer, whose
// switched-off channels take the trusted means, capped by the caps.
func (b *bench) maskInputs() []encoder.Mask {
	var mi []encoder.Mask
	for _, l := range b.t.Layers {
		mi = append(mi, encoder.Mask{Layer: l.Name, Fill: b.means[l.Name], Cap: b.caps[l.Name]})
	}
	return mi
}

// setCaps builds caps into the bench's session: from now on every step
// measures the capped encoder.
func (b *bench) setCaps(caps map[string][]float32) error {
	b.caps = caps
	return b.open()
}

func (b *bench) close() {
	b.closeSessions()
	b.tail.close()
	b.tail = nil
}

// closeSessions closes the bench's sessions (the masked and the plain).
func (b *bench) closeSessions() {
	if b.sess != nil {
		b.sess.Close()
	}
	if b.plain != nil {
		b.plain.Close()
	}
	b.sess, b.plain, b.plainOf = nil, nil, nil
}

// setSmooth makes the bench measure the encoder with its input blurred by
// a Gaussian of sigma input pixels (0: the encoder itself).
func (b *bench) setSmooth(sigma float64) error {
	m := b.in.Model
	if sigma > 0 {
		var err error
		if m, err = m.Smoothed(sigma); err != nil {
			return err
		}
	}
	b.model = m
	return b.open()
}

// distrust takes rows out of the trusted rows the filter's statistics come
// from (the means of the mean fill, the caps, the regression fill and the
// augment images): poison that reached the trusted set carries its
// trigger into them. A blend trigger drives a channel at every position,
// so a few such rows move its mean and quantiles far; the found trigger's
// region names them. The scan images stay, so that every collapse stays
// comparable with the first scan's random patterns. Nothing changes when
// fewer than 8 trusted rows would be left.
func (b *bench) distrust(rows []bool) error {
	t := make([]bool, len(b.trusted))
	n, changed := 0, false
	for i, ok := range b.trusted {
		t[i] = ok && !rows[i]
		if t[i] {
			n++
		}
		changed = changed || t[i] != ok
	}
	if !changed || n < 8 {
		return nil
	}
	b.trusted = t
	b.means = b.t.LayerMeans(t)
	return b.open()
}

// suspectAlso marks rows as suspects too (in suspect) and distrusts every
// suspect from then on.
func (b *bench) suspectAlso(suspect, rows []bool) error {
	orInto(suspect, rows)
	return b.distrust(suspect)
}

// channelStd is each channel's standard deviation over all rows of l.
// (Over the trusted rows only measured worse on T1: docs/DECISIONS.md.)
func channelStd(l feat.Matrix) []float64 {
	n := len(l.X) / l.D
	s, sq := make([]float64, l.D), make([]float64, l.D)
	for i := 0; i < n; i++ {
		for c, v := range l.X[i*l.D : (i+1)*l.D] {
			s[c] += float64(v)
			sq[c] += float64(v) * float64(v)
		}
	}
	out := make([]float64, l.D)
	for c := range out {
		m := s[c] / float64(n)
		out[c] = math.Sqrt(math.Max(sq[c]/float64(n)-m*m, 0))
	}
	return out
}

// subset returns a bench that measures on every step-th scan image only,
// through the same session: a cheaper screen of many patterns.
func (b *bench) subset(step int) *bench {
	few := *b
	canon := b.canvas.CanonicalSize()
	few.x = nil
	for i := 0; i < b.n; i += step {
		few.x = append(few.x, b.x[i*canon:(i+1)*canon]...)
	}
	few.n = len(few.x) / canon
	return &few
}

// pickTrusted returns the row index by sample_id of up to n trusted rows,
// taken round robin over the classes in row order.
func (b *bench) pickTrusted(n int) map[uint64]int {
	byClass := map[int32][]int{}
	for i, ok := range b.trusted {
		if ok {
			byClass[b.t.Labels[i]] = append(byClass[b.t.Labels[i]], i)
		}
	}
	var classes []int32
	for c := range byClass {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(a, c int) bool { return classes[a] < classes[c] })
	want := map[uint64]int{}
	for k := 0; len(want) < n; k++ {
		added := false
		for _, c := range classes {
			if k < len(byClass[c]) && len(want) < n {
				i := byClass[c][k]
				want[b.t.IDs[i]] = i
				added = true
			}
		}
		if !added {
			break
		}
	}
	return want
}

// rawSession opens a session of the unmasked encoder that returns the
// feature maps of layers whole. The caller closes it.
func (b *bench) rawSession(layers []string) (*encoder.Encoder, error) {
	return b.in.Model.Session(encoder.Config{Layers: layers, RawLayers: true, ORT: ort.Options{Device: b.p.Device}})
}

// rawTrusted is rawSession with fitImages trusted images decoded for it
// (x: n preprocessed images). The caller closes the session.
func (b *bench) rawTrusted(layers []string) (*encoder.Encoder, []float32, int, error) {
	enc, err := b.rawSession(layers)
	if err != nil {
		return nil, nil, 0, err
	}
	x, n, _, _, err := decode(b.in, b.pre, b.pickTrusted(fitImages), false)
	if err != nil {
		enc.Close()
		return nil, nil, 0, err
	}
	return enc, x, n, nil
}

// positions runs the n preprocessed images of each of xs through enc (a
// RawLayers session) in batches and calls fn for every position of every
// probed layer's feature maps with that position's channel values, one
// vector per image set (vs[k] from xs[k], the same image and position;
// reused between calls).
func positions(ctx context.Context, enc *encoder.Encoder, xs [][]float32, n int, fn func(layer int, vs [][]float32)) error {
	size := enc.ImageSize()
	const bs = 32
	vs := make([][]float32, len(xs))
	outs := make([][][]float32, len(xs)) // set, layer, values
	for lo := 0; lo < n; lo += bs {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(bs, n-lo)
		for k, x := range xs {
			buf, err := enc.Batch(m)
			if err != nil {
				return err
			}
			copy(buf, x[lo*size:(lo+m)*size])
			_, layers, err := enc.Embed(m)
			if err != nil {
				return err
			}
			if len(xs) == 1 {
				outs[k] = layers
				continue
			}
			outs[k] = outs[k][:0]
			for _, l := range layers { // the session reuses its outputs
				outs[k] = append(outs[k], append([]float32(nil), l...))
			}
		}
		for li, l := range enc.Layers {
			c := l.Channels
			per := len(outs[0][li]) / m // values per sample
			pos := per / c
			for s := 0; s < m; s++ {
				for p := 0; p < pos; p++ {
					for k := range xs {
						sample := outs[k][li][s*per : (s+1)*per]
						v := vs[k][:0]
						for j := 0; j < c; j++ {
							if l.Rank == 4 { // [C, H, W]
								v = append(v, sample[j*pos+p])
							} else { // [T, C]
								v = append(v, sample[p*c+j])
							}
						}
						vs[k] = v
					}
					fn(li, vs)
				}
			}
		}
	}
	return nil
}

// decode preprocesses the images of the rows in want (by sample_id), in
// file order: in canonical form (canonical), or as the encoder's input.
func decode(in *chanfilter.Inputs, pre encoder.Preprocess, want map[uint64]int, canonical bool) ([]float32, int, int, int, error) {
	r, err := in.Images.Reader()
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer r.Release()
	size, prep := pre.C*pre.H*pre.W, pre.Image
	if canonical {
		size, prep = pre.CanonicalSize(), pre.Pixels
	}
	var scratch, x []float32
	var hs, ws []int
	n := 0
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < ids.Len(); i++ {
			if _, ok := want[ids.Value(i)]; !ok {
				continue
			}
			x = append(x, make([]float32, size)...)
			if err := prep(imgs.Value(i), x[n*size:(n+1)*size], &scratch); err != nil {
				return nil, 0, 0, 0, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", ids.Value(i), err))
			}
			if cfg, _, err := arrowio.DecodeConfig(imgs.Value(i)); err == nil {
				hs, ws = append(hs, cfg.Height), append(ws, cfg.Width)
			}
			n++
		}
	}
	return x, n, median(hs), median(ws), r.Err()
}

// median of a few ints (0 for none).
func median(v []int) int {
	if len(v) == 0 {
		return 0
	}
	v = append([]int(nil), v...)
	sort.Ints(v)
	return v[len(v)/2]
}

// inputs writes the n scan images, with pat painted on (nil: clean), as
// the encoder's input into dst. Images resampled to a larger encoder
// (a 224-px model fed 32-px data) are painted on every core: each image on
// its own, so the values do not depend on the split.
func (b *bench) inputs(dst []float32, pat *Pattern) {
	canon, size := b.canvas.CanonicalSize(), b.pre.C*b.pre.H*b.pre.W
	workers := 1
	if b.sizeScale > 1 {
		workers = min(b.n, runtime.GOMAXPROCS(0))
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp := make([]float32, canon)
			var scratch []float32
			for i := w; i < b.n; i += workers {
				copy(tmp, b.x[i*canon:(i+1)*canon])
				b.paint(dst[i*size:(i+1)*size], tmp, pat, &scratch)
			}
		}()
	}
	wg.Wait()
}

// paint paints pat (nil: none) onto canon, one image in canonical form
// at the canvas's size, and writes it as the encoder's input into dst
// (C*H*W values), resampled to the encoder's size when the canvas is
// smaller. scratch is reused between calls.
func (b *bench) paint(dst, canon []float32, pat *Pattern, scratch *[]float32) {
	if pat != nil {
		pat.Apply(canon, b.canvas.H, b.canvas.W)
	}
	if b.sizeScale <= 1 {
		b.pre.Layout(dst, canon)
		return
	}
	if len(*scratch) != b.pre.CanonicalSize() {
		*scratch = make([]float32, b.pre.CanonicalSize())
	}
	b.pre.Resample(*scratch, canon, b.canvas.H, b.canvas.W)
	b.pre.Layout(dst, *scratch)
}

// view is one set of n scan images through the session: the images with a
// pattern pasted in (nil: clean), under a mask (nil: every channel kept)
// with one more channel switched off (nil: none).
type view struct {
	pat   *Pattern
	keep  map[string][]bool
	extra *channel
}

// channel names one probed channel.
type channel struct {
	layer string
	c     int
}

// maxRows bounds the images of one session run.
const maxRows = 1024

// run measures the scan images under each view and hands each view's
// embeddings ([n*Dim]) and probed layers' channel means ([layer][n*C]) to
// use, in order, valid during the call.
func (b *bench) run(views []view, use func(k int, emb []float32, layers [][]float32)) error {
	per := max(1, maxRows/b.n)
	size, n := b.sess.ImageSize(), b.n
	for lo := 0; lo < len(views); lo += per {
		vs := views[lo:min(len(views), lo+per)]
		rows := n * len(vs)
		s := b.sessionFor(vs)
		x, err := s.Batch(rows)
		if err != nil {
			return err
		}
		var ms [][]float32
		if s == b.sess {
			if ms, err = s.Masks(rows); err != nil {
				return err
			}
		}
		for k, v := range vs {
			b.inputs(x[k*n*size:(k+1)*n*size], v.pat)
			if ms == nil {
				continue // the plain session: every channel on
			}
			for li, l := range b.t.Layers {
				b.setKeep(ms[li][k*n*l.D:(k+1)*n*l.D], li, n, v.keep, v.extra)
			}
		}
		emb, layers, err := s.Embed(rows)
		if err != nil {
			return err
		}
		d := s.Dim
		for k := range vs {
			ls := make([][]float32, len(layers))
			for li, l := range b.t.Layers {
				ls[li] = layers[li][k*n*l.D : (k+1)*n*l.D]
			}
			use(lo+k, emb[k*n*d:(k+1)*n*d], ls)
		}
	}
	return nil
}

// sessionFor is the session for one batch of views: the plain one when
// it is open and no view switches a channel off, else the masked one.
func (b *bench) sessionFor(vs []view) *encoder.Encoder {
	if b.plain == nil {
		return b.sess
	}
	for _, v := range vs {
		if v.extra != nil {
			return b.sess
		}
		for _, kp := range v.keep {
			for _, on := range kp {
				if !on {
					return b.sess
				}
			}
		}
	}
	return b.plain
}

// embed returns each pattern's embeddings of the scan images under keep
// (nil pattern: clean), copied.
func (b *bench) embed(keep map[string][]bool, pats ...*Pattern) ([][]float32, error) {
	views := make([]view, len(pats))
	for i, p := range pats {
		views[i] = view{pat: p, keep: keep}
	}
	out := make([][]float32, len(pats))
	err := b.run(views, func(k int, emb []float32, _ [][]float32) { out[k] = append([]float32(nil), emb...) })
	return out, err
}

// sums returns, for each pattern (nil: clean), the probed channels'
// activations summed over the scan images under keep (layerSums).
func (b *bench) sums(keep map[string][]bool, pats ...*Pattern) ([][][]float64, error) {
	views := make([]view, len(pats))
	for i, p := range pats {
		views[i] = view{pat: p, keep: keep}
	}
	out := make([][][]float64, len(pats))
	err := b.run(views, func(k int, _ []float32, layers [][]float32) { out[k] = b.layerSums(layers) })
	return out, err
}

// layerSums sums each probed channel's activation over the scan images.
func (b *bench) layerSums(layers [][]float32) [][]float64 {
	out := make([][]float64, len(b.t.Layers))
	for li, l := range b.t.Layers {
		out[li] = make([]float64, l.D)
		for i := 0; i < b.n; i++ {
			for c, v := range layers[li][i*l.D : (i+1)*l.D] {
				out[li][c] += float64(v)
			}
		}
	}
	return out
}

// layerChange is, per probed layer and channel, how much a pattern moved
// the channel's mean activation over the scan images (sums from
// layerSums, clean and with the pattern), relative to its spread on the
// data: TAC's raw score.
func (b *bench) layerChange(clean, with [][]float64) [][]float64 {
	out := make([][]float64, len(clean))
	for li := range clean {
		out[li] = make([]float64, len(clean[li]))
		for c, m0 := range clean[li] {
			out[li][c] = math.Abs(with[li][c]-m0) / float64(b.n) / (b.spread[li][c] + 1e-6)
		}
	}
	return out
}

// robustZ standardises raw scores within each layer (median, MAD).
func (b *bench) robustZ(raw [][]float64) map[string][]float32 {
	out := map[string][]float32{}
	for li, l := range b.t.Layers {
		out[l.Name] = stat.RobustZ(raw[li])
	}
	return out
}

// collapseOf is 1 - tr/base: how much a pattern shrinks the spread of
// the embeddings. Embeddings without spread (an encoder masked into a
// constant) have nothing left to collapse: 0.
func collapseOf(tr, base float64) float64 {
	if base <= 1e-12 {
		return 0
	}
	return 1 - tr/base
}

// ones returns the keep flags of every probed channel, all true.
func (b *bench) ones() map[string][]bool {
	keep := map[string][]bool{}
	for _, l := range b.t.Layers {
		k := make([]bool, l.D)
		for i := range k {
			k[i] = true
		}
		keep[l.Name] = k
	}
	return keep
}
