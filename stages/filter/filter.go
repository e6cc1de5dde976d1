// Package filter is T-Core's third stage: selective encoder channel
// filtering (ALGORITHM.md, stage 3). It scans the encoder for a backdoor by
// a black-box trigger search (a small pattern that makes the embeddings of
// diverse trusted images collapse, judged against random patterns of the
// same size), and when it finds one, switches off the channels the found
// trigger drives (largest trusted-activation change first) until the
// pattern no longer collapses the embeddings more than a random one, then
// searches the masked encoder again and masks on while it still finds a
// collapsing pattern. Masked
// channels are replaced by their mean on trusted images, inside the graph;
// the filtered encoder is written as ONNX for the next stages.
package filter

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the filter stage.
type Stage struct{}

// New returns the filter stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "filter",
		Version: "0.1.0",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training images"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "their features (probed layers) under the encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Doc: "the trusted core (expand.trusted)"},
		},
		Outputs: []plugin.PortSpec{
			{Name: "channels", Kind: arrowio.KindChannels, Doc: "every probed channel: keep, suspicion score, signal"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "the training rows' embeddings under the filtered encoder (the input features, passed on, when nothing is masked)"},
			{Name: "scores", Kind: arrowio.KindScores, Doc: "filter.trigger_distance (embedding distance to where the found trigger collapses inputs), filter.suspect (inside that region)"},
			{Name: "augment", Kind: arrowio.KindFeatures, Doc: "trusted images carrying the patterns masked against, embedded by the filtered encoder, with their own labels (rows for the head to learn that the pattern means nothing); empty when nothing is masked"},
		},
		Params: []plugin.ParamSpec{
			{Name: "encoder", Default: json.RawMessage(`""`), Doc: "the encoder (ONNX); tcore run sets it"},
			{Name: "export", Default: json.RawMessage(`""`), Doc: "where to write the filtered encoder (ONNX)"},
			{Name: "trusted_column", Default: json.RawMessage(`"expand.trusted"`), Doc: "boolean column of the trusted input"},
			{Name: "scan_images", Default: json.RawMessage(`64`), Doc: "trusted images of different classes the scan collapses"},
			{Name: "candidates", Default: json.RawMessage(`2000`), Doc: "random candidate patterns"},
			{Name: "refine", Default: json.RawMessage(`200`), Doc: "local refinement steps around the best 10"},
			{Name: "sizes", Default: json.RawMessage(`[3, 10]`), Doc: "patch sizes searched (min, max)"},
			{Name: "gap_min", Default: json.RawMessage(`6.0`), Doc: "the encoder looks backdoored when the best same-size z reaches this"},
			{Name: "u", Default: json.RawMessage(`3.0`), Doc: "channels with a suspicion z above this are candidates for masking"},
			{Name: "max_masked", Default: json.RawMessage(`0.1`), Doc: "mask at most this fraction of the probed channels"},
			{Name: "choice", Default: json.RawMessage(`"collapse_per_change"`), Doc: "how channels are chosen for masking: suspicion (decreasing suspicion z above u), collapse (greedy: the channel whose masking lowers the found pattern's collapse the most, among the pool_size most suspicious) or collapse_per_change (greedy: the most lowering per change of the clean images' embeddings)"},
			{Name: "pool_size", Default: json.RawMessage(`0`), Doc: "channels the collapse choice considers: the most suspicious this many (0: every probed channel)"},
			{Name: "fill", Default: json.RawMessage(`"regression"`), Doc: "what a masked channel becomes: mean (its mean on trusted images) or regression (a ridge regression on its layer's kept channels that no signal finds suspicious, fitted on trusted images; kept only when the patterns masked against stay within fill_slack same-size z of the mean fill)"},
			{Name: "fill_slack", Default: json.RawMessage(`1.0`), Doc: "how much higher (same-size z) the regression fill may leave the worst pattern masked against than the mean fill"},
			{Name: "stop_z", Default: json.RawMessage(`0.0`), Doc: "mask until the found pattern's same-size z falls to this (0: the random patterns' median collapse)"},
			{Name: "rescans", Default: json.RawMessage(`3`), Doc: "after masking, search the masked encoder again (from the patterns found) and mask on while it still looks backdoored, this many times at most"},
			{Name: "rescan_candidates", Default: json.RawMessage(`500`), Doc: "random candidates of each search on the masked encoder"},
			{Name: "rescan_gap", Default: json.RawMessage(`0`), Doc: "mask on while a search on the masked encoder reaches this same-size z (0: gap_min)"},
			{Name: "signals", Default: json.RawMessage(`["tac", "uclc", "probe"]`), Doc: "per-channel suspicion signals whose largest robust z scores a channel: tac (change under the found pattern), uclc (kernel Lipschitz bound), probe (largest change under the random patches of the scan)"},
			{Name: "augment_share", Default: json.RawMessage(`0.2`), Doc: "trusted images written to augment, as a share of the training rows (round robin over the classes; at most every trusted row), each with one of the patterns masked against or their neighbours pasted in (0: none)"},
			{Name: "neighbour_z", Default: json.RawMessage(`3.0`), Doc: "after a search on the masked encoder, mask on while a neighbour of a pattern already masked against (grown, shrunk or moved by a pixel or two) still reaches this same-size z (0: off)"},
			{Name: "seed", Default: json.RawMessage(`1`), Doc: "random seed"},
			{Name: "device", Default: json.RawMessage(`"cpu"`), Doc: "cpu, cuda or cuda:N"},
		},
		NeedsAllRows: true,
	}
}

