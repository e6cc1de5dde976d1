package filter

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Params are filter's parameters, declared once: the tags give each one's
// doc, role and allowed values (plugin.ParamsOf); defaults gives their
// defaults. docs/ALGORITHM.md (stage 3) says what each step does with them.
type Params struct {
	Encoder       string `json:"encoder" role:"encoder" doc:"the encoder (ONNX); tcore run sets it"`
	Export        string `json:"export" role:"output" doc:"where to write the filtered encoder (ONNX)"`
	TrustedColumn string `json:"trusted_column" doc:"boolean column of the trusted input"`
	Seed          uint64 `json:"seed" role:"seed" doc:"random seed"`
	Device        string `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`

	// scan
	ScanImages int `json:"scan_images" range:"[8,)" doc:"trusted images of different classes the scan collapses"`
	// An image costs ~50 times as much to embed at 224 px as at 32 px:
	// the scan of a large-input encoder collapses fewer images.
	ScanImagesLarge int     `json:"scan_images_large" range:"[8,)" doc:"scan images instead of scan_images when the encoder's input is at least large_side pixels on its shorter side"`
	LargeSide       int     `json:"large_side" range:"[1,)" doc:"shorter input side (pixels) from which an encoder counts as large for scan_images_large"`
	Candidates      int     `json:"candidates" range:"[20,)" doc:"random candidate patterns"`
	Refine          int     `json:"refine" range:"[0,)" doc:"local refinement steps around the best 10"`
	Sizes           [2]int  `json:"sizes" range:"[1,)" doc:"patch sizes searched (min, max), in the data's pixels (patterns are painted at the data's size and resampled to the encoder's input when the images are at least 1.5 times smaller)"`
	GapMin          float64 `json:"gap_min" doc:"the encoder looks backdoored when the best same-size z reaches this"`
	CollapseMin     float64 `json:"collapse_min" range:"[0,1)" doc:"the encoder looks backdoored only when the best pattern also takes at least this share of the scan images' spread (the trace of their embeddings' covariance) away: a trigger pulls its images together"`
	Anchors         string  `json:"anchors" enum:"off|fallback" doc:"fallback: when the random candidates make no call, also judge patches at the image's corners, edge midpoints and centre (the scan's three smallest sizes; eight saturated colours and black-and-white checkers) against the same random statistics, and call the encoder backdoored on the best of them when it reaches anchor_z and collapse_min: a random scan lands within a pixel of a small trigger's place, in its look, about once in thousands of draws (off: random candidates only)"`
	AnchorZ         float64 `json:"anchor_z" range:"[0,)" doc:"the same-size z the best anchored patch must reach for anchors \"fallback\" to call the encoder backdoored (0: gap_min): 270 fixed patches are a far smaller search than the random candidates, so a clean encoder's best of them stands lower"`
	Looks           int     `json:"looks" range:"[0,)" doc:"when the scan calls a patch, climb from it this many steps at most through the usual looks of a patch trigger (eight saturated colours, black-and-white checkers) at its place and its neighbours (grown, shrunk, moved by a pixel), and take the best patch found as the call when it beats the found one's same-size z: a random scan that calls a patch trojan often calls a patch near its trigger in another look, and masking against that one can leave the trigger working (0: off)"`
	CallPlace       string  `json:"call_place" enum:"off|all" doc:"all: when the scan calls a patch, screen the same patch at every place of the image on a quarter of the scan images, judge the 16 best places on all of them, and take the best as the call when it beats the found one's same-size z: a patch trojan can answer at its trigger's exact place far more than a pixel beside it, and random patterns seldom land there (off: the found place)"`
	BlendRatio      float64 `json:"blend_ratio" range:"(1,)" doc:"a noise blend looks like a trigger (z = gap_min) when it collapses the scan images this many times as much as a smooth blend of the same alpha"`

	// score
	Signals []string `json:"signals" enum:"tac|uclc|probe" doc:"per-channel suspicion signals whose largest robust z scores a channel: tac (change under the found pattern), uclc (kernel Lipschitz bound), probe (largest change under the random patches of the scan)"`

	// clamp
	ClampQuantile float64 `json:"clamp_quantile" range:"[0,1)" doc:"when the scan's best pattern is a noise blend, cap every probed channel at this quantile of its activations on trusted images, search the capped encoder, and mask it when that search finds a patch (0: no caps; a patch trojan's search is never capped, see clamp_patch)"`
	ClampPatch    string  `json:"clamp_patch" enum:"off|export" doc:"when the scan's best pattern is a patch: off (no caps) or export (the channels are chosen on the uncapped encoder, then the filtered encoder also caps every probed channel at clamp_quantile, cutting what outsized responses of the trigger the mask left)"`

	// select
	MaxMasked         float64 `json:"max_masked" range:"(0,1]" doc:"mask at most this fraction of the probed channels"`
	Choice            string  `json:"choice" enum:"collapse|collapse_per_change" doc:"greedy choice of the next channel to mask: the one whose masking lowers the found pattern's collapse the most (collapse), or the most per change of the clean images' embeddings (collapse_per_change)"`
	StopZ             float64 `json:"stop_z" doc:"mask until the found pattern's same-size z falls to this (0: the random patterns' median collapse)"`
	Rescans           int     `json:"rescans" range:"[0,)" doc:"after masking, search the masked encoder again (from the patterns found) and mask on while it still looks backdoored, this many times at most"`
	RescanCands       int     `json:"rescan_candidates" range:"[20,)" doc:"random candidates of each search on the masked encoder"`
	RescanGap         float64 `json:"rescan_gap" range:"[0,)" doc:"mask on while a search on the masked encoder reaches this same-size z (0: gap_min)"`
	RescanCollapseMin float64 `json:"rescan_collapse_min" range:"[0,1)" doc:"a search on the masked encoder masks on only when its best pattern also takes at least this share of the scan images' spread away, as collapse_min asks of the first scan (0: z alone)"`
	NeighbourZ        float64 `json:"neighbour_z" range:"[0,)" doc:"after a search on the masked encoder, mask on while a neighbour of a pattern already masked against (grown, shrunk or moved by a pixel or two) still reaches this same-size z (0: off)"`
	RescanFirst       string  `json:"rescan_first" enum:"search|neighbours" doc:"on a patch call, what a round on the masked encoder masks against first when both reach their bars: search (the search's best at rescan_gap, then a neighbour at neighbour_z) or neighbours (a neighbour of a pattern masked against at neighbour_z, then the search's best): the neighbours are the trigger's own field, while a masked encoder's new best is often a side answer that spends the channel budget and leaves the trigger's larger or shifted look working"`
	RescanAnchors     string  `json:"rescan_anchors" enum:"off|all|borders" doc:"when a search on the masked encoder (with the neighbours and sweep_z) finds nothing to mask on, judge the anchored patches (see anchors) on the masked encoder and mask on against the best of them while it reaches anchor_z (and rescan_collapse_min): a trojan that also answers away from its trigger is found there first, and its mask can leave the trigger's own place; all: corners, edge middles and centre; borders: without the centre, where masked encoders' side answers stand out (off: none)"`
	ShiftZ            float64 `json:"shift_z" range:"[0,)" doc:"after the channels are chosen, judge on the masked encoder random patterns and the anchored patches by how far each moves the scan images' mean embedding (same-size z against the random ones); when the best reaches this z, its rows join the augment rows and the gate's probe, the gate sends 95% of them through the filtered encoder, and the rows where the original encoder sends it become suspects: a trigger the mask undid only in part can stop pulling images together and still push them towards its target (0: the check is not run)"`
	SweepZ            float64 `json:"sweep_z" range:"[0,)" doc:"after a search on the masked encoder (and the neighbours), mask on while a patch already masked against, moved over the whole image (a grid of steps its own size), still reaches this same-size z somewhere: a trojan that answers to its trigger over a field of positions (0: off)"`

	// smooth
	SmoothMax   float64 `json:"smooth_max" range:"[0,)" doc:"when the found pattern is a noise blend, blur the encoder's input instead of masking channels: the smallest Gaussian sigma (data pixels, 0.6 to smooth_max by 0.1) under which the found blend collapses the scan images at most smooth_ratio times as much as a smooth blend of its alpha; masking as usual when none does (0: never blur)"`
	SmoothRatio float64 `json:"smooth_ratio" range:"(0,)" doc:"a blur undoes the found noise blend when, under it, the blend collapses the scan images at most this many times as much as a smooth blend of the same alpha (blend_ratio is where the scan calls a blend a trigger)"`

	// fill
	Fill      string  `json:"fill" enum:"mean|regression|paired" doc:"what a masked channel becomes: mean (its mean on trusted images), regression (a ridge regression on its layer's kept channels that no signal finds suspicious, fitted on trusted images; kept only when the patterns masked against stay within fill_slack same-size z of the mean fill), or paired (that regression fitted also on the trusted images carrying each pattern masked against, towards the clean image's channels; the same guard)"`
	FillSlack float64 `json:"fill_slack" range:"[0,)" doc:"how much higher (same-size z) the regression fill may leave the worst pattern masked against than the mean fill"`

	// data trigger
	SuspectColumn string  `json:"suspect_column" doc:"boolean column of the trusted input marking the rows sift found in shallow clusters (expand.suspect); from them the filter estimates a trigger planted in the data (empty: none)"`
	CarrierShare  float64 `json:"carrier_share" range:"(0,)" doc:"a row carries the estimated data trigger when its difference from its class's trusted mean projects onto the trigger with at least this share of it"`
	// SiftSuspects says which of sift's suspects are suspects
	// (docs/DECISIONS.md).
	SiftSuspects string `json:"sift_suspects" enum:"all|carriers" doc:"which of sift's suspects (suspect_column) are suspects, never kept: all; or carriers (in a class where the class split or the planted check found carriers, only the sift suspects among those carriers or carrying the data trigger estimated from sift's suspects: the rest are released to bootstrap's rounds, since a clean target class agrees with its label at shallow layers too; in other classes all; the remaining ones go into filter.suspect whether or not the data trigger's estimate succeeds, so bootstrap needs no exclude_column)"`

	// class split
	SplitZ        float64 `json:"split_z" range:"[0,)" doc:"look in every class for part of its images sharing a fine-grained pattern the rest lack (a trigger planted in many images of one label): a class whose images split this many robust standard deviations further apart than the classes' median is flagged, and its rows carrying the pattern are suspects (0: off)"`
	SplitGap      float64 `json:"split_gap" range:"[0,)" doc:"look in every class for part of its images smoothed in the same places (a warp or blend resampling many images of one label): a class whose images' sharpness maps split into groups whose medians lie this many robust standard deviations of the lower group apart is flagged, and its rows carrying the pattern are suspects (0: off)"`
	SplitGapRows  int     `json:"split_gap_rows" range:"[0,)" doc:"with split_gap: a class of more rows than this needs a lower gap, since a clean class's gap strays from the classes' median less the more rows it is taken over: the median plus the larger of split_gap_floor and (split_gap less the median) times the square root of split_gap_rows over the class's rows (0: split_gap for every class)"`
	SplitGapFloor float64 `json:"split_gap_floor" range:"[0,)" doc:"with split_gap_rows: the bar never comes nearer the classes' median gap than this"`
	SplitSigma    float64 `json:"split_sigma" range:"(0,)" doc:"the Gaussian blur (data pixels) an image's fine-grained detail is taken against for split_z"`
	// planted
	PlantedRatio float64 `json:"planted_ratio" range:"[0,)" doc:"look for patches pasted into the training images: a 3x3 content that at least max(10, 0.25% of the rows) images of one label share pixel for pixel at one place (and at least half of the images carrying it there), and that reaches this many times (+1) the most images of that label carrying it anywhere more than 8 pixels away; its carriers are suspects and augment rows carry it on other labels' images (0: off)"`
	PlantedZ     float64 `json:"planted_z" range:"[0,)" doc:"when the random candidates make no call, judge the patches planted_ratio found pasted into the data on the encoder against the same random statistics, and call the encoder backdoored on the best of them when its same-size z reaches this and collapse_min (0: off)"`
	PlantedBlend string  `json:"planted_blend" enum:"off|patch" doc:"when the scan's best pattern is a noise blend and planted_ratio found patches pasted into the data: patch judges them on the encoder as planted_z does and, when the best one's same-size z reaches gap_min and its collapse collapse_min, takes the patch path from it (channels masked against it) instead of the blur, which leaves a pasted patch; off: the blend call stands"`
	PlantedPatch string  `json:"planted_patch" enum:"off|collapse|gated" doc:"when the scan calls a patch and planted_ratio found patches pasted into the data: collapse judges them on the encoder as planted_z does and, when the best one's same-size z reaches anchor_z (a few fixed patches, not a search) and it takes at least half of the scan images' spread that the call leaves away (its collapse more than the call's plus half of one minus the call's), masks against it instead: a trigger pasted pixel for pixel into hundreds of one label's images that the encoder also answers to is the encoder's trigger (T3), and the scan's call can be a part of it; gated as collapse, but when the mask against the pasted patch leaves the gate off (every input would pay the mask), the filter runs again on the scan's call and reports the dropped pass (dropped_takeover) (off: the scan's call stands)"`
	PlantedMask  string  `json:"planted_mask" enum:"mask|skip" doc:"when planted_ratio found patches pasted into the data: skip judges them on the unmasked encoder against the scan's random statistics and, when the best one's same-size z reaches anchor_z and its collapse collapse_min (the encoder answers to the data's trigger: T3), masks nothing whatever the scan called, since the carriers leave the kept rows and the augment rows carry the pasted patch with other labels, which undoes it in the head; mask: the scan's call is masked against as usual"`
	SplitK       float64 `json:"split_k" range:"(0,)" doc:"in a flagged class, a row carries the pattern when its cosine with it (in the view that flagged the class) lies this many robust standard deviations above the median of the class's rows that do not"`
	SplitGapK    float64 `json:"split_gap_k" range:"[0,)" doc:"split_k for a class the sharpness view (split_gap) flagged and the detail view (split_z) did not: a warp smooths each carrier by its own content, so its carriers' cosines spread further below the pattern than a pasted detail's (0: split_k)"`

	// moved
	MovedZ float64 `json:"moved_z" range:"[0,)" doc:"after masking, a training row whose embedding the mask moved more than this many robust standard deviations above the trusted rows' median move is a suspect: a row carrying the trigger moves as triggered inputs do (0: off)"`

	// gate
	GateThrough  float64 `json:"gate_through" range:"[0,1)" doc:"when the gate is set, lower its move threshold (never raise it) until this share of the best checked pattern's augment rows goes through the filtered encoder (0: keep the moved step's threshold); a trigger input kept on the original path keeps the backdoor, and each input sent through pays the mask's accuracy cost"`
	GateClean    float64 `json:"gate_clean" range:"[0,0.5)" doc:"a move gate's threshold is at most the (1 - gate_clean) quantile of the trusted rows' moves, so that at least this share of clean inputs goes through the filtered encoder: a trigger that moves its inputs less far than the moved step's threshold but further than most clean inputs still goes through (0: the moved step's threshold)"`
	GateClasses  string  `json:"gate_classes" enum:"off|found|planted" doc:"with a move gate, found also sends through the filtered encoder every input the original classifier labels with the class where it puts the most of the trusted images carrying the patterns masked against (resolved by bootstrap: class_part_share, class_part_classes): a triggered input the mask does not move far still goes through when the trigger already sends it to its target; planted: as found, and trusted images carrying the patches the planted check found vote too (32 rows beside the scan patterns' 32); off: the move gate alone"`
	GateFallback string  `json:"gate_fallback" enum:"off|class" doc:"when no pattern masked against reaches gate_min, class keeps the move gate if its class part (gate_classes) resolves a class in bootstrap, and drops it otherwise: an input carrying the trigger that the original classifier gives the class part's class goes through the filtered encoder, and one it gives another class is not sent to the target by the original path either, so with the target in the class part the gate lets no more of the trigger through than the filtered encoder alone, and the other inputs are spared the mask; off: no gate (every input pays the mask)"`
	GateMove     string  `json:"gate_move" enum:"length|whitened" doc:"how the move gate measures how far the mask moved an input: length (the move's Euclidean length) or whitened (its Mahalanobis length under the covariance of the trusted rows' moves, shrunk towards the identity, thresholds read on trusted rows the covariance was not fitted on): clean inputs move along the few directions the masked channels feed, an input whose trigger the mask undid moves from the target back to its content"`
	Project      string  `json:"project" enum:"off|scan" doc:"scan: the filtered classifier's head does not read the direction in which the called pattern moves the original encoder's embedding (the mean move over the scan images): the embedding's part along it is set to the trusted rows' for every input, after the gate has measured the move; the mask undoes a trigger only in part, and what it leaves still points where the trigger sends inputs; off: the head reads the whole filtered embedding"`
	GateMin      float64 `json:"gate_min" range:"[0,1]" doc:"the filtered encoder carries a gate (the classifier sends an input through it only when the mask moves the input more than the moved step's threshold, or it sits where the far-moved rows started; the rest through the original encoder) when some pattern masked against has at least this share of its augment rows sent through (0: no gate)"`

	// augment
	AugmentTurns string  `json:"augment_turns" enum:"patterns|families" doc:"how the augment rows share out the patterns: patterns: each pattern masked against (a found pattern's neighbours each count as one) and each data trigger takes a row in turn; families: each family (a found pattern with its neighbours; each data trigger alone) takes a row in turn, and its patterns take turns inside it, so that a trigger found in the data gets as many rows as a found pattern's neighbours together"`
	AugmentShare float64 `json:"augment_share" range:"[0,1]" doc:"trusted images written to augment, as a share of the training rows (round robin over the classes; at most every trusted row), each with one of the patterns masked against or their neighbours pasted in (0: none)"`
	UndoneShare  float64 `json:"undone_share" range:"[0,1]" doc:"augment_share on a run the data stages undo (planted_mask \"skip\" took effect: the encoder answers to a patch pasted into the data, so nothing is masked and the augment rows carrying that patch with other labels are what teaches the head that it means nothing); every other run uses augment_share"`
}

