// Package filter is T-Core's third stage: selective encoder channel
// filtering (docs/ALGORITHM.md, stage 3). It is a chain of steps, each in
// its own file and each returning a typed result; Run only composes them:
//
//	scan    (scan.go)    search the encoder, black-box, for a small pattern
//	                     that collapses diverse trusted images' embeddings,
//	                     judged against random patterns of the same size
//	smooth  (smooth.go)  when the found pattern is a noise blend and the
//	                     capped encoder answers to no patch: the least
//	                     input blur that undoes it, instead of a mask
//	score   (score.go)   each probed channel's suspicion (TAC, UCLC, probe)
//	select  (select.go)  switch channels off, greedily, until the found
//	                     pattern collapses no more than a random one; search
//	                     the masked encoder again and mask on
//	fill    (fill.go)    what a switched-off channel becomes: its trusted
//	                     mean, or a regression on its layer's kept channels
//	region  (region.go)  the training rows inside the found trigger's region
//	write                the channels table and the training rows'
//	                     embeddings under the filtered encoder
//	moved   (moved.go)   the training rows the mask moved as it moves inputs
//	                     carrying the trigger, and the rows that started out
//	                     where those did: suspects too
//	augment (augment.go) trusted images carrying the patterns masked
//	                     against, embedded by the filtered encoder
//	gate    (gate.go)    whether the classifier may send only the inputs
//	                     the mask moves as it moves the trigger's through the
//	                     filtered encoder, checked on the augment rows; the
//	                     gate goes into the filtered encoder's metadata
//
// Every step measures on one bench (bench.go): the trusted scan images and
// one ONNX Runtime session with a run-time mask on every probed layer. When
// the scan does not call the encoder backdoored, nothing is masked.
package filter

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
)

// Stage is the filter stage.
type Stage struct{}

// New returns the filter stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "filter",
		Version: "0.69.1",
		Inputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training images"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "their features (probed layers) under the encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Doc: "the trusted core (expand.trusted)"},
		},
		Outputs: []plugin.PortSpec{
			{Name: "channels", Kind: arrowio.KindChannels, Doc: "every probed channel: keep, suspicion score, signal"},
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "the training rows' embeddings under the filtered encoder (the input features, passed on, when nothing is masked)"},
			{Name: "scores", Kind: arrowio.KindScores, Doc: "filter.trigger_distance (embedding distance to where the found trigger collapses inputs), filter.moved (how far the mask moved the row's embedding), filter.suspect (inside that region, moved far, or carrying the data trigger: never kept)"},
			{Name: "augment", Kind: arrowio.KindFeatures, Doc: "trusted images carrying the patterns masked against, embedded by the filtered encoder, with their own labels (rows for the head to learn that the pattern means nothing); empty when nothing is masked"},
		},
		Params:       plugin.ParamsOf(defaults),
		NeedsAllRows: true,
	}
}

// Result is what a filter run found and did; its JSON is the stage's
// metrics.
type Result struct {
	Scan            Scan           `json:"encoder_scan"`
	WhyNoMask       string         `json:"why_no_mask,omitempty"`
	ChannelsMasked  int            `json:"channels_masked"`
	Masked          []string       `json:"masked,omitempty"`
	Rounds          []Round        `json:"rounds,omitempty"`
	CollapseAfter   *float64       `json:"collapse_after_mask,omitempty"`
	ZAfter          *float64       `json:"z_after_mask,omitempty"`
	UCLCUnavailable string         `json:"uclc_unavailable,omitempty"`
	Clamp           *Clamp         `json:"clamp,omitempty"`
	Smoothing       *Smoothing     `json:"smoothing,omitempty"`
	DataTrigger     *DataTrigger   `json:"data_trigger,omitempty"`
	Shift           *Shifted       `json:"shift,omitempty"`
	ClassSplit      *ClassSplit    `json:"class_split,omitempty"`
	Planted         *Planted       `json:"planted,omitempty"`
	Fill            *FillReport    `json:"fill,omitempty"`
	Region          *Region        `json:"trigger_region,omitempty"`
	Moved           *Moved         `json:"moved,omitempty"`
	MovedFrom       *Region        `json:"moved_from,omitempty"`
	Gate            *GateReport    `json:"gate,omitempty"`
	Project         *ProjectReport `json:"project,omitempty"`
	AugmentRows     int            `json:"augment_rows"`
	// ScanSizes are the patch sizes searched, in the data's pixels.
	ScanSizes [2]int `json:"scan_sizes"`
	// SizeScale is the encoder's input size over the data's when it is
	// at least 1.5 (patterns are then painted at the data's size and
	// resampled), else 1.
	SizeScale float64 `json:"size_scale"`
	// ScanImages is how many trusted images the scan collapsed.
	ScanImages int    `json:"scan_images"`
	Exported   string `json:"exported,omitempty"`
	// DroppedTakeover is set when planted_patch "gated" dropped a pass in
	// which a pasted patch took the scan's call over.
	DroppedTakeover *DroppedTakeover `json:"dropped_takeover,omitempty"`
	// Steps is how long each step took, in the order they ran.
	Steps []Step `json:"steps,omitempty"`
}