// Params are filter's parameters.
type Params struct {
	Encoder       string   `json:"encoder"`
	Export        string   `json:"export"`
	TrustedColumn string   `json:"trusted_column"`
	ScanImages    int      `json:"scan_images"`
	Candidates    int      `json:"candidates"`
	Refine        int      `json:"refine"`
	Sizes         [2]int   `json:"sizes"`
	GapMin        float64  `json:"gap_min"`
	U             float64  `json:"u"`
	MaxMasked     float64  `json:"max_masked"`
	StopZ         float64  `json:"stop_z"`
	Choice        string   `json:"choice"`
	Fill          string   `json:"fill"`
	FillSlack     float64  `json:"fill_slack"`
	PoolSize      int      `json:"pool_size"`
	Rescans       int      `json:"rescans"`
	RescanCands   int      `json:"rescan_candidates"`
	RescanGap     float64  `json:"rescan_gap"`
	NeighbourZ    float64  `json:"neighbour_z"`
	AugmentShare  float64  `json:"augment_share"`
	Signals       []string `json:"signals"`
	Seed          uint64   `json:"seed"`
	Device        string   `json:"device"`
}

// Check implements plugin.Checker: it validates the parameters.
func (p Params) Check() error {
	switch {
	case p.Encoder == "":
		return plugin.BadInputf("parameter \"encoder\": no encoder given")
	case p.ScanImages < 8:
		return plugin.BadInputf("parameter \"scan_images\": %d, want >= 8", p.ScanImages)
	case p.Candidates < 20:
		return plugin.BadInputf("parameter \"candidates\": %d, want >= 20", p.Candidates)
	case p.Rescans < 0:
		return plugin.BadInputf("parameter \"rescans\": %d, want >= 0", p.Rescans)
	case p.RescanCands < 20:
		return plugin.BadInputf("parameter \"rescan_candidates\": %d, want >= 20", p.RescanCands)
	case p.Refine < 0:
		return plugin.BadInputf("parameter \"refine\": %d, want >= 0", p.Refine)
	case p.Sizes[0] < 1 || p.Sizes[1] < p.Sizes[0]:
		return plugin.BadInputf("parameter \"sizes\": %v, want [min, max] with 1 <= min <= max", p.Sizes)
	case p.MaxMasked <= 0 || p.MaxMasked > 1:
		return plugin.BadInputf("parameter \"max_masked\": %v, want (0, 1]", p.MaxMasked)
	case !validSignals(p.Signals):
		return plugin.BadInputf("parameter \"signals\": %q, want a non-empty list of tac, uclc, probe", p.Signals)
	case p.Choice != "suspicion" && p.Choice != "collapse" && p.Choice != "collapse_per_change":
		return plugin.BadInputf("parameter \"choice\": %q, want suspicion, collapse or collapse_per_change", p.Choice)
	case p.Fill != "mean" && p.Fill != "regression":
		return plugin.BadInputf("parameter \"fill\": %q, want mean or regression", p.Fill)
	case p.FillSlack < 0:
		return plugin.BadInputf("parameter \"fill_slack\": %v, want >= 0", p.FillSlack)
	case p.PoolSize < 0:
		return plugin.BadInputf("parameter \"pool_size\": %d, want >= 0 (0: every channel)", p.PoolSize)
	case p.AugmentShare < 0 || p.AugmentShare > 1:
		return plugin.BadInputf("parameter \"augment_share\": %v, want [0, 1]", p.AugmentShare)
	case p.NeighbourZ < 0:
		return plugin.BadInputf("parameter \"neighbour_z\": %v, want >= 0 (0: off)", p.NeighbourZ)
	}
	return ort.CheckDevice(p.Device)
}

func validSignals(ss []string) bool {
	seen := map[string]bool{}
	for _, s := range ss {
		if (s != "tac" && s != "uclc" && s != "probe") || seen[s] {
			return false
		}
		seen[s] = true
	}
	return len(ss) > 0
}

func (p Params) uses(signal string) bool {
	for _, s := range p.Signals {
		if s == signal {
			return true
		}
	}
	return false
}

