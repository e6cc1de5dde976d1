package filter

import (
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// ClassSplit is what the filter found of a trigger planted in the images of
// one class (SplitClasses): the classes whose images split into rows that
// share one fine-grained pattern and rows that do not, and the rows that
// carry it.
type ClassSplit struct {
	// Separation is, per class searched, how far apart the two groups of
	// its rows lie in their detail (SplitClasses); MedianSeparation and
	// SeparationSD are their median and robust standard deviation over the
	// classes.
	MedianSeparation float64      `json:"median_separation"`
	SeparationSD     float64      `json:"separation_sd"`
	Flagged          []SplitClass `json:"flagged,omitempty"`
	// Carriers counts the rows that carry a pattern (once, if two views
	// found them).
	Carriers int    `json:"carriers"`
	Why      string `json:"why_none,omitempty"`
	// MedianGap is the classes' median sharpness gap; Nearest the class
	// left unflagged whose gap came nearest its bar (nil: the view is off).
	MedianGap float64   `json:"median_gap,omitempty"`
	Nearest   *GapClass `json:"nearest_unflagged,omitempty"`
}

// GapClass is one class's sharpness gap against the bar it had to reach.
type GapClass struct {
	Class int32   `json:"class"`
	Rows  int     `json:"rows"`
	Gap   float64 `json:"gap"`
	Bar   float64 `json:"bar"`
}

// SplitClass is one class whose images split, in one view of them.
type SplitClass struct {
	Class int32 `json:"class"`
	// View is what of the images split: "detail" (their fine detail) or
	// "sharpness" (where they are sharp and where smoothed).
	View       string  `json:"view"`
	Rows       int     `json:"rows"`
	Separation float64 `json:"separation"`
	// Z is the detail's separation against the other classes'; Gap how
	// far the sharpness groups' medians lie apart, in robust standard
	// deviations of the lower group.
	Z   float64 `json:"z,omitempty"`
	Gap float64 `json:"gap,omitempty"`
	// Bar is the figure this class had to reach: in the detail view the z
	// bar (SplitParams.Z), in the sharpness view its gap bar
	// (SplitParams.Bar).
	Bar float64 `json:"bar,omitempty"`
	// Cut is the cosine with the class's pattern above which a row
	// carries it; Carriers how many of the class's rows do.
	Cut      float64 `json:"cut"`
	Carriers int     `json:"carriers"`
}

// Figure is what flagged the class against its Bar: Gap in the sharpness
// view, Z in the detail view.
func (s SplitClass) Figure() float64 {
	if s.View == "sharpness" {
		return s.Gap
	}
	return s.Z
}

// SplitParams are SplitClasses' parameters (the filter's split_*).
//
// The sharpness gap of a clean class is the chance split of a unimodal
// spread, so how far it strays from the classes' median shrinks with the
// square root of the rows it is taken over (docs/DECISIONS.md: 45-row
// GTSRB classes reach 5.2, 5,000-row CIFAR-10 classes stay under 2.9).
type SplitParams struct {
	// Z flags a class whose detail's separation lies this many robust
	// standard deviations above the classes' median (0: off).
	Z float64
	// Gap flags a class whose sharpness splits into groups whose medians
	// lie this many robust standard deviations of the lower group apart
	// (0: that view is off), or, for a class of more than GapRows rows
	// (0: none), a lower bar (Bar).
	Gap float64
	// GapRows and GapFloor lower the sharpness bar for large classes
	// (Bar).
	GapRows  int
	GapFloor float64
	// Sigma is the Gaussian (pixels) whose blur each image's high-pass
	// detail is taken against.
	Sigma float64
	// K puts the cut this many robust standard deviations above the
	// median cosine of the class's other rows; GapK, when above 0, does
	// so instead in a class the sharpness view flagged and the detail
	// view did not.
	K, GapK float64
	// MinRows is the fewest rows a class needs to be searched.
	MinRows int
}

// Bar is the sharpness gap a class of n rows must reach to be flagged,
// when the classes' median gap is median: Gap up to GapRows rows (and
// for every class when GapRows is 0); above, median plus the larger of
// GapFloor and (Gap - median) times the square root of GapRows over n.
func (p SplitParams) Bar(n int, median float64) float64 {
	if p.GapRows <= 0 || n <= p.GapRows || p.Gap <= median {
		return p.Gap
	}
	return median + math.Max(p.GapFloor, (p.Gap-median)*math.Sqrt(float64(p.GapRows)/float64(n)))
}

// gapK is the cut's K in a class the sharpness view flagged: GapK when it
// is set and the detail view left the class alone (where it flagged the
// class too, the trigger is pasted or blended detail whose carriers its
// cut already took, and a lower cut adds only the class's own rows).
func (p SplitParams) gapK(detailFlagged bool) float64 {
	if p.GapK > 0 && !detailFlagged {
		return p.GapK
	}
	return p.K
}

// Images are n images of c planes of h x w values (canonical form, RGB
// planes in [0, 1]), one after the other.
type Images struct {
	X       []float32
	N, C, H int
	W       int
}

func (im Images) size() int           { return im.C * im.H * im.W }
func (im Images) row(i int) []float32 { return im.X[i*im.size() : (i+1)*im.size()] }

// SplitClasses looks, in every class, for part of its images sharing one
// fine-grained pattern the rest lack: the mark a trigger pasted, blended or
// warped into many images of one label (a dirty-label attack) leaves however
// the encoder sees them. It looks in two views of each image, each a unit
// vector compared by cosine with its class's mean, whose cosines split at the
// cut that leaves the least variance within the two groups:
//
//   - detail, the image minus its Gaussian blur: a pasted or blended pattern
//     adds the same detail to every carrier. The class's separation is the
//     distance between the groups' means over their pooled standard
//     deviation; natural classes separate alike, and a class whose
//     separation stands p.Z robust standard deviations above the median is
//     flagged.
//   - sharpness, per pixel the log ratio of the energy of one-pixel steps to
//     that of two-pixel steps, less the mean over all images: a warp or a
//     blend resamples every carrier alike, smoothing the same places. The
//     class is flagged when the upper group's median lies p.Bar (p.Gap,
//     lower for large classes) robust standard deviations of the lower
//     group above the lower's median.
//
// In a flagged class the group whose vectors agree more with each other
// (coherence: a trigger is one pattern in every image carrying it) carries
// the pattern, which is sharpened to what that group has beyond the other; a
// row carries it when its cosine with it lies p.K robust standard deviations
// above the other group's median (p.GapK, when set, in a class only the
// sharpness view flagged). It returns the report, which rows carry a
// pattern, and for each class flagged in its detail the pattern in the pixels
// (the carriers' mean image minus the class's other rows' mean; a warp has
// none).
func SplitClasses(im Images, labels []int32, p SplitParams) (*ClassSplit, []bool, []Pattern, error) {
	if len(labels) != im.N || len(im.X) != im.N*im.size() {
		return nil, nil, nil, fmt.Errorf("filter: %d labels and %d values for %d images of %d", len(labels), len(im.X), im.N, im.size())
	}
	rep := &ClassSplit{}
	carrier := make([]bool, im.N)
	byClass := map[int32][]int{}
	for i, l := range labels {
		byClass[l] = append(byClass[l], i)
	}
	var classes []int32
	for c, rows := range byClass {
		if len(rows) >= max(p.MinRows, 4) {
			classes = append(classes, c)
		}
	}
	sort.Slice(classes, func(a, b int) bool { return classes[a] < classes[b] })
	if (p.Z <= 0 && p.Gap <= 0) || len(classes) < 3 {
		rep.Why = "off, or fewer than 3 classes with enough rows"
		return rep, carrier, nil, nil
	}
	var pats []Pattern
	detail := map[int32]bool{} // classes the detail view flagged
	if p.Z > 0 {
		hp := newHighPass(im, p.Sigma)
		splits := splitEach(hp, classes, byClass)
		med, sd := stat.Robust(each(splits, func(s classSplit) float64 { return s.sep }))
		rep.MedianSeparation, rep.SeparationSD = med, sd
		for _, s := range splits {
			z := (s.sep - med) / math.Max(sd, 1e-9)
			if z < p.Z {
				continue
			}
			sc, in, out := s.carriers(hp, byClass[s.c], p.K)
			sc.View, sc.Z, sc.Bar = "detail", z, p.Z
			detail[s.c] = true
			rep.Flagged = append(rep.Flagged, sc)
			mark(carrier, in)
			if len(in) > 0 && len(out) > 0 {
				delta := make([]float32, im.size())
				meanInto(delta, im, in, 1)
				meanInto(delta, im, out, -1)
				pats = append(pats, Pattern{Kind: "delta", Delta: delta, Targeted: true, Target: s.c})
			}
		}
	}
	var sh *sharpness
	if p.Gap > 0 {
		sh = newSharpness(im) // a pass over every image: only when the view is on
	}
	if sh != nil {
		splits := splitEach(sh, classes, byClass)
		rep.MedianGap, _ = stat.Robust(each(splits, func(s classSplit) float64 { return s.gap }))
		for _, s := range splits {
			bar := p.Bar(len(s.cos), rep.MedianGap)
			if s.gap < bar {
				if rep.Nearest == nil || s.gap-bar > rep.Nearest.Gap-rep.Nearest.Bar {
					rep.Nearest = &GapClass{Class: s.c, Rows: len(s.cos), Gap: s.gap, Bar: bar}
				}
				continue
			}
			sc, in, _ := s.carriers(sh, byClass[s.c], p.gapK(detail[s.c]))
			sc.View, sc.Gap, sc.Bar = "sharpness", s.gap, bar
			rep.Flagged = append(rep.Flagged, sc)
			mark(carrier, in)
		}
	}
	for _, c := range carrier {
		if c {
			rep.Carriers++
		}
	}
	if len(rep.Flagged) == 0 {
		rep.Why = "no class's images split apart"
	}
	return rep, carrier, pats, nil
}

// mark sets carrier[i] for each of rows.
func mark(carrier []bool, rows []int) {
	for _, i := range rows {
		carrier[i] = true
	}
}

// classSplit is one class's rows split in one view: their cosines with the
// class's mean vector, the cut between the two groups, the groups'
// separation (distance of means over pooled sd) and gap (distance of medians
// over the lower group's robust sd).
type classSplit struct {
	c             int32
	cos           []float64
	sep, cut, gap float64
}

// each is f of every split, in order.
func each(splits []classSplit, f func(classSplit) float64) []float64 {
	out := make([]float64, len(splits))
	for k, s := range splits {
		out[k] = f(s)
	}
	return out
}

// splitEach splits every class's rows in view v.
func splitEach(v imageView, classes []int32, byClass map[int32][]int) []classSplit {
	out := make([]classSplit, 0, len(classes))
	for _, c := range classes {
		rows := byClass[c]
		cos := cosines(v, rows, unit(meanOf(v, rows)))
		sep, cut := split1D(cos)
		var up, lo []float64
		for _, x := range cos {
			if x > cut {
				up = append(up, x)
			} else {
				lo = append(lo, x)
			}
		}
		mu, _ := stat.Robust(up)
		ml, sl := stat.Robust(lo)
		out = append(out, classSplit{c: c, cos: cos, sep: sep, cut: cut, gap: (mu - ml) / math.Max(sl, 1e-9)})
	}
	return out
}

// carriers finds which of the class's rows carry its pattern in view v
// (SplitClasses): the more coherent group's mean less the other's, and a
// cut k robust standard deviations above the other group's median cosine
// with it. It returns the class's report (without its view) and the rows
// in and out.
func (s classSplit) carriers(v imageView, rows []int, k float64) (SplitClass, []int, []int) {
	var upper, lower []int
	for j, i := range rows {
		if s.cos[j] > s.cut {
			upper = append(upper, i)
		} else {
			lower = append(lower, i)
		}
	}
	// Which group carries the pattern: the one whose vectors agree more
	// with each other (a trigger is one pattern in every image that
	// carries it; natural images each have their own). The class's mean
	// leans to whichever group is larger, so the split alone does not say.
	mu, ml := meanOf(v, upper), meanOf(v, lower)
	carry, upperCarries := mu, coherence(mu, len(upper)) >= coherence(ml, len(lower))
	other := ml
	if !upperCarries {
		carry, other = ml, mu
	}
	// The carrying group's vector beyond the other's: the class's own
	// share cancels.
	for j, x := range other {
		carry[j] -= x
	}
	cos := cosines(v, rows, unit(carry))
	var low []float64
	for j := range rows {
		if (s.cos[j] > s.cut) != upperCarries {
			low = append(low, cos[j])
		}
	}
	lm, lsd := stat.Robust(low)
	cut := lm + k*lsd
	var in, out []int
	for j, i := range rows {
		if cos[j] > cut {
			in = append(in, i)
		} else {
			out = append(out, i)
		}
	}
	return SplitClass{Class: s.c, Rows: len(rows), Separation: s.sep, Cut: cut, Carriers: len(in)}, in, out
}

// meanInto adds sign times the mean of rows' images to dst.
func meanInto(dst []float32, im Images, rows []int, sign float64) {
	acc := make([]float64, len(dst))
	for _, i := range rows {
		for j, v := range im.row(i) {
			acc[j] += float64(v)
		}
	}
	for j := range dst {
		dst[j] += float32(sign * acc[j] / float64(len(rows)))
	}
}

// split1D splits v at the cut that leaves the least variance within the
// two groups (each at least 5% of v and 2 values) and returns the distance
// between the groups' means over their pooled standard deviation, and the
// cut (the midpoint between the groups' nearest values).
func split1D(v []float64) (sep, cut float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	cs, cs2 := make([]float64, n+1), make([]float64, n+1)
	for i, x := range s {
		cs[i+1], cs2[i+1] = cs[i]+x, cs2[i]+x*x
	}
	lo := max(2, n/20)
	best, bk := math.Inf(1), -1
	var bm1, bm2 float64
	for k := lo; k <= n-lo; k++ {
		m1, m2 := cs[k]/float64(k), (cs[n]-cs[k])/float64(n-k)
		w := (cs2[k] - float64(k)*m1*m1 + cs2[n] - cs2[k] - float64(n-k)*m2*m2) / float64(n)
		if w < best {
			best, bk, bm1, bm2 = w, k, m1, m2
		}
	}
	if bk < 0 {
		return 0, math.Inf(1)
	}
	return (bm2 - bm1) / math.Sqrt(math.Max(best, 1e-12)), (s[bk-1] + s[bk]) / 2
}

// highPass turns images into their unit-length detail: the image minus its
// Gaussian blur (each plane on its own, borders reflected). It is not safe
// for concurrent use (its buffer); clone gives each goroutine its own.
type highPass struct {
	im     Images
	kernel []float32
	// xs and ys are, per output column and row, the reflected input
	// column and row of each kernel tap.
	xs, ys [][]int
	buf    []float32
}

func newHighPass(im Images, sigma float64) *highPass {
	k := onnxgraph.GaussianKernel(sigma)
	taps := func(n int) [][]int {
		r := len(k) / 2
		out := make([][]int, n)
		for i := range out {
			out[i] = make([]int, len(k))
			for j := range k {
				out[i][j] = reflect(i+j-r, n)
			}
		}
		return out
	}
	return &highPass{im: im, kernel: k, xs: taps(im.W), ys: taps(im.H), buf: make([]float32, 2*im.size())}
}

// clone returns a highPass sharing h's images and tables with its own
// buffer.
func (h *highPass) clone() imageView {
	c := *h
	c.buf = make([]float32, len(h.buf))
	return &c
}

// reflect maps i into [0, n) as a mirror at the borders that does not
// repeat the edge (ONNX Pad's reflect mode).
func reflect(i, n int) int {
	for n > 1 && (i < 0 || i >= n) {
		if i < 0 {
			i = -i
		}
		if i >= n {
			i = 2*(n-1) - i
		}
	}
	return min(max(i, 0), n-1)
}

func (h *highPass) dim() int { return h.im.size() }

// vec returns row i's unit-length detail (in a buffer reused by the next
// call).
func (h *highPass) vec(i int) []float32 {
	x := h.im.row(i)
	tmp, out := h.buf[:len(x)], h.buf[len(x):]
	H, W := h.im.H, h.im.W
	for c := 0; c < h.im.C; c++ {
		p := x[c*H*W : (c+1)*H*W]
		t := tmp[c*H*W : (c+1)*H*W]
		o := out[c*H*W : (c+1)*H*W]
		for y := 0; y < H; y++ {
			row := p[y*W : (y+1)*W]
			for xx := 0; xx < W; xx++ {
				var s float32
				for k, j := range h.xs[xx] {
					s += h.kernel[k] * row[j]
				}
				t[y*W+xx] = s
			}
		}
		for y := 0; y < H; y++ {
			ys := h.ys[y]
			for xx := 0; xx < W; xx++ {
				var s float32
				for k, j := range ys {
					s += h.kernel[k] * t[j*W+xx]
				}
				o[y*W+xx] = p[y*W+xx] - s
			}
		}
	}
	return unit32(out)
}

// unit32 scales v to unit length in place (a zero vector stays zero) and
// returns it.
func unit32(v []float32) []float32 {
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	if n > 0 {
		s := float32(1 / math.Sqrt(n))
		for j := range v {
			v[j] *= s
		}
	}
	return v
}

// imageView is one way of seeing a row's image as a unit vector, which the class
// split compares by cosine. An imageView is not safe for concurrent use (its
// buffers); clone gives each goroutine its own.
type imageView interface {
	// vec returns row i's unit vector, in a buffer reused by the next call.
	vec(i int) []float32
	dim() int
	clone() imageView
}

// meanOf returns the mean of rows' vectors in view v (summed in row order,
// so that it does not depend on the CPUs).
func meanOf(v imageView, rows []int) []float64 {
	m := make([]float64, v.dim())
	for _, i := range rows {
		for j, x := range v.vec(i) {
			m[j] += float64(x)
		}
	}
	for j := range m {
		m[j] /= float64(max(len(rows), 1))
	}
	return m
}

// coherence is the mean pairwise cosine of n unit vectors whose mean is m:
// (n |m|^2 - 1) / (n - 1), the share of their direction they have in
// common (about 0 for unrelated vectors, whatever n).
func coherence(m []float64, n int) float64 {
	if n < 2 {
		return 0
	}
	var s float64
	for _, v := range m {
		s += v * v
	}
	return (float64(n)*s - 1) / float64(n-1)
}

// unit scales v to unit length in place (a zero vector stays zero) and
// returns it.
func unit(v []float64) []float64 {
	var n float64
	for _, x := range v {
		n += x * x
	}
	if n > 0 {
		s := 1 / math.Sqrt(n)
		for j := range v {
			v[j] *= s
		}
	}
	return v
}

// cosines returns each row's vector's cosine in view v with the unit vector
// u. Rows are spread over the CPUs; each cosine is computed as it would be
// alone.
func cosines(v imageView, rows []int, u []float64) []float64 {
	out := make([]float64, len(rows))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(rows)/64))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(v imageView, lo, hi int) {
			defer wg.Done()
			for k := lo; k < hi; k++ {
				var d float64
				for j, x := range v.vec(rows[k]) {
					d += float64(x) * u[j]
				}
				out[k] = d
			}
		}(v.clone(), w*len(rows)/workers, (w+1)*len(rows)/workers)
	}
	wg.Wait()
	return out
}