// DroppedTakeover says which pasted patch's pass planted_patch "gated"
// dropped, and why.
type DroppedTakeover struct {
	Pattern        string `json:"pattern"`
	ChannelsMasked int    `json:"channels_masked"`
	Why            string `json:"why"`
}

// Run implements plugin.Stage: it composes the steps.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	var flags []string
	if p.SuspectColumn != "" {
		flags = append(flags, p.SuspectColumn)
	}
	ins, err := chanfilter.Open(in, p.Encoder, p.TrustedColumn, flags...)
	if err != nil {
		return nil, err
	}
	defer ins.Release()
	res, held, err := s.run(ctx, p, ins, out, progress)
	if err != nil {
		return nil, err
	}
	if held != nil {
		defer held.Release()
		if res.Gate != nil && res.Gate.On && !res.Gate.onClassPart() {
			if err := held.CopyTo(out); err != nil {
				return nil, err
			}
			return plugin.MetricsOf(res)
		}
		held.Release()
		dropped := &DroppedTakeover{Pattern: res.Scan.Pattern.String(), ChannelsMasked: res.ChannelsMasked, Why: "the gate is off"}
		switch {
		case res.Gate != nil && res.Gate.Why != "":
			dropped.Why += ": " + res.Gate.Why
		case res.Gate != nil && res.Gate.onClassPart():
			dropped.Why += " but for its class part: " + res.Gate.Fallback
		}
		q := p
		q.PlantedPatch = "off"
		if res, _, err = s.run(ctx, q, ins, out, progress); err != nil {
			return nil, err
		}
		res.DroppedTakeover = dropped
	}
	return plugin.MetricsOf(res)
}