// Scan is the encoder scan's result.
type Scan struct {
	Backdoored   bool               `json:"backdoored"`
	BestZ        float64            `json:"best_z"`
	BestCollapse float64            `json:"best_collapse"`
	Pattern      Pattern            `json:"pattern"`
	RandomMedian map[string]float64 `json:"random_median_collapse"`
	Candidates   int                `json:"candidates"`
	GapMin       float64            `json:"gap_min"`
	Seconds      float64            `json:"seconds"`
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	t, err := feat.OpenProbed(in, "features")
	if err != nil {
		return nil, err
	}
	trusted, err := feat.Bools(in, "trusted", t, p.TrustedColumn)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range t.Layers {
		names = append(names, l.Name)
	}
	enc, err := encoder.Open(p.Encoder, encoder.Config{Layers: names, ORT: ort.Options{Device: p.Device}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	f := &filterRun{p: p, t: t, enc: enc, rng: rand.New(rand.NewPCG(p.Seed, 0x66696c))}
	defer func() {
		if f.images != nil {
			f.images.Release()
		}
	}()
	if err := f.loadScanImages(in, trusted); err != nil {
		return nil, err
	}
	sr, err := f.searcher(enc)
	if err != nil {
		return nil, err
	}
	sr.probe = make([][]float64, len(t.Layers))
	for li, l := range t.Layers {
		sr.probe[li] = make([]float64, l.D)
	}
	scan, stats, found, err := sr.search(ctx, p.Candidates, p.Refine, nil, progress)
	if err != nil {
		return nil, err
	}
	f.probe = f.robustZ(sr.probe)
	metrics := plugin.Metrics{"encoder_scan": scan}
	keep := map[string][]bool{}
	score := map[string][]float32{}
	for _, l := range t.Layers {
		keep[l.Name] = ones(l.D)
		score[l.Name] = make([]float32, l.D)
	}
	signals := map[string][]string{}
	fill := t.LayerMeans(trusted) // what a masked channel becomes (mean fill)
	var masked []string
	if scan.Backdoored {
		if err := f.uclcScores(enc); err != nil {
			metrics["uclc_unavailable"] = err.Error()
		}
		tz, err := f.tac(enc, scan.Pattern)
		if err != nil {
			return nil, err
		}
		z := f.suspicion(tz, signals)
		score = z
		var rounds []Round
		masked, keep, rounds, err = f.selectChannels(ctx, scan, stats, found, z, fill)
		if err != nil {
			return nil, err
		}
		metrics["masked"] = masked
		metrics["rounds"] = rounds
		metrics["collapse_after_mask"] = f.lastCollapse
		metrics["z_after_mask"] = f.lastZ
	} else {
		metrics["why_no_mask"] = fmt.Sprintf("best same-size z %.1f < gap_min %.1f: the encoder does not look backdoored", scan.BestZ, p.GapMin)
	}
	metrics["channels_masked"] = len(masked)
	dist := make([]float32, t.N())
	suspect := make([]bool, t.N())
	if scan.Backdoored {
		region, err := f.triggerRegion(scan.Pattern, trusted, dist, suspect)
		if err != nil {
			return nil, err
		}
		metrics["trigger_region"] = region
	}
	if err := feat.WriteScores(out, "scores", t.IDs, []feat.Column{{Name: "filter.trigger_distance", F: dist}, {Name: "filter.suspect", B: suspect}}); err != nil {
		return nil, err
	}
	var pats []Pattern
	if rs, ok := metrics["rounds"].([]Round); ok {
		for _, r := range rs {
			if len(r.Masked) > 0 {
				// The pattern and its neighbours: the trigger is near it.
				pats = append(pats, r.Pattern)
				pats = append(pats, neighbours(r.Pattern, enc.H, enc.W, p.Sizes)...)
			}
		}
	}
	var weights map[string][]float32
	if len(masked) > 0 && p.Fill == "regression" {
		var guard map[string]any
		if fill, weights, guard, err = f.chooseFill(ctx, keep, score, fill, trusted, pats); err != nil {
			return nil, err
		}
		metrics["fill"] = guard
	}
	na, err := f.augment(ctx, encoder.MasksOf(keep, fill, weights), pats, trusted, out)
	if err != nil {
		return nil, err
	}
	metrics["augment_rows"] = na
	v := &encoder.ChannelVerdict{Keep: keep, Score: score, Fill: fill, Weights: weights, Signals: signals}
	if err := encoder.WriteFiltered(ctx, p.Encoder, p.Device, p.Export, t, f.images, v, out, progress); err != nil {
		return nil, err
	}
	if p.Export != "" {
		metrics["exported"] = p.Export
	}
	return metrics, nil
}

func ones(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// filterRun holds one run's state.
type filterRun struct {
	p            Params
	t            *feat.Table
	enc          *encoder.Encoder
	rng          *rand.Rand
	x            []float32 // scan images, preprocessed
	n            int
	lastCollapse float64
	lastZ        float64
	lastStats    groupStats           // the same-size statistics of the last search
	images       *encoder.Images      // the images input, held for the embedding of the filtered encoder
	uclc         map[string][]float32 // UCLC robust z per channel, when the encoder's convolutions are readable
	probe        map[string][]float32 // probe sensitivity robust z per channel
	spreads      [][]float64          // per layer and channel, see spread
}

// pickTrusted returns the row index by sample_id of up to n trusted rows,
// taken round robin over the classes in row order.
func (f *filterRun) pickTrusted(trusted []bool, n int) map[uint64]int {
	byClass := map[int32][]int{}
	for i, ok := range trusted {
		if ok {
			byClass[f.t.Labels[i]] = append(byClass[f.t.Labels[i]], i)
		}
	}
	var classes []int32
	for c := range byClass {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(a, b int) bool { return classes[a] < classes[b] })
	want := map[uint64]int{}
	for k := 0; len(want) < n; k++ {
		added := false
		for _, c := range classes {
			if k < len(byClass[c]) && len(want) < n {
				i := byClass[c][k]
				want[f.t.IDs[i]] = i
				added = true
			}
		}
		if !added {
			break
		}
	}
	return want
}

// augment writes the augment output: augment_share of the rows, trusted images,
// each with one of pats pasted in (in turn), embedded by the encoder with
// masks, with their own labels. Nothing is written but the schema when
// nothing is masked. It returns the rows written.
func (f *filterRun) augment(ctx context.Context, masks []encoder.Mask, pats []Pattern, trusted []bool, out plugin.Outputs) (int, error) {
	schema := f.enc.FeaturesSchema() // masks do not change it
	w, err := out.Create("augment", schema)
	if err != nil {
		return 0, err
	}
	if len(masks) == 0 || len(pats) == 0 || f.p.AugmentShare == 0 {
		return 0, w.Close()
	}
	enc, err := f.openMasked(masks)
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	want := f.pickTrusted(trusted, max(1, int(f.p.AugmentShare*float64(len(trusted)))))
	r, err := f.images.Reader()
	if err != nil {
		return 0, err
	}
	defer r.Release()
	const bs = 256
	size := enc.ImageSize()
	pre := encoder.ForEncoder(enc)
	var scratch []float32
	var ids []uint64
	var labels []int32
	written := 0
	stage := make([]float32, bs*size)
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		b, err := enc.Batch(len(ids))
		if err != nil {
			return err
		}
		copy(b, stage[:len(ids)*size])
		emb, layers, err := enc.Embed(len(ids))
		if err != nil {
			return err
		}
		rec := arrowio.NewFeaturesRecord(schema, ids, labels, append([][]float32{emb}, layers...))
		err = w.Write(rec)
		rec.Release()
		written += len(ids)
		ids, labels = ids[:0], labels[:0]
		return err
	}
	for r.Next() {
		rec := r.Record()
		col := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < col.Len(); i++ {
			row, ok := want[col.Value(i)]
			if !ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			dst := stage[len(ids)*size : (len(ids)+1)*size]
			if err := pre.Image(imgs.Value(i), dst, &scratch); err != nil {
				return 0, plugin.PortError("images", plugin.BadInputf("sample_id %d: %v", col.Value(i), err))
			}
			pats[(written+len(ids))%len(pats)].Apply(dst, enc.H, enc.W)
			ids = append(ids, col.Value(i))
			labels = append(labels, f.t.Labels[row])
			if len(ids) == bs {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
	}
	if err := r.Err(); err != nil {
		return 0, err
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return written, w.Close()
}

// loadScanImages decodes scan_images trusted images, round robin over the
// classes.
func (f *filterRun) loadScanImages(in plugin.Inputs, trusted []bool) error {
	want := f.pickTrusted(trusted, f.p.ScanImages)
	if len(want) < 8 {
		return plugin.PortError("trusted", plugin.BadInputf("only %d trusted images; the scan needs at least 8", len(want)))
	}
	var err error
	if f.images, err = encoder.HoldImages(in, "images"); err != nil {
		return err
	}
	f.x, f.n, err = f.decode(f.enc, want)
	return err
}

// openMasked opens the encoder probing every layer of the features, with
// masks baked in.
func (f *filterRun) openMasked(masks []encoder.Mask) (*encoder.Encoder, error) {
	var names []string
	for _, l := range f.t.Layers {
		names = append(names, l.Name)
	}
	return encoder.Open(f.p.Encoder, encoder.Config{Layers: names, Masks: masks, ORT: ort.Options{Device: f.p.Device}})
}

// embed runs the scan images with patterns applied (nil: clean) and
// returns the embeddings of each pattern's batch and the layer means.
func (f *filterRun) embed(enc *encoder.Encoder, pats []*Pattern) ([][]float32, [][][]float32, error) {
	size := enc.ImageSize()
	total := f.n * len(pats)
	buf, err := enc.Batch(total)
	if err != nil {
		return nil, nil, err
	}
	for k, pt := range pats {
		dst := buf[k*f.n*size : (k+1)*f.n*size]
		copy(dst, f.x)
		if pt != nil {
			for i := 0; i < f.n; i++ {
				pt.Apply(dst[i*size:(i+1)*size], enc.H, enc.W)
			}
		}
	}
	emb, layers, err := enc.Embed(total)
	if err != nil {
		return nil, nil, err
	}
	d := enc.Dim
	outE := make([][]float32, len(pats))
	outL := make([][][]float32, len(pats))
	for k := range pats {
		outE[k] = append([]float32(nil), emb[k*f.n*d:(k+1)*f.n*d]...)
		for _, l := range layers {
			c := len(l) / total
			outL[k] = append(outL[k], append([]float32(nil), l[k*f.n*c:(k+1)*f.n*c]...))
		}
	}
	return outE, outL, nil
}

// groupStats are the median and scaled MAD of random candidates' collapse
// per group (patch size; 0 for blends).
type groupStats map[int][2]float64

func (g groupStats) z(p Pattern, collapse float64) float64 {
	s := g[p.group()]
	if s[1] <= 1e-9 {
		return 0
	}
	return (collapse - s[0]) / s[1]
}

// searcher scores patterns by how much they collapse the scan images'
// embeddings under one encoder.
type searcher struct {
	f     *filterRun
	enc   *encoder.Encoder
	base  float64     // trace of the covariance of the clean embeddings
	clean [][]float64 // the clean scan images' probed layers, summed (layerSums)
	// probe, when not nil, collects each channel's largest change
	// (layerChange) under the random candidates.
	probe [][]float64
}

func (f *filterRun) searcher(enc *encoder.Encoder) (*searcher, error) {
	clean, layers, err := f.embed(enc, []*Pattern{nil})
	if err != nil {
		return nil, err
	}
	return &searcher{f: f, enc: enc, base: traceCov(clean[0], f.n, enc.Dim), clean: f.layerSums(layers[0])}, nil
}

// layerSums sums each probed channel's activation over the scan images.
func (f *filterRun) layerSums(layers [][]float32) [][]float64 {
	out := make([][]float64, len(f.t.Layers))
	for li, l := range f.t.Layers {
		c := l.D
		out[li] = make([]float64, c)
		for ch := 0; ch < c; ch++ {
			for i := 0; i < f.n; i++ {
				out[li][ch] += float64(layers[li][i*c+ch])
			}
		}
	}
	return out
}

// layerChange is, per probed layer and channel, how much a pattern moved
// the channel's mean activation over the scan images (sums from
// layerSums, clean and with the pattern), relative to its spread on the
// data (TAC's raw score).
func (f *filterRun) layerChange(clean, with [][]float64) [][]float64 {
	out := make([][]float64, len(f.t.Layers))
	for li := range f.t.Layers {
		out[li] = make([]float64, len(clean[li]))
		for ch, m0 := range clean[li] {
			out[li][ch] = math.Abs(with[li][ch]-m0) / float64(f.n) / (f.spread(li, ch) + 1e-6)
		}
	}
	return out
}

// robustZ standardises raw scores within each layer (median, MAD).
func (f *filterRun) robustZ(raw [][]float64) map[string][]float32 {
	out := map[string][]float32{}
	for li, l := range f.t.Layers {
		out[l.Name] = stat.RobustZ(raw[li])
	}
	return out
}

// collapse returns each pattern's collapse; with probe set, it also keeps
// each channel's largest change.
func (s *searcher) collapse(ps []Pattern, probe bool) ([]float64, error) {
	ptrs := make([]*Pattern, len(ps))
	for i := range ps {
		ptrs[i] = &ps[i]
	}
	e, layers, err := s.f.embed(s.enc, ptrs)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(ps))
	for i := range ps {
		out[i] = collapseOf(traceCov(e[i], s.f.n, s.enc.Dim), s.base)
		if probe && s.probe != nil && len(s.clean) > 0 {
			for li, ch := range s.f.layerChange(s.clean, s.f.layerSums(layers[i])) {
				for c, v := range ch {
					s.probe[li][c] = math.Max(s.probe[li][c], v)
				}
			}
		}
	}
	return out, nil
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

type cand struct {
	p Pattern
	c float64
}

// search runs the random search over candidates patterns (which also give
// the same-size statistics) and refine steps of local refinement around
// the best 10 and the seeds (patterns found before), on s's encoder. It
// returns the scan, the statistics and the refined patterns, best first.
func (s *searcher) search(ctx context.Context, candidates, refine int, seeds []Pattern, progress plugin.Progress) (*Scan, groupStats, []Pattern, error) {
	f := s.f
	start := time.Now()
	const perRun = 4
	var cands []cand
	for done := 0; done < candidates; done += perRun {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		ps := make([]Pattern, min(perRun, candidates-done))
		for i := range ps {
			ps[i] = randomPattern(f.rng, s.enc.H, s.enc.W, f.p.Sizes)
		}
		cs, err := s.collapse(ps, true)
		if err != nil {
			return nil, nil, nil, err
		}
		for i := range ps {
			cands = append(cands, cand{ps[i], cs[i]})
		}
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(done + len(ps)), Total: int64(candidates + refine), Unit: "patterns"})
		}
	}
	byGroup := map[int][]float64{}
	for _, c := range cands {
		byGroup[c.p.group()] = append(byGroup[c.p.group()], c.c)
	}
	stats := groupStats{}
	med := map[string]float64{}
	for g, cs := range byGroup {
		m, sd := stat.Robust(cs)
		stats[g] = [2]float64{m, sd}
		key := fmt.Sprintf("size_%d", g)
		if g == 0 {
			key = "blend"
		}
		med[key] = m
	}
	if len(seeds) > 0 {
		cs, err := s.collapse(seeds, false)
		if err != nil {
			return nil, nil, nil, err
		}
		for i := range seeds {
			cands = append(cands, cand{seeds[i], cs[i]})
		}
	}
	sort.SliceStable(cands, func(a, b int) bool {
		return stats.z(cands[a].p, cands[a].c) > stats.z(cands[b].p, cands[b].c)
	})
	top := append([]cand(nil), cands[:min(10, len(cands))]...)
	for step := 0; step < refine; step += perRun {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		var ps []Pattern
		var parents []int
		for i := 0; i < perRun && step+i < refine; i++ {
			k := (step + i) % len(top)
			ps = append(ps, jitter(f.rng, top[k].p, s.enc.H, s.enc.W, f.p.Sizes))
			parents = append(parents, k)
		}
		cs, err := s.collapse(ps, false)
		if err != nil {
			return nil, nil, nil, err
		}
		for i, k := range parents {
			if stats.z(ps[i], cs[i]) > stats.z(top[k].p, top[k].c) {
				top[k] = cand{ps[i], cs[i]}
			}
		}
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(candidates + step + len(ps)), Total: int64(candidates + refine), Unit: "patterns"})
		}
	}
	sort.SliceStable(top, func(a, b int) bool {
		return stats.z(top[a].p, top[a].c) > stats.z(top[b].p, top[b].c)
	})
	best := top[0]
	z := stats.z(best.p, best.c)
	var found []Pattern
	for _, c := range top {
		found = append(found, c.p)
	}
	return &Scan{Backdoored: z >= f.p.GapMin, BestZ: z, BestCollapse: best.c, Pattern: best.p, RandomMedian: med,
		Candidates: len(cands), GapMin: f.p.GapMin, Seconds: time.Since(start).Seconds()}, stats, found, nil
}