// defaults are filter's defaults (docs/DECISIONS.md says what each was
// chosen on).
var defaults = Params{
	TrustedColumn: "expand.trusted", Seed: 1, Device: "cpu",
	ScanImages: 64, ScanImagesLarge: 32, LargeSide: 96, Candidates: 2000, Refine: 200, Sizes: [2]int{3, 10}, GapMin: 6, CollapseMin: 0.25, BlendRatio: 5, Anchors: "fallback", RescanAnchors: "borders", AnchorZ: 4.5, CallPlace: "all",
	Signals:   []string{"tac", "uclc", "probe"},
	MaxMasked: 0.1, Choice: "collapse_per_change", Rescans: 3, RescanCands: 500, NeighbourZ: 3, RescanFirst: "neighbours",
	Fill: "regression", FillSlack: 1, MovedZ: 2.5, GateMin: 0.25, GateClean: 0.1, GateClasses: "planted", GateFallback: "class", GateMove: "whitened", Project: "scan", SmoothMax: 1.2, SmoothRatio: 1.3,
	AugmentShare: 0.2, UndoneShare: 0.2, AugmentTurns: "patterns", SuspectColumn: "expand.suspect", CarrierShare: 0.5, SiftSuspects: "all", ClampQuantile: 0.99, ClampPatch: "export",
	SplitZ: 5, SplitGap: 8, SplitGapRows: 45, SplitGapFloor: 1, SplitSigma: 1, SplitK: 5, SplitGapK: 3, PlantedRatio: 10, PlantedBlend: "off", PlantedPatch: "gated", PlantedMask: "skip",
}