// run is one pass of the steps on ins. With planted_patch "gated", a pass
// in which a pasted patch took the scan's call over writes into tables in
// memory, which it returns: Run flushes them when the pass's gate is on,
// and otherwise (every input would pay the mask) drops them and runs the
// steps again with the scan's own call (planted_patch off; the scan is
// remembered, so that pass is the defaults' run).
func (s Stage) run(ctx context.Context, p Params, ins *chanfilter.Inputs, out plugin.Outputs, progress plugin.Progress) (res *Result, kept *plugin.Tables, err error) {
	var held *plugin.Tables
	defer func() {
		if err != nil && held != nil {
			held.Release()
		}
	}()
	b, err := newBench(p, ins)
	if err != nil {
		return nil, nil, err
	}
	defer b.close()
	t := ins.Table

	clk := newClock(progress, "scan")
	sc, err := b.firstScan(ctx, progress)
	if err != nil {
		return nil, nil, err
	}
	res = &Result{Scan: sc.Scan, ScanSizes: p.Sizes, SizeScale: b.sizeScale, ScanImages: b.scanImages}
	defer func() {
		if res != nil {
			res.Steps = clk.done()
		}
	}()
	v := chanfilter.NewChannelVerdict(t, "")
	v.Fill = b.means
	dist, suspect := make([]float32, t.N()), make([]bool, t.N())
	var against []Pattern
	var family []string // each pattern of against: the pattern it stems from
	var caps map[string][]float32
	var exportCaps map[string][]float32 // caps of the filtered encoder alone (clamp_patch export)
	var capped *scanResult              // the capped encoder's first search, when the smooth step made it
	var proj *chanfilter.Project        // what the filtered head leaves out (project)
	// A trigger planted in one class's images: its carriers are suspects
	// from here on, so that the caps, the fills and the augment images are
	// taken from trusted rows without them.
	var splitPats []Pattern
	found := make([]bool, t.N()) // the class split's and the planted check's carriers
	if p.SplitZ > 0 || p.SplitGap > 0 {
		clk.step("class split", "looking for a trigger planted in one class's images")
		rep, carrier, pats, err := b.classSplit(ctx)
		if err != nil {
			return nil, nil, err
		}
		res.ClassSplit, splitPats = rep, pats
		orInto(found, carrier)
		if err := b.suspectAlso(suspect, carrier); err != nil {
			return nil, nil, err
		}
		v.Fill = b.means
	}
	// Patches pasted into one label's images: their carriers are suspects
	// too, and the patches join the patterns the augment rows carry.
	var plantedPats []Pattern
	if p.PlantedRatio > 0 {
		clk.step("planted", "looking for patches pasted into one label's images")
		rep, carrier, pats, err := b.planted(ctx)
		if err != nil {
			return nil, nil, err
		}
		res.Planted, plantedPats = rep, pats
		orInto(found, carrier)
		if err := b.suspectAlso(suspect, carrier); err != nil {
			return nil, nil, err
		}
		v.Fill = b.means
		called := sc.Backdoored && isPatch(sc.Pattern)
		if sc, err = b.judgePlanted(sc, pats); err != nil {
			return nil, nil, err
		}
		if p.PlantedMask == "skip" {
			if sc, err = b.plantedUndoes(sc, pats); err != nil {
				return nil, nil, err
			}
			called = called && !sc.UndoneByData
		}
		res.Scan = sc.Scan
		if p.PlantedPatch == "gated" && called && sc.FromPlanted {
			held = plugin.NewTables()
			out = held
		}
	}
	clk.step("place", "")
	if sc, err = b.placeCall(sc); err != nil {
		return nil, nil, err
	}
	if p.Looks > 0 {
		if sc, err = b.lookCall(sc, p.Looks); err != nil {
			return nil, nil, err
		}
	}
	res.Scan = sc.Scan
	if !sc.Backdoored {
		res.WhyNoMask = fmt.Sprintf("best same-size z %.1f < gap_min %.1f: the encoder does not look backdoored", sc.BestZ, p.GapMin)
		switch {
		case sc.UndoneByData:
			res.WhyNoMask = fmt.Sprintf("a patch pasted into the training data collapses the encoder's inputs as a trigger does (same-size z %.1f, anchor_z %.1f; %.0f%% of the spread away): the encoder's trigger is the data's, its %d carriers are left out and the augment rows teach the head that it means nothing, so nothing is masked (planted_mask \"skip\")", sc.PlantedZ, p.anchorZ(), 100*sc.PlantedCollapse, res.Planted.Carriers)
		case sc.BestZ >= p.GapMin:
			res.WhyNoMask = fmt.Sprintf("the best pattern (same-size z %.1f) takes %.0f%% of the scan images' spread away, under collapse_min %.0f%%: it stands out among patterns of its size but does not pull images together as a trigger does; the encoder does not look backdoored", sc.BestZ, 100*sc.BestCollapse, 100*p.CollapseMin)
		}
	} else {
		clk.step("region", "the found trigger's region")
		// The region is where the original encoder sends the pattern. Its
		// rows join the class split's carriers as suspects.
		var near []bool
		if res.Region, dist, near, err = b.region(sc.Pattern); err != nil {
			return nil, nil, err
		}
		orInto(suspect, near)
		if err := b.distrust(suspect); err != nil {
			return nil, nil, err
		}
		// The search is capped only against a noise blend: the caps cut
		// the outsized responses a blend drives into many channels, and
		// their search tells a noise-blend trojan (blur) from a patch
		// trojan whose texture a blend partly excites (mask). On a patch
		// trojan the capped encoder's searches chase the trojan's side
		// answers and spend the channels; its caps go into the filtered
		// encoder alone, after the channels are chosen
		// (docs/DECISIONS.md).
		clk.step("clamp and smooth", "")
		if p.ClampQuantile > 0 && sc.Pattern.Kind == "blend" {
			if caps, res.Clamp, err = b.channelCaps(ctx, p.ClampQuantile); err != nil {
				return nil, nil, err
			}
		} else if p.ClampQuantile > 0 && p.ClampPatch == "export" {
			if exportCaps, res.Clamp, err = b.channelCaps(ctx, p.ClampQuantile); err != nil {
				return nil, nil, err
			}
		}
		if res.Smoothing, capped, err = b.smooth(ctx, sc, caps, clk.say); err != nil {
			return nil, nil, err
		}
	}
	if sm := res.Smoothing; sm != nil && sm.Sigma > 0 {
		// The blur undid the blend: nothing is masked, and the head
		// still learns that the blend means nothing.
		v.Smooth, res.Clamp = sm.InputSigma, nil
		// First the found noise at the strongest alpha searched: the
		// class gate's probe (a blend found at a low alpha moves inputs
		// only part of the way to where the trojan sends its trigger).
		strong := sc.Pattern
		strong.Alpha = maxBlendAlpha
		against = append([]Pattern{strong, sc.Pattern}, neighbours(sc.Pattern, b.canvas.H, b.canvas.W, p.Sizes)...)
		for range against {
			family = append(family, sc.Pattern.String())
		}
	} else if sc.Backdoored {
		if caps != nil {
			if err := b.setCaps(caps); err != nil {
				return nil, nil, err
			}
			v.Caps = caps
		}
		clk.step("score", "")
		sus, err := b.score(sc)
		if err != nil {
			return nil, nil, err
		}
		res.UCLCUnavailable = sus.uclcMissing
		v.Score, v.Signals = sus.z, sus.signal
		clk.step("select", "choosing the channels to mask")
		sel, err := b.selectChannels(ctx, sc, sus, v.Caps != nil, capped)
		if err != nil {
			return nil, nil, err
		}
		v.Keep = sel.keep
		if exportCaps != nil {
			v.Caps = exportCaps
		}
		res.Masked, res.Rounds, res.ChannelsMasked = sel.masked, sel.rounds, len(sel.masked)
		res.CollapseAfter, res.ZAfter = &sel.collapse, &sel.z
		clk.step("fill", "filling the masked channels")
		fl, err := b.fillChannels(ctx, sel, sus)
		if err != nil {
			return nil, nil, err
		}
		v.Fill, v.Weights, res.Fill = fl.values, fl.weights, fl.Report
		if p.Project == "scan" && len(sel.masked) > 0 {
			clk.step("project", "")
			if proj, res.Project, err = b.projection(sc.Pattern); err != nil {
				return nil, nil, err
			}
		}
		against, family = sel.againstNamed(b.canvas.H, b.canvas.W, p.Sizes)
		if len(against) == 0 && v.Caps != nil {
			// The caps alone undid the pattern: the head still learns that
			// it means nothing.
			against = append([]Pattern{sc.Pattern}, neighbours(sc.Pattern, b.canvas.H, b.canvas.W, p.Sizes)...)
			for range against {
				family = append(family, sc.Pattern.String())
			}
		}
		if p.ShiftZ > 0 && len(sel.masked) > 0 {
			clk.step("shift", "judging patterns by the move of the mean on the masked encoder")
			if res.Shift, err = b.shiftCheck(ctx, sel.keep); err != nil {
				return nil, nil, err
			}
			if res.Shift.Added {
				against = append(against, res.Shift.Pattern)
				family = append(family, res.Shift.added())
				// Rows near where the original encoder sends the
				// pattern carry it (T3: poisoned rows the mask left
				// learnable), as for the scan's pattern.
				var near []bool
				if res.Shift.Region, _, near, err = b.region(res.Shift.Pattern); err != nil {
					return nil, nil, err
				}
				orInto(suspect, near)
			}
		}
	}
	masked := len(against) // the patterns masked against, before any data trigger
	if sus := ins.Flags[p.SuspectColumn]; sus != nil {
		clk.step("data trigger", "looking for a trigger in the suspected rows")
		carrier := make([]bool, t.N())
		pat, rep, err := b.dataTrigger(ctx, sus, carrier)
		if err != nil {
			return nil, nil, err
		}
		res.DataTrigger = rep
		if pat != nil {
			against = append(against, *pat)
			family = append(family, "sift's suspects' trigger (delta)")
		}
		keep := sus
		if p.SiftSuspects == "carriers" {
			keep, rep.Released = CarryingSuspects(sus, found, carrier, t.Labels)
		}
		if pat != nil || p.SiftSuspects == "carriers" {
			orInto(suspect, carrier)
			orInto(suspect, keep)
		}
	}
	for _, pat := range splitPats {
		against = append(against, pat)
		family = append(family, "a trigger planted in one class's images (delta)")
	}
	for _, pat := range plantedPats {
		against = append(against, pat)
		family = append(family, "a patch pasted into one label's images")
	}
	// The filtered encoder is exported once the gate is known (it goes
	// into its metadata).
	clk.step("write features", "the filtered encoder's features")
	moves, err := ins.Write(ctx, p.Device, "", v, out, progress)
	if err != nil {
		return nil, nil, err
	}
	moved := moves.Lengths()
	if sc.Backdoored {
		var far []bool
		far, res.Moved = MovedSuspects(moved, b.trusted, p.MovedZ)
		var from []bool
		from, res.MovedFrom = MovedFrom(t.Embedding.X, t.Embedding.D, far, b.trusted)
		for i, f := range far {
			suspect[i] = suspect[i] || f || from[i]
		}
	}
	clk.step("augment", "augment rows")
	aug, err := b.augment(ctx, p.augmentShare(sc.UndoneByData), v.Masks(), against, family, out)
	if err != nil {
		return nil, nil, err
	}
	res.AugmentRows = aug.rows()
	clk.step("gate", "")
	switch {
	case v.Smooth > 0:
		res.Gate = classGate(aug, p.GateMin)
	case sc.Backdoored:
		var probes []func(k int) bool
		if p.GateClasses != "off" {
			probes = append(probes, func(k int) bool { return k < masked })
		}
		if first := len(against) - len(plantedPats); p.GateClasses == "planted" && len(plantedPats) > 0 {
			probes = append(probes, func(k int) bool { return k >= first })
		}
		gm, err := gateMoves(p.GateMove, moves, b.trusted, res.Moved, p.MovedZ)
		if err != nil {
			return nil, nil, err
		}
		res.Gate = gate(gm.step, res.MovedFrom, aug, family, p.GateMin, p.GateThrough, cleanCeiling(gm.moved, gm.trusted, p.GateClean), probes, res.Shift.added(), p.GateFallback == "class", gm.whiten)
		res.Gate.countTraining(gm.moved, t.Embedding.X, t.Embedding.D)
		if r := res.Region; res.Gate.On && r != nil && r.Why == "" && r.Threshold > 0 {
			// Where the original encoder sends the found pattern, when
			// it is apart from the trusted rows: bootstrap's veto may
			// need it (gate_veto region).
			res.Gate.Gate.RegionCentre, res.Gate.Gate.RegionNear = r.Centre, r.Threshold
		}
	}
	clk.step("export", "")
	if p.Export != "" {
		fm, err := v.Encoder(ins.Model)
		if err != nil {
			return nil, nil, err
		}
		if err := fm.Export(v.Masks(), p.Export, func(g *onnxgraph.Model, _ string) error {
			if proj != nil {
				if err := proj.WriteTo(g); err != nil {
					return err
				}
			}
			if res.Gate != nil && res.Gate.On {
				return res.Gate.Gate.WriteTo(g)
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	if moved == nil {
		moved = make([]float32, t.N())
	}
	if err := feat.WriteScores(out, "scores", t.IDs, []feat.Column{{Name: "filter.trigger_distance", F: dist}, {Name: "filter.moved", F: moved}, {Name: "filter.suspect", B: suspect}}); err != nil {
		return nil, nil, err
	}
	res.Exported = p.Export
	return res, held, nil
}

// ScanEncoder runs only the scan step: whether the encoder looks
// backdoored, on the trusted rows of ins, with p's scan parameters. It
// also judges each pattern of judge as the scan judges its candidates
// (its z against the random candidates of its group; a diagnostic: how
// the scan sees a known trigger), returning one z per pattern.
func ScanEncoder(ctx context.Context, p Params, ins *chanfilter.Inputs, progress plugin.Progress, judge ...Pattern) (*Scan, []float64, error) {
	b, err := newBench(p, ins)
	if err != nil {
		return nil, nil, err
	}
	defer b.close()
	sc, err := b.scan(ctx, nil, p.Candidates, p.Refine, nil, false, progress)
	if err != nil {
		return nil, nil, err
	}
	if sc, err = b.placeCall(sc); err != nil {
		return nil, nil, err
	}
	if sc, err = b.lookCall(sc, p.Looks); err != nil {
		return nil, nil, err
	}
	var zs []float64
	if len(judge) > 0 {
		col, err := b.collapser(nil)
		if err != nil {
			return nil, nil, err
		}
		cs, err := col.collapse(judge, nil)
		if err != nil {
			return nil, nil, err
		}
		for i := range judge {
			zs = append(zs, sc.stats.z(judge[i], cs[i]))
		}
	}
	return &sc.Scan, zs, nil
}

// DecodeParams fills p from defaults and raw (a JSON object of filter
// parameters), checking them.
func DecodeParams(raw json.RawMessage, p *Params) error {
	return plugin.DecodeParams(New().Spec(), raw, p)
}