// Region is where the found trigger sends inputs in embedding space, and
// which training rows sit there.
type Region struct {
	Radius        float64 `json:"radius"`                  // 90th percentile distance of the triggered scan images to their centroid
	TrustedMedian float64 `json:"trusted_median_distance"` // median distance of the trusted rows
	TrustedQ01    float64 `json:"trusted_q01_distance"`    // 1st percentile
	Threshold     float64 `json:"threshold"`               // rows closer are suspects
	Suspects      int     `json:"suspects"`
	Why           string  `json:"why_none,omitempty"`
}

// triggerRegion finds the rows an encoder backdoor explains: the found
// pattern collapses inputs onto one point of the embedding space, and
// inputs that carry the real trigger land near it. Rows (under the
// original encoder) closer to it than 99% of the trusted rows, or than
// most triggered scan images, are taken for such inputs. Nothing is
// flagged when the region is not clearly apart from the trusted rows.
func (f *filterRun) triggerRegion(p Pattern, trusted []bool, dist []float32, suspect []bool) (*Region, error) {
	e, _, err := f.embed(f.enc, []*Pattern{&p})
	if err != nil {
		return nil, err
	}
	d := f.enc.Dim
	if d != f.t.Embedding.D {
		return &Region{Why: "the features' embedding is not the encoder's"}, nil
	}
	c := stat.Mean(e[0], d, nil)
	distance := func(v []float32) float64 {
		var s float64
		for j, x := range v {
			s += (float64(x) - c[j]) * (float64(x) - c[j])
		}
		return math.Sqrt(s)
	}
	var scan []float64
	for i := 0; i < f.n; i++ {
		scan = append(scan, distance(e[0][i*d:(i+1)*d]))
	}
	sort.Float64s(scan)
	reg := &Region{Radius: scan[int(0.9*float64(len(scan)-1))]}
	var tr []float64
	x := f.t.Embedding.X
	for i := range dist {
		dist[i] = float32(distance(x[i*d : (i+1)*d]))
		if trusted[i] {
			tr = append(tr, float64(dist[i]))
		}
	}
	reg.TrustedMedian, _ = stat.Robust(tr)
	sort.Float64s(tr)
	reg.TrustedQ01 = tr[int(0.01*float64(len(tr)-1))]
	if reg.Radius > reg.TrustedMedian/2 {
		reg.Why = "the found trigger's region is not apart from the trusted rows"
		return reg, nil
	}
	reg.Threshold = math.Max(reg.Radius, reg.TrustedQ01)
	for i := range dist {
		suspect[i] = float64(dist[i]) <= reg.Threshold
		if suspect[i] {
			reg.Suspects++
		}
	}
	return reg, nil
}