// Check implements plugin.Checker: what the declaration cannot say.
func (p Params) Check() error {
	switch {
	case p.Encoder == "":
		return plugin.BadInputf("parameter \"encoder\": no encoder given")
	case p.Sizes[1] < p.Sizes[0]:
		return plugin.BadInputf("parameter \"sizes\": %v, want [min, max] with min <= max", p.Sizes)
	case len(p.Signals) == 0:
		return plugin.BadInputf("parameter \"signals\": none given, want some of tac, uclc, probe")
	}
	seen := map[string]bool{}
	for _, s := range p.Signals {
		if seen[s] {
			return plugin.BadInputf("parameter \"signals\": %q listed twice", s)
		}
		seen[s] = true
	}
	return ort.CheckDevice(p.Device)
}

// augmentShare is the augment rows' share of the rows: undone_share on a
// run the data stages undo, augment_share on every other.
func (p Params) augmentShare(undone bool) float64 {
	if undone {
		return p.UndoneShare
	}
	return p.AugmentShare
}

func (p Params) uses(signal string) bool {
	for _, s := range p.Signals {
		if s == signal {
			return true
		}
	}
	return false
}

// Split is the class split's parameters (SplitClasses) as the filter runs
// it: a class needs twice the rows a mean image is taken over.
func (p Params) Split() SplitParams {
	return SplitParams{Z: p.SplitZ, Gap: p.SplitGap, GapRows: p.SplitGapRows, GapFloor: p.SplitGapFloor, Sigma: p.SplitSigma, K: p.SplitK, GapK: p.SplitGapK, MinRows: 2 * minSuspects}
}

// rescanGap is the z a search on the masked encoder must reach to mask on.
func (p Params) rescanGap() float64 {
	if p.RescanGap > 0 {
		return p.RescanGap
	}
	return p.GapMin
}

// anchorZ is the z the best anchored patch must reach to make the call
// (anchors) or to mask on (rescan_anchors).
func (p Params) anchorZ() float64 {
	if p.AnchorZ > 0 {
		return p.AnchorZ
	}
	return p.GapMin
}