// uclcScores computes each probed channel's UCLC (data-free) as a robust
// z within its layer.
func (f *filterRun) uclcScores(enc *encoder.Encoder) error {
	uc, err := enc.UCLC()
	if err != nil {
		return err
	}
	f.uclc = map[string][]float32{}
	for name, u := range uc {
		f.uclc[name] = stat.RobustZ(u)
	}
	return nil
}

// suspicion is each channel's largest signal z among the signals used
// (TAC, UCLC, probe sensitivity); signals, when not nil, gets which one
// fired.
func (f *filterRun) suspicion(tac map[string][]float32, signals map[string][]string) map[string][]float32 {
	out := map[string][]float32{}
	for name, tz := range tac {
		z := append([]float32(nil), tz...)
		sig := make([]string, len(z))
		for c := range z {
			sig[c] = "tac"
			if !f.p.uses("tac") {
				z[c], sig[c] = float32(math.Inf(-1)), ""
			}
			if u := f.uclc[name]; u != nil && f.p.uses("uclc") && u[c] > z[c] {
				z[c], sig[c] = u[c], "uclc"
			}
			if pr := f.probe[name]; pr != nil && f.p.uses("probe") && pr[c] > z[c] {
				z[c], sig[c] = pr[c], "probe"
			}
		}
		out[name] = z
		if signals != nil {
			signals[name] = sig
		}
	}
	return out
}

// tac scores each probed channel by how much the found pattern changes its
// mean activation on the scan images, relative to the channel's spread on
// the data, as a robust z within its layer.
func (f *filterRun) tac(enc *encoder.Encoder, p Pattern) (map[string][]float32, error) {
	_, layers, err := f.embed(enc, []*Pattern{nil, &p})
	if err != nil {
		return nil, err
	}
	return f.robustZ(f.layerChange(f.layerSums(layers[0]), f.layerSums(layers[1]))), nil
}

// spread is the standard deviation of a channel over all rows. (Over the
// trusted rows only, measured worse on T1: docs/DECISIONS.md.)
func (f *filterRun) spread(layer, ch int) float64 {
	if f.spreads == nil {
		f.spreads = make([][]float64, len(f.t.Layers))
	}
	if f.spreads[layer] == nil {
		d := f.t.Layers[layer].D
		f.spreads[layer] = make([]float64, d)
		for c := 0; c < d; c++ {
			f.spreads[layer][c] = f.spreadOf(layer, c)
		}
	}
	return f.spreads[layer][ch]
}

func (f *filterRun) spreadOf(layer, ch int) float64 {
	l := f.t.Layers[layer]
	var s, sq float64
	n := f.t.N()
	for i := 0; i < n; i++ {
		v := float64(l.X[i*l.D+ch])
		s += v
		sq += v * v
	}
	m := s / float64(n)
	return math.Sqrt(math.Max(sq/float64(n)-m*m, 0))
}

// Round is one round of masking: the pattern the search found on the
// encoder masked so far, and what masking its channels did to it.
type Round struct {
	Pattern  Pattern  `json:"pattern"`
	ZBefore  float64  `json:"z_before"`
	ZAfter   float64  `json:"z_after"`
	Masked   []string `json:"masked"`
	Searched int      `json:"candidates_searched,omitempty"`
	// Neighbour is set when the pattern is a neighbour of one masked
	// against before, not the search's best.
	Neighbour bool `json:"neighbour,omitempty"`
	// WorstNeighbourZ is, in the last round, the largest same-size z of
	// the neighbours of the patterns masked against.
	WorstNeighbourZ float64 `json:"worst_neighbour_z,omitempty"`
	// Scored counts the masks the greedy choices scored, Seconds the time
	// the choice took.
	Scored  int     `json:"masks_scored,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
}

// selectChannels masks channels with a suspicion above u in decreasing
// order until the found pattern collapses the embeddings no more than a
// random pattern of its size (z <= stop_z). Then it searches again on the
// masked encoder, from the patterns found before: while that search still
// calls the encoder backdoored, it scores the channels under the new
// pattern and masks on; at most max_masked of the channels, rescans times.
func (f *filterRun) selectChannels(ctx context.Context, scan *Scan, stats groupStats, found []Pattern, z, fill map[string][]float32) ([]string, map[string][]bool, []Round, error) {
	total := 0
	keep := map[string][]bool{}
	for _, l := range f.t.Layers {
		total += l.D
		keep[l.Name] = ones(l.D)
	}
	limit := max(1, int(f.p.MaxMasked*float64(total)))
	var masked []string
	var rounds []Round
	// One session scores every mask of the selection.
	sw, err := f.openSwitchable(fill)
	if err != nil {
		return nil, nil, nil, err
	}
	defer sw.Close()
	pat, curZ := scan.Pattern, scan.BestZ
	f.lastCollapse, f.lastZ = scan.BestCollapse, scan.BestZ
	neighbour := false
	for round := 0; ; round++ {
		r := Round{Pattern: pat, ZBefore: curZ, Neighbour: neighbour}
		neighbour = false
		chosen := time.Now()
		if f.p.Choice != "suspicion" {
			var err error
			if curZ, err = f.greedyCollapse(ctx, sw, keep, f.pool(z, keep), pat, stats, limit, &masked, &r); err != nil {
				return nil, nil, nil, err
			}
		} else {
			for _, c := range f.candidates(z, keep) {
				if len(masked) >= limit || curZ <= f.p.StopZ {
					break
				}
				if err := ctx.Err(); err != nil {
					return nil, nil, nil, err
				}
				keep[c.layer][c.c] = false
				name := fmt.Sprintf("%s:%d", c.layer, c.c)
				masked = append(masked, name)
				r.Masked = append(r.Masked, name)
				cs, err := sw.collapses(keep, []*channel{nil}, pat)
				if err != nil {
					return nil, nil, nil, err
				}
				f.lastCollapse = cs[0]
				curZ = stats.z(pat, f.lastCollapse)
			}
		}
		r.ZAfter = curZ
		r.Seconds = time.Since(chosen).Seconds()
		f.lastZ = curZ
		rounds = append(rounds, r)
		if len(masked) >= limit || round >= f.p.Rescans || len(r.Masked) == 0 {
			break
		}
		enc, err := f.openMasked(encoder.MasksOf(keep, fill, nil))
		if err != nil {
			return nil, nil, nil, err
		}
		sr, err := f.searcher(enc)
		if err == nil {
			var sc *Scan
			sc, stats, found, err = sr.search(ctx, min(f.p.Candidates, f.p.RescanCands), f.p.Refine, found, nil)
			gap := f.p.RescanGap
			if gap <= 0 {
				gap = f.p.GapMin
			}
			var nb Pattern
			var nz float64
			if err == nil && sc.BestZ < gap && f.p.NeighbourZ > 0 {
				nb, nz, err = f.worstNeighbour(sr, stats, rounds)
			}
			if err == nil && (sc.BestZ >= gap || (f.p.NeighbourZ > 0 && nz >= f.p.NeighbourZ)) {
				pat, curZ = sc.Pattern, sc.BestZ
				if sc.BestZ < gap {
					pat, curZ = nb, nz
					neighbour = true
				}
				var tz map[string][]float32
				if tz, err = f.tac(enc, pat); err == nil {
					z = f.suspicion(tz, nil)
				}
			} else if err == nil {
				rounds = append(rounds, Round{Pattern: sc.Pattern, ZBefore: sc.BestZ, ZAfter: sc.BestZ, Searched: sc.Candidates, WorstNeighbourZ: nz})
				enc.Close()
				break
			}
		}
		enc.Close()
		if err != nil {
			return nil, nil, nil, err
		}
	}
	f.lastStats = stats
	return masked, keep, rounds, nil
}

// neighbours returns the patterns next to p: the same patch grown or
// shrunk by up to two pixels (still covering, or covered by, p's area from
// each corner) and moved by one pixel; for a blend, alpha +-0.05. A found
// pattern is near the trigger, not the trigger itself: masking until p
// alone no longer collapses can leave the trigger's larger or shifted
// version working.
func neighbours(p Pattern, h, w int, sizes [2]int) []Pattern {
	if p.Kind == "blend" {
		var out []Pattern
		for _, d := range []float32{-0.05, 0.05} {
			q := p
			q.Alpha = max(0.01, p.Alpha+d)
			out = append(out, q)
		}
		return out
	}
	seen := map[[3]int]bool{{p.Size, p.Row, p.Col}: true}
	var out []Pattern
	add := func(s, r, c int) {
		if s < sizes[0] || s > sizes[1] {
			return
		}
		r, c = clamp(r, 0, h-s), clamp(c, 0, w-s)
		if seen[[3]int{s, r, c}] {
			return
		}
		seen[[3]int{s, r, c}] = true
		q := p
		q.Size, q.Row, q.Col = s, r, c
		out = append(out, q)
	}
	for _, ds := range []int{1, 2, -1} {
		s := p.Size + ds
		for _, r := range []int{p.Row, p.Row + p.Size - s} {
			for _, c := range []int{p.Col, p.Col + p.Size - s} {
				add(s, r, c)
			}
		}
	}
	for _, d := range [][2]int{{-1, 0}, {1, 0}, {0, -1}, {0, 1}} {
		add(p.Size, p.Row+d[0], p.Col+d[1])
	}
	return out
}

// worstNeighbour returns, on the searcher's (masked) encoder, the
// neighbour of the patterns masked against so far that collapses the
// most, judged by stats (the same-size statistics on that encoder).
func (f *filterRun) worstNeighbour(sr *searcher, stats groupStats, rounds []Round) (Pattern, float64, error) {
	var ps []Pattern
	for _, r := range rounds {
		if len(r.Masked) > 0 {
			ps = append(ps, r.Pattern)
			ps = append(ps, neighbours(r.Pattern, sr.enc.H, sr.enc.W, f.p.Sizes)...)
		}
	}
	if len(ps) == 0 {
		return Pattern{}, math.Inf(-1), nil
	}
	cs, err := sr.collapse(ps, false)
	if err != nil {
		return Pattern{}, 0, err
	}
	best, bz := 0, math.Inf(-1)
	for i := range ps {
		if z := stats.z(ps[i], cs[i]); z > bz {
			best, bz = i, z
		}
	}
	return ps[best], bz, nil
}

type channel struct {
	layer string
	c     int
	z     float32
}

// candidates returns the channels still kept whose suspicion is above u,
// most suspicious first.
func (f *filterRun) candidates(z map[string][]float32, keep map[string][]bool) []channel {
	var out []channel
	for _, l := range f.t.Layers {
		for c, v := range z[l.Name] {
			if float64(v) > f.p.U && keep[l.Name][c] {
				out = append(out, channel{l.Name, c, v})
			}
		}
	}
	sortChannels(out)
	return out
}

// sortChannels orders channels most suspicious first (ties: by layer
// name, then channel).
func sortChannels(out []channel) {
	sort.Slice(out, func(a, b int) bool {
		if out[a].z != out[b].z {
			return out[a].z > out[b].z
		}
		if out[a].layer != out[b].layer {
			return out[a].layer < out[b].layer
		}
		return out[a].c < out[b].c
	})
}
