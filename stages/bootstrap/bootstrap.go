// Package bootstrap is T-Core's last stage: progressive bootstrapping
// learning (docs/ALGORITHM.md, stage 4). From the trusted core it trains a head,
// admits the samples the head predicts as their label with high confidence
// and a loss within what the trusted samples of their class show, and
// repeats; the final head, on the last set, is composed with the (filtered)
// encoder into clean_model.onnx. Without a trusted input every row is kept
// and one head is trained: the `none` baseline.
package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/knn"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the bootstrap stage.
type Stage struct{}

// New returns the bootstrap stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "bootstrap",
		Version: "0.18.0",
		Inputs: []plugin.PortSpec{
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings under the (filtered) encoder"},
			{Name: "trusted", Kind: arrowio.KindScores, Optional: true, Doc: "the trusted core (expand.trusted); without it every row is kept (the none baseline)"},
			{Name: "channels", Kind: arrowio.KindChannels, Optional: true, Doc: "channels to switch off in the exported encoder"},
			{Name: "suspects", Kind: arrowio.KindScores, Optional: true, Doc: "rows never to keep (filter.suspect: inside the found trigger's region, moved far by the mask, or carrying the data trigger)"},
			{Name: "augment", Kind: arrowio.KindFeatures, Optional: true, Doc: "extra rows for the final head only (filter.augment: trusted images carrying the found trigger, with their own labels)"},
			{Name: "original", Kind: arrowio.KindFeatures, Optional: true, Doc: "the training rows' embeddings under the original encoder (embed.features): when the encoder carries a gate (filter.gate), a second head is trained on the kept rows' original embeddings and the exported classifier is gated"},
		},
		Outputs: []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "bootstrap.kept, bootstrap.round, bootstrap.loss, bootstrap.pred, bootstrap.label (the label the final head trained the row with; -1: left out)"}},
		Params: plugin.ParamsOf(Params{TrustedColumn: "expand.trusted", SuspectColumn: "filter.suspect", Rounds: 20, Tau: 0.9,
			Admit: "heldout", ExcludeColumn: "expand.suspect",
			LossQuantile: 0.99, GrowthCap: 0.5, ClassGrowth: 1, GrowthClasses: "starved", StarvedBar: "few", FinalEpochs: 40, GateNeighbours: 10, ClassPartShare: 0.15, ClassPartClasses: 1, GateVeto: "unsure", VetoBelow: 0.9, GateClassQuantile: 0.9, Relabel: 0.5, RelabelForm: "soft", FinalSchedule: "constant", FinalDraws: "classes", FinalHeads: 1, OriginalRows: "kept", WarmEpochs: 10, MaxSteps: 4000, HeadParams: mlp.DefaultHeadParams(20)}),
		NeedsAllRows: true,
	}
}

// Params are bootstrap's parameters.
type Params struct {
	TrustedColumn string  `json:"trusted_column" doc:"boolean column of the trusted input"`
	SuspectColumn string  `json:"suspect_column" doc:"boolean column of the suspects input"`
	Rounds        int     `json:"rounds" range:"[0,)" doc:"bootstrapping rounds at most (they stop earlier at the first round that admits nothing)"`
	StopShare     float64 `json:"stop_share" range:"[0,1)" doc:"the rounds also stop after the first round that admits fewer than this share of the rows (0: only a round that admits nothing stops them)"`
	Tau           float32 `json:"tau" range:"(0,1]" doc:"admit when the head predicts the label with at least this probability"`
	LossQuantile  float64 `json:"loss_quantile" range:"(0,1]" doc:"and the loss is below this quantile of the class's kept losses"`
	GrowthCap     float64 `json:"growth_cap" range:"(0,1]" doc:"at most this fraction of all rows admitted per round"`
	ClassGrowth   float64 `json:"class_growth" range:"[0,)" doc:"a class admits at most this many times its kept rows in a round (at least one row), lowest losses first, so a class that starts from few trusted rows grows by steps (0: no per-class cap)"`
	GrowthClasses string  `json:"growth_classes" enum:"all|crowded|starved" doc:"the classes class_growth caps: all; crowded (those holding at least twice their share of the suspects, the classes a poisoning attack's labels point to: Crowded); or starved (the crowded classes that start the rounds with at most a tenth of their trusted rows, the suspects having taken the rest)"`
	// StarvedBar says which loss bar a capped class's candidates must
	// pass (docs/DECISIONS.md, "a starved class takes the bar of all kept
	// rows").
	StarvedBar    string `json:"starved_bar" enum:"own|pooled|few" doc:"the loss bar of a class that class_growth caps: own (the loss_quantile of its own kept rows' losses, as every class); pooled (the larger of that and the loss_quantile of every kept row's loss in the round: a class that starts from a few near-identical rows sets itself a bar none of its other rows reach); or few (pooled while the class keeps fewer than 1/(1-loss_quantile) rows, too few for its quantile to be more than its largest loss, and own from there)"`
	FinalEpochs   int    `json:"final_epochs" range:"[1,)" doc:"epochs of the final head (it always starts afresh)"`
	FinalSchedule string `json:"final_schedule" enum:"constant|cosine" doc:"the learning rate of the final heads (the final head, its relabelled refit and a gated classifier's second head) over their batches: constant, or cosine (annealed from the rounds' rate to 0 along half a cosine); the rounds' heads keep a constant rate"`
	FinalAverage  int    `json:"final_average" range:"[0,)" doc:"the final heads (as final_schedule) end as the mean of their weights at the end of each of their last this many epochs (stochastic weight averaging; 0 or 1: the last batch's weights)"`
	FinalDraws    string `json:"final_draws" enum:"classes|rows" doc:"how the final heads (as final_schedule) draw a batch's rows: classes (a class uniformly, then one of its rows: every class weighs the same, so a 40-row class's rows are drawn about 15 times as often as a 600-row class's) or rows (uniformly over the rows the head trains on: classes weigh what they hold, as the data's own class prior); the rounds' heads always draw by classes"`
	FinalHeads    int    `json:"final_heads" range:"[1,)" doc:"each final head (as final_schedule) is the mean of this many heads' logits, trained side by side from their own seeds and batch draws (one head: the seeds of today's single head), exported as one wider head (mlp.Mean)"`
	WarmEpochs    int    `json:"warm_epochs" range:"[0,)" doc:"rounds after the first start from the previous round's head and train this many epochs (0: every round's head starts afresh)"`
	MaxSteps      int    `json:"max_steps" range:"[0,)" doc:"at most this many ordinary batches per head, rounds and final alike (0: epochs alone decide); 40 final epochs reach it past about 25,000 rows"`
	// WarmMaxSteps caps the warm rounds' fits, so that their cost stops
	// growing with the rows (docs/DECISIONS.md, "warm rounds capped").
	WarmMaxSteps  int    `json:"warm_max_steps" range:"[0,)" doc:"at most this many ordinary batches per head in a warm round (a round after the first, with warm_epochs), where under max_steps (0: max_steps alone); at 300, the floor of every fit (mlp.Config.MinSteps), a warm round trains no longer on many rows than on few, and under held-out admission nothing changes below about 15,000 kept rows (halves of 7,680 rows, 30 batches, 10 epochs)"`
	Classes       int    `json:"classes" role:"classes" range:"[0,)" doc:"declared number of classes (0: max label + 1)"`
	Admit         string `json:"admit" enum:"confident|heldout" doc:"which rows a round admits: confident (the head predicts the label with at least tau and the loss is under loss_quantile of the class's kept rows) or heldout (two heads, each on half the kept rows: the loss is under loss_quantile of the class's kept rows scored by the head that did not see them)"`
	ExcludeColumn string `json:"exclude_column" doc:"boolean column of the trusted input marking rows never to keep (expand.suspect: sift's shallow-cluster suspects); empty: none"`
	Encoder       string `json:"encoder" role:"encoder" doc:"encoder (ONNX) to compose with the head; tcore run sets it"`
	Original      string `json:"original_encoder" role:"encoder" doc:"the original encoder (ONNX), for a gated classifier when the encoder carries a gate; tcore run sets it"`
	// OriginalRows says what a gated classifier's original head trains
	// on (docs/DECISIONS.md).
	OriginalRows string `json:"original_rows" enum:"kept|spread|nonsuspect" doc:"the rows a gated classifier's original head trains on: kept (the kept rows); spread (the kept rows and the suspects of every class the suspects do not crowd, Crowded, under their own labels: the rows a mask moves in clean data spread over the classes, poison crowds its target's); or nonsuspect (every row that is not a suspect, admitted by the rounds or not, under its own label)"`
	Embedding    string `json:"embedding" doc:"the encoder's embedding output (default: detected)"`
	// GateNeighbours widens a class gate by the found trigger's
	// neighbourhood (docs/DECISIONS.md).
	GateNeighbours int `json:"gate_neighbours" range:"[0,)" doc:"when a class gate's probe rows' nearest kept rows (original embeddings, cosine; this many per row) are mostly of another class than the original classifier gives them most, the gate also takes every class holding 5% of those rows' labels (0: the classifier's labels alone)"`
	// ClassPartShare is the share of the probe rows that puts a class in
	// a move gate's class part.
	ClassPartClasses int     `json:"class_part_classes" range:"[0,)" doc:"a move gate's class part takes at most this many classes, most probe rows first (0: every class with class_part_share)"`
	ClassPartShare   float64 `json:"class_part_share" range:"(0,1]" doc:"a class joins a move gate's class part (filter gate_classes found) when the original classifier gives it at least this share of the gate's probe rows (trusted images carrying the patterns masked against, and the patches filter's planted check found), and at least two rows; the neighbourhood never widens a class part (a class gate takes 5% and gate_neighbours)"`
	// GateVeto vetoes a move gate's classes on inputs the mask moved
	// (docs/DECISIONS.md, bootstrap 0.9.7).
	GateVeto string `json:"gate_veto" enum:"off|moved|region|unsure" doc:"with unsure, the gated classifier gives an input that the mask moves past the gate's threshold and that the filtered head puts in one of the gate's class part's classes with a probability under veto_below the filtered head's best class outside the class part: a trigger the mask undid in part leaves the filtered head torn between the image's class and the trigger's, where a clean image of that class moved as far is given it with near certainty; with moved, the gated classifier gives an input that the mask moves farther than 99% of its class's trusted rows (and past the gate's threshold) and that the filtered head still puts in one of the gate's class part's classes the filtered head's best other class: its trigger was undone only in part; with region, an input the mask moves past the gate's threshold, that the filtered head puts in such a class and whose original embedding lies in the found pattern's region (when the filter found it apart from the trusted rows) gets the filtered head's best class among those holding under 5% of the gate's probe rows (off: the filtered head's class)"`
	// VetoBelow is how unsure the filtered head must be for gate_veto
	// unsure to veto its class.
	VetoBelow float64 `json:"veto_below" range:"(0,1]" doc:"with gate_veto unsure, an input is vetoed only when the filtered head's probability of the class part's class it gives is under this"`
	// GateClassQuantile gives each class of the original head its own
	// move threshold (docs/DECISIONS.md, "a move threshold per class").
	GateClassQuantile float64 `json:"gate_class_quantile" range:"[0,1)" doc:"with a gate that has a move part, each class of the original head gets its own move threshold: this quantile of the moves of the kept rows the original head gives that class, never below the gate's threshold (a class with fewer than 20 such rows keeps the gate's); an input then goes through the filtered encoder when the mask moves it past the threshold of the class the original head gives it, so that the clean inputs of classes the mask moves far stay on the original path (0: the gate's threshold for every class)"`
	Relabel           float32 `json:"relabel" range:"[0,1]" doc:"suspects (rows never to keep) that the final head gives another class than their label with at least this probability join it under that class, and the final head trains again (0: off)"`
	// RelabelForm says what a relabelled suspect trains towards
	// (docs/DECISIONS.md, "relabelled suspects train towards the final
	// head's probabilities").
	RelabelForm string `json:"relabel_form" enum:"hard|soft" doc:"what a suspect relabel picks trains towards: hard (the one-hot of the final head's top class) or soft (the final head's probabilities over the classes the suspects do not crowd, renormalised: its given label and the crowded classes get 0; where the top class is not its source, the row still teaches that the trigger is not the target without a wrong class of its own)"`
	Export      string `json:"export" role:"export" doc:"where to write the classifier (encoder + head) as ONNX; tcore run sets it to clean_model.onnx of the run"`
	mlp.HeadParams
}

// finalConfig is the training configuration of the final heads: the
// final head, its relabelled refit and a gated classifier's second head.
func (p Params) finalConfig() mlp.Config {
	cfg := p.Config()
	cfg.Epochs, cfg.MaxSteps, cfg.Schedule, cfg.Average = p.FinalEpochs, p.MaxSteps, p.FinalSchedule, p.FinalAverage
	cfg.Balanced = p.FinalDraws != "rows"
	return cfg
}

// warmConfig is the training configuration of the warm rounds' heads,
// from the rounds' own: warm_epochs epochs, and at most warm_max_steps
// batches where that is under the rounds' cap.
func (p Params) warmConfig(rounds mlp.Config) mlp.Config {
	w := rounds
	w.Epochs = p.WarmEpochs
	if p.WarmMaxSteps > 0 && (w.MaxSteps == 0 || p.WarmMaxSteps < w.MaxSteps) {
		w.MaxSteps = p.WarmMaxSteps
	}
	return w
}

// Check implements plugin.Checker: it validates the parameters.
func (p Params) Check() error {
	if p.Export != "" && p.Encoder == "" {
		return plugin.BadInputf("parameter \"export\" needs \"encoder\"")
	}
	return p.HeadParams.Check()
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	t, err := feat.Open(in, "features")
	if err != nil {
		return nil, err
	}
	cols := []string{p.TrustedColumn}
	if p.ExcludeColumn != "" {
		cols = append(cols, p.ExcludeColumn)
	}
	var start, never []bool
	tc, err := feat.OpenScores(in, "trusted", t, cols...)
	if err == nil {
		start, never = tc[p.TrustedColumn].B, tc[p.ExcludeColumn].B
		if start == nil || (p.ExcludeColumn != "" && never == nil) {
			return nil, plugin.PortError("trusted", plugin.BadInputf("columns %v must be boolean", cols))
		}
	}
	if errors.Is(err, plugin.ErrNotConnected) {
		start = make([]bool, t.N())
		for i := range start {
			start[i] = true
		}
		p.Rounds = 0
	} else if err != nil {
		return nil, err
	}
	exclude, err := feat.Bools(in, "suspects", t, p.SuspectColumn)
	if errors.Is(err, plugin.ErrNotConnected) {
		exclude = nil
	} else if err != nil {
		return nil, err
	}
	exclude = Excluded(exclude, never)
	masks, err := chanfilter.MasksFromPort(in, "channels")
	if err != nil {
		return nil, err
	}
	aug, err := feat.Open(in, "augment")
	if errors.Is(err, plugin.ErrNotConnected) {
		aug = nil
	} else if err != nil {
		return nil, err
	} else if aug.N() > 0 && aug.Embedding.D != t.Embedding.D {
		return nil, plugin.PortError("augment", plugin.BadInputf("embedding of %d values, the features have %d", aug.Embedding.D, t.Embedding.D))
	}
	var gs *gateSetup
	if p.Export != "" {
		if gs, err = setUpGate(p, in, t, masks); err != nil {
			return nil, err
		}
		gs.trusted = start
	}
	// The filtered head may leave directions of the filtered embedding
	// out (chanfilter.Project): it trains on, and the classifier feeds
	// it, the projected embedding; the gate measures the unprojected one.
	proj, err := readProject(p, gs)
	if err != nil {
		return nil, err
	}
	tb, augb := t, aug
	if proj != nil && len(proj.Dirs[0]) != t.Embedding.D {
		return nil, plugin.PortError("features", plugin.BadInputf("embedding of %d values, the encoder's projection (metadata %s) has %d", t.Embedding.D, chanfilter.ProjectMeta, len(proj.Dirs[0])))
	}
	if proj != nil {
		tb, augb = projected(t, proj), projected(aug, proj)
	}
	var alongside func(kept []bool) error
	if gs != nil && gs.gate != nil {
		// The gated classifier's second head needs the kept rows (and,
		// by original_rows, more): it trains beside the final head.
		alongside = func(kept []bool) (err error) {
			train := kept
			switch p.OriginalRows {
			case "nonsuspect":
				train = NonSuspect(exclude, len(kept))
			case "spread":
				nc, err := t.CheckClasses(p.Classes)
				if err != nil {
					return err
				}
				crowded := Crowded(exclude, t.Labels, nc)
				for c, on := range crowded {
					if on {
						gs.crowded = append(gs.crowded, c)
					}
				}
				train = Spread(kept, exclude, t.Labels, crowded)
			}
			gs.kept = kept
			gs.head, gs.rows, gs.fit, err = originalHead(ctx, p, t, gs.orig, kept, train)
			return err
		}
	}
	res, err := bootstrap(ctx, tb, start, exclude, augb, p, progress, alongside)
	if err != nil {
		return nil, err
	}
	if p.Export != "" {
		gated, err := export(p, t, masks, res, gs, proj)
		if err != nil {
			return nil, err
		}
		res.Metrics["exported"], res.Metrics["gated"] = p.Export, gated
		if gs.gate != nil {
			res.Metrics["original_head_rows"] = gs.fit
			if p.OriginalRows == "spread" {
				res.Metrics["original_spread_crowded"] = gs.crowded
			}
		}
	}
	return res.Metrics, feat.WriteScores(out, "scores", t.IDs, []feat.Column{{Name: "bootstrap.kept", B: res.Kept},
		{Name: "bootstrap.round", I: res.Round}, {Name: "bootstrap.loss", F: res.Loss}, {Name: "bootstrap.pred", I: res.Pred},
		{Name: "bootstrap.label", I: res.Label}})
}

// Excluded is the rows never to keep: marked in a or in b (either may be
// nil: none); nil when neither is given.
func Excluded(a, b []bool) []bool {
	if a == nil && b == nil {
		return nil
	}
	out := make([]bool, max(len(a), len(b)))
	for i := range out {
		out[i] = (a != nil && a[i]) || (b != nil && b[i])
	}
	return out
}

// Restart keeps, for each class whose trusted rows (start) were all
// excluded, every row of the class that is not excluded, and returns them:
// a class whose trusted core was all suspects (a trigger planted in its
// images, found by the filter) would otherwise never be admitted, since
// held-out admission takes nothing of a class with no kept rows. kept is
// updated in place.
func Restart(kept, start, exclude []bool, labels []int32) []int {
	if exclude == nil {
		return nil
	}
	trusted, left := map[int32]int{}, map[int32]int{}
	for i, s := range start {
		if s {
			trusted[labels[i]]++
			if !exclude[i] {
				left[labels[i]]++
			}
		}
	}
	var out []int
	for i, l := range labels {
		if trusted[l] > 0 && left[l] == 0 && !exclude[i] && !kept[i] {
			kept[i] = true
			out = append(out, i)
		}
	}
	return out
}

// Result is bootstrap's verdict and head.
type Result struct {
	Kept []bool
	// Label is the label each row trained the final head with: its own
	// when kept, another class when relabelled (Params.Relabel), -1 when
	// left out.
	Label   []int32
	Round   []int32
	Loss    []float32
	Pred    []int32
	Head    *mlp.Head
	Metrics plugin.Metrics
}

// Bootstrap grows the kept set from start and trains the final head; rows
// marked in exclude (nil: none) are never kept. The final head also trains
// on aug's rows (nil: none).
func Bootstrap(ctx context.Context, t *feat.Table, start, exclude []bool, aug *feat.Table, p Params, progress plugin.Progress) (*Result, error) {
	return bootstrap(ctx, t, start, exclude, aug, p, progress, nil)
}

// bootstrap is Bootstrap; alongside (nil: none), given the kept rows, runs
// beside the final head's first fit (mlp.Together), both on paired
// trainers: a head's fit keeps about one core busy, and its result does
// not depend on its threads.
func bootstrap(ctx context.Context, t *feat.Table, start, exclude []bool, aug *feat.Table, p Params, progress plugin.Progress, alongside func(kept []bool) error) (*Result, error) {
	nc, err := t.CheckClasses(p.Classes)
	if err != nil {
		return nil, err
	}
	n, d := t.N(), t.Embedding.D
	x, y := t.Embedding.X, t.Labels
	sizes := p.Sizes(d, nc)
	cfg := p.Config()
	cfg.MaxSteps = p.MaxSteps
	// Held-out admission trains its two halves' heads side by side
	// (HeldOut, mlp.Together); the final head trains alone, on cfg.
	rcfg := cfg
	if p.Admit == "heldout" {
		rcfg = cfg.Paired()
	}
	tr, err := mlp.NewTrainer(sizes, rcfg)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	res := &Result{Kept: append([]bool(nil), start...), Round: make([]int32, n)}
	excluded := 0
	for i := range res.Round {
		res.Round[i] = -1
		if exclude != nil && exclude[i] {
			res.Kept[i] = false
			excluded++
		}
		if res.Kept[i] {
			res.Round[i] = 0
		}
	}
	restarted := Restart(res.Kept, start, exclude, y)
	for _, i := range restarted {
		res.Round[i] = 0
	}
	rows := func() []int {
		var out []int
		for i, k := range res.Kept {
			if k {
				out = append(out, i)
			}
		}
		return out
	}
	if len(rows()) == 0 {
		return nil, plugin.PortError("trusted", plugin.BadInputf("the trusted set is empty"))
	}
	var warm *mlp.Trainer
	if p.WarmEpochs > 0 {
		if warm, err = mlp.NewTrainer(sizes, p.warmConfig(rcfg)); err != nil {
			return nil, err
		}
		defer warm.Close()
	}
	capped := growthCapped(p.GrowthClasses, start, res.Kept, exclude, y, nc)
	var admitted []int
	var prev *mlp.Head    // the last round's head
	var pair [2]*mlp.Head // or heads, with the admission rule heldout
	for r := 1; r <= p.Rounds; r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var sc *mlp.Scores
		losses := make([][]float32, nc) // each class's kept rows' losses
		if p.Admit == "heldout" {
			fit := tr
			if warm != nil && pair[0] != nil {
				fit = warm
			}
			if sc, pair, err = HeldOut(fit, sizes, p.Seed+uint64(r), x, y, res.Kept, nc, pair); err != nil {
				return nil, err
			}
		} else {
			h, fit := mlp.NewHead(sizes, p.Seed+uint64(r)), tr
			if warm != nil && prev != nil {
				h, fit = prev.Clone(), warm
			}
			if _, err := fit.Fit(h, x, y, rows(), nil); err != nil {
				return nil, err
			}
			prev = h
			if sc, err = tr.Score(h, x, y); err != nil {
				return nil, err
			}
		}
		for i, k := range res.Kept {
			if k {
				losses[y[i]] = append(losses[y[i]], sc.Loss[i])
			}
		}
		thr := make([]float32, nc)
		for c := range losses {
			if len(losses[c]) == 0 {
				thr[c] = -1 // nothing of an unseen class is admitted
				continue
			}
			sort.Slice(losses[c], func(a, b int) bool { return losses[c][a] < losses[c][b] })
			thr[c] = stat.QuantileSorted(losses[c], p.LossQuantile)
		}
		switch p.StarvedBar {
		case "pooled":
			raisePooled(thr, losses, capped, p.LossQuantile, math.MaxInt)
		case "few":
			raisePooled(thr, losses, capped, p.LossQuantile, fewRows(p.LossQuantile))
		}
		var cands []int
		for i := 0; i < n; i++ {
			confident := p.Admit == "heldout" || sc.PY[i] >= p.Tau
			if !res.Kept[i] && (exclude == nil || !exclude[i]) && confident && sc.Loss[i] < thr[y[i]] {
				cands = append(cands, i)
			}
		}
		sort.Slice(cands, func(a, b int) bool {
			if sc.Loss[cands[a]] != sc.Loss[cands[b]] {
				return sc.Loss[cands[a]] < sc.Loss[cands[b]]
			}
			return t.IDs[cands[a]] < t.IDs[cands[b]]
		})
		cands = cands[:min(len(cands), int(p.GrowthCap*float64(n)))]
		if p.ClassGrowth > 0 {
			cands = capPerClass(cands, res.Kept, y, capped, p.ClassGrowth)
		}
		for _, i := range cands {
			res.Kept[i] = true
			res.Round[i] = int32(r)
		}
		admitted = append(admitted, len(cands))
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(r), Total: int64(p.Rounds), Unit: "rounds"})
		}
		if len(cands) == 0 || float64(len(cands)) < p.StopShare*float64(n) {
			break
		}
	}
	final := rows()
	fcfg := p.finalConfig()
	firstCfg := fcfg
	if alongside != nil || p.FinalHeads > 1 {
		firstCfg = fcfg.Paired()
	}
	ftr, err := mlp.NewTrainer(sizes, firstCfg)
	if err != nil {
		return nil, err
	}
	defer ftr.Close()
	if aug != nil && aug.N() > 0 {
		for _, l := range aug.Labels {
			if int(l) < 0 || int(l) >= nc {
				return nil, plugin.PortError("augment", plugin.BadInputf("label %d outside the %d classes", l, nc))
			}
		}
	}
	res.Label = make([]int32, n)
	for i := range res.Label {
		res.Label[i] = -1
		if res.Kept[i] {
			res.Label[i] = y[i]
		}
	}
	var trainLoss float64
	var sc *mlp.Scores
	first := func() (err error) {
		trainLoss, sc, err = finalHead(ftr, res, x, y, aug, nil, p.FinalHeads, p.Seed+1000)
		return err
	}
	if alongside == nil {
		err = first()
	} else {
		kept := append([]bool(nil), res.Kept...)
		err = mlp.Together(first, func() error { return alongside(kept) })
	}
	if err != nil {
		return nil, err
	}
	relabelled := 0
	if p.Relabel > 0 {
		var soft mlp.Targets
		if p.RelabelForm == "soft" {
			soft = mlp.Targets{}
		}
		crowded := Crowded(exclude, y, nc)
		for i, l := range Relabels(sc, exclude, crowded, y, nc, p.Relabel) {
			if l >= 0 {
				res.Label[i] = l
				relabelled++
				if soft != nil {
					soft[i] = SoftTarget(sc.Prob[i*nc:(i+1)*nc], crowded)
				}
			}
		}
		if relabelled > 0 {
			// Alone now: a paired trainer's fit takes every thread
			// (mlp.Config.AloneThreads).
			if trainLoss, sc, err = finalHead(ftr, res, x, y, aug, soft, p.FinalHeads, p.Seed+1000); err != nil {
				return nil, err
			}
		}
	}
	res.Loss, res.Pred = sc.Loss, sc.Pred
	perClass := map[string]int{}
	for _, i := range final {
		perClass[strconv.Itoa(int(y[i]))]++
	}
	res.Metrics = plugin.Metrics{"rows": n, "classes": nc, "start": len(final) - sum(admitted), "restarted": len(restarted), "kept": len(final),
		"not_kept": n - len(final), "excluded_suspects": excluded, "kept_per_class": perClass, "admitted_per_round": admitted,
		"final_train_loss": trainLoss, "tau": p.Tau, "augment_rows": augRows(aug), "relabelled": relabelled}
	if p.ClassGrowth > 0 {
		var classes []int
		for c, k := range capped {
			if k {
				classes = append(classes, c)
			}
		}
		res.Metrics["growth_capped_classes"] = classes
	}
	return res, nil
}

// Relabels gives, per row, the class a suspect joins the final head
// under (-1: none): suspects that the final head (its scores sc under the
// rows' labels y) gives another class with probability q or more. A
// poisoned row carries its source's content under the target's label,
// and relabelled it teaches the head that the trigger does not make the
// target (docs/ALGORITHM.md, stage 4). Rows never admitted but not
// suspected stay out: they are the hard rows of clean data, and
// relabelled they cost accuracy. Only suspects of a class the suspects
// crowd (crowded: Crowded of the suspects) move, and never into such a
// class: poison carries its target's label, while the suspects of clean
// data (rows a mask moved) spread over the classes, and the filtered head
// may still send some of them to a trojan's target, which relabelled
// would teach it.
func Relabels(sc *mlp.Scores, suspect, crowded []bool, y []int32, nc int, q float32) []int32 {
	out := make([]int32, len(y))
	for i := range out {
		out[i] = -1
		if pr := sc.Pred[i]; suspect != nil && suspect[i] && crowded[y[i]] && !crowded[pr] && pr != y[i] && sc.Prob[i*nc+int(pr)] >= q {
			out[i] = pr
		}
	}
	return out
}

// SoftTarget is a relabelled suspect's target under relabel_form "soft":
// the final head's probabilities prob over the classes, those of the
// crowded classes set to 0 and the rest renormalised to sum to 1. Relabels
// only picks rows whose top class is not crowded, so the rest holds at
// least that class's probability.
func SoftTarget(prob []float32, crowded []bool) []float32 {
	out := make([]float32, len(prob))
	var s float64
	for c, v := range prob {
		if !crowded[c] {
			out[c] = v
			s += float64(v)
		}
	}
	for c := range out {
		out[c] = float32(float64(out[c]) / s)
	}
	return out
}

// Crowded marks the classes that hold at least twice their share of all
// rows among the suspects (and 1% of the rows): the classes a poisoning
// attack's labels point to. nil suspects: none.
func Crowded(suspect []bool, labels []int32, nc int) []bool {
	out := make([]bool, nc)
	if suspect == nil {
		return out
	}
	all, sus := feat.CountPer(nil, labels, nc), feat.CountPer(suspect, labels, nc)
	ns, n := sum(sus), len(labels)
	for c := range out {
		out[c] = ns > 0 && sus[c]*n >= 2*all[c]*ns && sus[c]*100 >= n
	}
	return out
}

// finalHead trains res.Head afresh (seed) on the rows res labels (Label
// not -1, with that label, or towards their target in soft) and aug's
// rows, and scores every row under its given label y.
func finalHead(tr *mlp.Trainer, res *Result, x []float32, y []int32, aug *feat.Table, soft mlp.Targets, heads int, seed uint64) (float64, *mlp.Scores, error) {
	n := len(res.Label)
	fx, fy := x, res.Label
	var frows []int
	for i, l := range res.Label {
		if l >= 0 {
			frows = append(frows, i)
		}
	}
	if aug != nil && aug.N() > 0 {
		fx = append(append(make([]float32, 0, len(x)+len(aug.Embedding.X)), x...), aug.Embedding.X...)
		fy = append(append(make([]int32, 0, n+aug.N()), res.Label...), aug.Labels...)
		for i := 0; i < aug.N(); i++ {
			frows = append(frows, n+i)
		}
	}
	var loss float64
	var err error
	if res.Head, loss, err = tr.FitMean(heads, seed, fx, fy, soft, frows); err != nil {
		return 0, nil, err
	}
	sc, err := tr.Score(res.Head, x, y)
	return loss, sc, err
}

// growthCapped marks the classes class_growth caps under growth_classes
// scope: every class; the classes the suspects (exclude) crowd; or those of
// them that start the rounds (kept) with at most a tenth of their trusted
// rows (start).
func growthCapped(scope string, start, kept, exclude []bool, y []int32, nc int) []bool {
	if scope == "all" {
		capped := make([]bool, nc)
		for c := range capped {
			capped[c] = true
		}
		return capped
	}
	capped := Crowded(exclude, y, nc)
	if scope == "starved" {
		trusted, left := feat.CountPer(start, y, nc), feat.CountPer(kept, y, nc)
		for c := range capped {
			capped[c] = capped[c] && left[c]*10 <= trusted[c]
		}
	}
	return capped
}

// fewRows is the fewest kept rows whose q quantile (as the rounds take it)
// lies under their largest loss: 1/(1-q), rounded up (100 for 0.99); with
// q 1 no count is enough.
func fewRows(q float64) int {
	if q >= 1 {
		return math.MaxInt
	}
	return int(math.Ceil(1/(1-q) - 1e-9))
}

// raisePooled lifts the bar of each capped class that keeps at least one
// and fewer than below rows to at least the q quantile of every class's
// kept losses (each class's losses sorted ascending).
func raisePooled(thr []float32, losses [][]float32, capped []bool, q float64, below int) {
	var all []float32
	for _, l := range losses {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pooled := stat.QuantileSorted(all, q)
	for c := range thr {
		if capped[c] && len(losses[c]) > 0 && len(losses[c]) < below {
			thr[c] = max(thr[c], pooled)
		}
	}
}

// capPerClass keeps, in order, the candidates of each capped class up to
// growth times the class's kept rows (at least one), and every candidate
// of the other classes.
func capPerClass(cands []int, kept []bool, y []int32, capped []bool, growth float64) []int {
	room := feat.CountPer(kept, y, len(capped))
	for c := range room {
		room[c] = max(1, int(growth*float64(room[c])))
	}
	out := cands[:0:0]
	for _, i := range cands {
		if !capped[y[i]] {
			out = append(out, i)
		} else if room[y[i]] > 0 {
			room[y[i]]--
			out = append(out, i)
		}
	}
	return out
}

func augRows(aug *feat.Table) int {
	if aug == nil {
		return 0
	}
	return aug.N()
}

// HeldOut scores every row for the admission rule heldout: two heads, each
// trained on half the kept rows of every class (alternate rows of a seeded
// shuffle), starting from prev's heads when set (warm rounds); a kept row
// gets its loss and probabilities under the head that did not see it, any
// other row the mean of the two heads' losses and probabilities (Pred is the
// argmax of those probabilities). It returns the scores and the two heads.
func HeldOut(tr *mlp.Trainer, sizes []int, seed uint64, x []float32, y []int32, kept []bool, nc int, prev [2]*mlp.Head) (*mlp.Scores, [2]*mlp.Head, error) {
	var heads [2]*mlp.Head
	byClass := make([][]int, nc)
	for i, k := range kept {
		if k {
			byClass[y[i]] = append(byClass[y[i]], i)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x686f6c64))
	fold := make([]int8, len(kept))
	var halves [2][]int
	for _, rows := range byClass {
		rng.Shuffle(len(rows), func(a, b int) { rows[a], rows[b] = rows[b], rows[a] })
		for j, i := range rows {
			fold[i] = int8(j % 2)
			halves[j%2] = append(halves[j%2], i)
		}
	}
	var sc [2]*mlp.Scores
	for f := range halves {
		if len(halves[f]) == 0 {
			halves[f] = halves[1-f]
		}
		heads[f] = mlp.NewHead(sizes, seed*2+uint64(f))
		if prev[f] != nil {
			heads[f] = prev[f].Clone()
		}
	}
	// The two halves' heads train side by side (mlp.Together).
	half := func(f int) func() error {
		return func() (err error) {
			sc[f], err = tr.FitScore(heads[f], x, y, halves[f], nil)
			return err
		}
	}
	if err := mlp.Together(half(0), half(1)); err != nil {
		return nil, heads, err
	}
	out := &mlp.Scores{Loss: make([]float32, len(y)), PY: make([]float32, len(y)), Pred: make([]int32, len(y)), Prob: make([]float32, len(sc[0].Prob))}
	for i := range y {
		p := out.Prob[i*nc : (i+1)*nc]
		if kept[i] {
			other := 1 - fold[i]
			out.Loss[i], out.PY[i] = sc[other].Loss[i], sc[other].PY[i]
			copy(p, sc[other].Prob[i*nc:(i+1)*nc])
		} else {
			out.Loss[i] = (sc[0].Loss[i] + sc[1].Loss[i]) / 2
			out.PY[i] = (sc[0].PY[i] + sc[1].PY[i]) / 2
			for c := range p {
				p[c] = (sc[0].Prob[i*nc+c] + sc[1].Prob[i*nc+c]) / 2
			}
		}
		best := 0
		for c := range p {
			if p[c] > p[best] {
				best = c
			}
		}
		out.Pred[i] = int32(best)
	}
	return out, heads, nil
}

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// export composes the encoder (with masks) and the final head into one
// ONNX classifier (input: the encoder's image input; output "logits") and
// writes it atomically. When the encoder carries a gate (chanfilter.Gate)
// and the original input is connected, a second head is trained on the
// kept rows' original embeddings, and the classifier sends each input
// through the filtered encoder and the final head only where the gate says
// so, through the original encoder and the second head elsewhere. It
// reports whether the classifier is gated, or why not.
// gateSetup is what the export needs to know before bootstrap trains:
// the filtered encoder, its gate (nil: the classifier is not gated, for
// why), the original features, and then the second head and its rows.
type gateSetup struct {
	m    *encoder.Model
	gate *chanfilter.Gate
	why  string
	orig *feat.Table
	head *mlp.Head
	rows []int
	// fit is how many rows the original head trained on; crowded the
	// classes original_rows "spread" left out.
	fit     int
	crowded []int
	// trusted marks the trusted rows of the features (the veto's
	// per-class moves); kept the kept rows (gate_class_quantile's).
	trusted, kept []bool
}

// setUpGate reads the filtered encoder and decides whether the exported
// classifier is gated.
func setUpGate(p Params, in plugin.Inputs, t *feat.Table, masks []encoder.Mask) (*gateSetup, error) {
	m, err := classifierEncoder(p.Encoder, p.Embedding, t.Preprocess)
	if err != nil {
		return nil, err
	}
	g, err := chanfilter.ReadGate(m.Graph())
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	gs := &gateSetup{m: m, why: "no: the encoder carries no gate"}
	if g != nil {
		gs.orig, err = feat.Open(in, "original")
		switch {
		case errors.Is(err, plugin.ErrNotConnected):
			gs.why, g = "no: the encoder carries a gate, but the original input is not connected", nil
		case err != nil:
			return nil, err
		case len(masks) > 0:
			gs.why, g = "no: the encoder carries a gate, but channels switch more off", nil
		case p.Original == "":
			gs.why, g = "no: the encoder carries a gate, but no original_encoder is given", nil
		}
	}
	gs.gate = g
	return gs, nil
}

func export(p Params, t *feat.Table, masks []encoder.Mask, res *Result, gs *gateSetup, proj *chanfilter.Project) (string, error) {
	m, g, orig := gs.m, gs.gate, gs.orig
	// headInput is what the final head reads in a graph: the filtered
	// embedding emb, projected when the filter says so.
	headInput := func(gm *onnxgraph.Model, emb string) string {
		if proj == nil {
			return emb
		}
		return proj.Graph(gm, emb)
	}
	// ungated writes the filtered encoder and the final head alone,
	// without the gate the filtered encoder may record: the classifier
	// applies none.
	ungated := func(why string) (string, error) {
		return why, m.Export(masks, p.Export, func(gm *onnxgraph.Model, emb string) error {
			gm.DeleteMeta(chanfilter.GateMeta)
			return asClassifier(gm, headInput(gm, emb), res.Head, "logits")
		})
	}
	if g == nil {
		return ungated(gs.why)
	}
	// The second head trained beside the final head (Run's alongside).
	h, rows := gs.head, gs.rows
	gated := "yes"
	if g.IsClass() {
		cl, err := ClassGate(g, h.Predict, orig, rows, p.ClassRule(g))
		if err != nil {
			return "", plugin.PortError("original", plugin.BadInput(err))
		}
		shares, ns, minRows := cl.Head, cl.Near, cl.MinRows
		res.Metrics["gate_probe_classes"] = shares[:min(len(shares), 8)]
		if ns != nil {
			res.Metrics["gate_neighbour_classes"] = ns[:min(len(ns), 8)]
		}
		byHead := len(g.Classes) - cl.Widened
		why := ""
		switch {
		case len(ns) == 0:
		case len(shares) == 0:
			why = fmt.Sprintf("; the classifier moves none of them out of its own class, their %d nearest kept rows are mostly of class %d, so every class with %.0f%% of those is in", p.GateNeighbours, ns[0].Class, 100*classMinShare)
		case ns[0].Class != shares[0].Class:
			why = fmt.Sprintf("; their %d nearest kept rows are mostly of class %d, not the classifier's %d, so every class with %.0f%% of those is in too", p.GateNeighbours, ns[0].Class, shares[0].Class, 100*classMinShare)
		}
		switch {
		case len(g.Classes) == 0 && g.NeedClass:
			return ungated(fmt.Sprintf("no: the filter's check found the move gate alone does not send the found trigger's inputs through (gate_fallback), and the original classifier gives no class %d of the found trigger's %d rows", minRows, len(g.Probe)))
		case len(g.Classes) == 0 && g.Both:
			gated = fmt.Sprintf("yes: inputs the mask moves far go through the filtered encoder (the original classifier gives no class %d of the found trigger's %d rows)", minRows, len(g.Probe))
		case len(g.Classes) == 0:
			return ungated(fmt.Sprintf("no: the original classifier gives no class %d of the found trigger's %d rows", minRows, len(g.Probe)))
		default:
			names := make([]string, len(g.Classes))
			for i, c := range g.Classes {
				names[i] = strconv.Itoa(c)
			}
			covered := 0.0
			for _, s := range shares[:byHead] {
				covered += s.Share
			}
			also := ""
			if g.Both {
				also = "inputs the mask moves far and "
			}
			rest := fmt.Sprintf("no other class has %d of them", minRows)
			if cl.Cut > 0 {
				rest = fmt.Sprintf("the most of any class; at most %d in the part", p.ClassPartClasses)
			}
			if g.NeedClass {
				why += "; the move part alone failed the filter's check, so the gate stands on this class part (gate_fallback)"
			}
			gated = fmt.Sprintf("yes: %sinputs the original classifier labels %s go through the filtered encoder (%.0f%% of the found trigger's rows by that classifier; %s%s)", also, strings.Join(names, ", "), 100*covered, rest, why)
			switch {
			case g.Both && p.GateVeto == "moved":
				if g.VetoMoved, err = VetoThresholds(t, orig, gs.trusted, g); err != nil {
					return "", err
				}
				res.Metrics["gate_veto_moved"] = g.VetoMoved
				gated += fmt.Sprintf("; an input the filtered head still labels %s gets its best other class when the mask moved it farther than %.0f%% of that class's trusted rows", strings.Join(names, " or "), 100*vetoQuantile)
			case g.Both && p.GateVeto == "unsure":
				UnsureVeto(g, p.VetoBelow)
				gated += fmt.Sprintf("; an input the mask moves past the gate's threshold that the filtered head labels %s with a probability under %g gets the filtered head's best class outside the class part", strings.Join(names, " or "), p.VetoBelow)
			case g.Both && p.GateVeto == "region" && g.RegionCentre != nil:
				RegionVeto(g, shares)
				res.Metrics["gate_veto_never"] = g.VetoNever
				gated += fmt.Sprintf("; an input the mask moves far that the filtered head still labels %s and that the original encoder puts in the found pattern's region gets the filtered head's best class outside %v", strings.Join(names, " or "), g.VetoNever)
			case g.Both && p.GateVeto == "region":
				gated += "; no veto: the filter found the found pattern's region not apart from the trusted rows"
			}
		}
	}
	if g.IsMove() && p.GateClassQuantile > 0 {
		nc, err := t.CheckClasses(p.Classes)
		if err != nil {
			return "", err
		}
		if g.ClassMoved, err = ClassMoveThresholds(t, orig, gs.kept, g, h.Predict, nc, p.GateClassQuantile); err != nil {
			return "", err
		}
		res.Metrics["gate_class_moved"] = g.ClassMoved
		gated += fmt.Sprintf("; the move part holds an input to the threshold of the class the original head gives it: the %.0f%% quantile of the moves of the kept rows it gives that class, at least %.3g", 100*p.GateClassQuantile, g.Moved)
	}
	o, err := classifierEncoder(p.Original, p.Embedding, t.Preprocess)
	if err != nil {
		return "", err
	}
	og, err := o.Edit(nil)
	if err != nil {
		return "", err
	}
	fg, err := m.Edit(nil)
	if err != nil {
		return "", err
	}
	if err := og.AppendHead(o.Embedding, h.Layers(), "tcore_logits_original"); err != nil {
		return "", err
	}
	if err := fg.AppendHead(headInput(fg, m.Embedding), res.Head.Layers(), "tcore_logits_filtered"); err != nil {
		return "", err
	}
	if err := g.Compose(og, o.Embedding, "tcore_logits_original", fg, m.Embedding, "tcore_logits_filtered", "logits"); err != nil {
		return "", err
	}
	if err := asClassifier(og, "", nil, "logits"); err != nil {
		return "", err
	}
	b, err := og.Bytes()
	if err != nil {
		return "", err
	}
	return gated, arrowio.WriteFileAtomic(p.Export, b)
}

// neighbourLabels returns, for an original embedding, the labels of its k
// nearest rows of orig among rows (cosine).
func neighbourLabels(orig *feat.Table, rows []int, k int) (func([]float32) []int, error) {
	d := orig.Embedding.D
	x := make([]float32, 0, len(rows)*d)
	for _, i := range rows {
		x = append(x, orig.Embedding.X[i*d:(i+1)*d]...)
	}
	ix, err := knn.NewIndex(x, d)
	if err != nil {
		return nil, err
	}
	return func(e []float32) []int {
		nb, err := ix.Nearest(e, k)
		if err != nil {
			return nil // a probe row of another width: export checks the widths first
		}
		out := make([]int, len(nb))
		for j, r := range nb {
			out[j] = int(orig.Labels[rows[r]])
		}
		return out
	}, nil
}

// Classes is what ClassGate found: the original classifier's shares of
// the probe rows (most first), the neighbours' (nil without neighbours),
// the row count a class needed, how many qualifying classes the rule's
// Most left out, and how many the neighbours added.
type Classes struct {
	Head, Near []chanfilter.ClassShare
	MinRows    int
	Cut        int
	Widened    int
}

// ClassGate resolves a class gate's classes as the exported classifier
// uses them: every class the original classifier (predict) gives
// rule.Share of the probe rows (and two rows), at most rule.Most of them,
// and, with rule.Neighbours > 0, when the probe rows' nearest kept rows
// (orig's rows, by cosine) mostly carry another class than the
// classifier's first, every class with classMinShare of those labels too.
func ClassGate(g *chanfilter.Gate, predict func([]float32) int, orig *feat.Table, rows []int, rule ClassRule) (Classes, error) {
	var c Classes
	c.MinRows = max(2, int(math.Ceil(rule.Share*float64(len(g.Probe)))))
	c.Head = g.ResolveClasses(predict, c.MinRows)
	if rule.Most > 0 && len(g.Classes) > rule.Most {
		c.Cut = len(g.Classes) - rule.Most
		g.Classes = g.Classes[:rule.Most]
	}
	if rule.Neighbours <= 0 {
		return c, nil
	}
	if d := len(g.Probe[0]); d != orig.Embedding.D {
		return Classes{}, fmt.Errorf("the gate's probe rows have %d values, the original embeddings %d", d, orig.Embedding.D)
	}
	nl, err := neighbourLabels(orig, rows, rule.Neighbours)
	if err != nil {
		return Classes{}, err
	}
	c.Near = g.NeighbourShares(nl)
	// When the classifier and the neighbourhood disagree about where the
	// found trigger lands, the classifier is labelling a point off the
	// data: both count.
	before := len(g.Classes)
	g.AddClasses(c.Head, c.Near, classMinShare)
	c.Widened = len(g.Classes) - before
	return c, nil
}

// ClassRule is how a gate's classes are resolved (ClassGate): the share
// of the probe rows a class needs (and two rows), at most Most classes,
// most rows first (0: no limit), and the neighbours each probe row's
// labels widen the gate by (0: none).
type ClassRule struct {
	Share      float64
	Most       int
	Neighbours int
}

// ClassRule returns how g's classes are resolved: a class gate takes 5%
// of the probe rows and the neighbourhood (gate_neighbours), a move gate's
// class part class_part_share, at most class_part_classes classes, and no
// neighbourhood.
func (p Params) ClassRule(g *chanfilter.Gate) ClassRule {
	if g.Both {
		return ClassRule{Share: p.ClassPartShare, Most: p.ClassPartClasses}
	}
	return ClassRule{Share: classMinShare, Neighbours: p.GateNeighbours}
}

// classMinShare is the share of the probe rows' neighbour labels that puts
// a class in a gate the neighbourhood widens, and gate_class_share's
// default: a class left out takes fewer of the inputs carrying the found
// trigger than the attack success rate tcore aims to leave (5%).
const classMinShare = 0.05

// readProject reads the directions the filtered head leaves out from the
// encoder's metadata (nil: none, or no encoder); gs, when set, holds the
// encoder already loaded.
func readProject(p Params, gs *gateSetup) (*chanfilter.Project, error) {
	var g *onnxgraph.Model
	switch {
	case gs != nil:
		g = gs.m.Graph()
	case p.Encoder != "":
		var err error
		if g, err = onnxgraph.Load(p.Encoder); err != nil {
			return nil, plugin.BadInput(err)
		}
	default:
		return nil, nil
	}
	proj, err := chanfilter.ReadProject(g)
	if err != nil {
		return nil, plugin.BadInput(err)
	}
	return proj, nil
}

// projected is a copy of t (nil: nil) whose embedding proj has projected;
// the rest is shared with t.
func projected(t *feat.Table, proj *chanfilter.Project) *feat.Table {
	if t == nil {
		return nil
	}
	c := *t
	c.Embedding.X = slices.Clone(t.Embedding.X)
	proj.Apply(c.Embedding.X)
	return &c
}

// classifierEncoder loads an encoder to build a classifier on: it takes
// [0, 1] pixels, the normalisation the features were made with inside it
// (a filtered encoder has it already).
func classifierEncoder(path, embedding, preprocess string) (*encoder.Model, error) {
	m, err := encoder.Load(path, embedding)
	if err != nil {
		return nil, err
	}
	norm, err := encoder.ParseNorm(preprocess)
	if err == nil {
		err = m.Normalise(norm)
	}
	if err != nil {
		return nil, plugin.PortError("features", plugin.BadInput(err))
	}
	return m, nil
}

// asClassifier appends h (nil: none) to emb as output out and names the
// classifier's input "image", whatever the encoder's export called it
// ("input.1", "pixel_values"), unless that name is taken.
func asClassifier(g *onnxgraph.Model, emb string, h *mlp.Head, out string) error {
	if h != nil {
		if err := g.AppendHead(emb, h.Layers(), out); err != nil {
			return err
		}
	}
	if in, err := g.ImageInput(); err == nil && !g.HasTensor("image") {
		return g.RenameInput(in.Name, "image")
	}
	return nil
}

// vetoQuantile is the share of a class's trusted rows that the mask moves
// less than the veto's threshold for that class: the moved step's bar
// (about the 99th percentile of every trusted row's move), per class.
const vetoQuantile = 0.99

// RegionVeto sets g's veto for gate_veto "region": every class of g's
// class part vetoed at g's own move threshold, and the classes a vetoed
// input may not be given: the class part's and every class that holds
// classMinShare of the probe rows the original classifier moved out of
// their own class (shares, as ClassGate's Head).
func RegionVeto(g *chanfilter.Gate, shares []chanfilter.ClassShare) {
	vetoAtGate(g)
	g.VetoNever = append([]int(nil), g.Classes...)
	for _, sh := range shares {
		if sh.Share >= classMinShare && !slices.Contains(g.VetoNever, sh.Class) {
			g.VetoNever = append(g.VetoNever, sh.Class)
		}
	}
}

// vetoAtGate vetoes every class of g's class part at g's own move
// threshold.
func vetoAtGate(g *chanfilter.Gate) {
	g.VetoMoved = make([]float64, len(g.Classes))
	for i := range g.VetoMoved {
		g.VetoMoved[i] = g.Moved
	}
}

// UnsureVeto sets g's veto for gate_veto "unsure": every class of g's
// class part vetoed at g's own move threshold, where the filtered head
// gives it a probability under below; a vetoed input gets the filtered
// head's best class outside the class part.
func UnsureVeto(g *chanfilter.Gate, below float64) {
	vetoAtGate(g)
	g.VetoNever = nil
	g.VetoBelow = below
}

// VetoThresholds returns, for each class of g's class part, the vetoQuantile
// quantile of the moves (original against filtered embedding, matched by
// sample id) of the trusted rows of that class, and at least g's move
// threshold. A class without trusted rows gets g's threshold.
func VetoThresholds(t, orig *feat.Table, trusted []bool, g *chanfilter.Gate) ([]float64, error) {
	moves, err := movesByClass(t, orig, trusted, g, func(k int, _ []float32) int { return int(t.Labels[k]) })
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(g.Classes))
	for j, c := range g.Classes {
		out[j] = quantileAtLeast(moves[c], vetoQuantile, g.Moved, 1)
	}
	return out, nil
}

// classMoveMinRows is how many kept rows a class needs for a move
// threshold of its own (gate_class_quantile).
const classMoveMinRows = 20

// ClassMoveThresholds returns a move threshold for each of nc classes
// (gate_class_quantile): the q quantile of the moves of the kept rows
// (features t, marked in kept; original embeddings orig, matched by
// sample id) that predict, the original head, gives the class, and at
// least g's move threshold. A class given to fewer than classMoveMinRows
// kept rows gets g's threshold.
func ClassMoveThresholds(t, orig *feat.Table, kept []bool, g *chanfilter.Gate, predict func([]float32) int, nc int, q float64) ([]float64, error) {
	moves, err := movesByClass(t, orig, kept, g, func(_ int, oe []float32) int { return predict(oe) })
	if err != nil {
		return nil, err
	}
	out := make([]float64, nc)
	for c := range out {
		out[c] = quantileAtLeast(moves[c], q, g.Moved, classMoveMinRows)
	}
	return out, nil
}

// movesByClass returns the moves (g.Move: original against filtered
// embedding, matched by sample id) of the rows of t marked in on, by the
// class that class gives each (k: the row of t; its original embedding).
func movesByClass(t, orig *feat.Table, on []bool, g *chanfilter.Gate, class func(k int, origEmb []float32) int) (map[int][]float64, error) {
	row := rowOf(orig)
	d := t.Embedding.D
	if orig.Embedding.D != d {
		return nil, plugin.PortError("original", plugin.BadInputf("embedding of %d values, the features have %d", orig.Embedding.D, d))
	}
	moves := map[int][]float64{}
	for k, ok := range on {
		if !ok {
			continue
		}
		i, found := row[t.IDs[k]]
		if !found {
			return nil, plugin.PortError("original", plugin.BadInputf("no row for sample_id %d of the features", t.IDs[k]))
		}
		oe := orig.Embedding.X[i*d : (i+1)*d]
		c := class(k, oe)
		moves[c] = append(moves[c], g.Move(oe, t.Embedding.X[k*d:(k+1)*d]))
	}
	return moves, nil
}

// quantileAtLeast returns the q quantile of ms (sorted in place; the
// lower of the two nearest ranks), and at least floor; floor when ms has
// fewer than minRows values.
func quantileAtLeast(ms []float64, q, floor float64, minRows int) float64 {
	if len(ms) < max(1, minRows) {
		return floor
	}
	sort.Float64s(ms)
	return max(floor, ms[int(q*float64(len(ms)-1))])
}

// rowOf maps each sample id of t to its row.
func rowOf(t *feat.Table) map[uint64]int {
	row := make(map[uint64]int, t.N())
	for i, id := range t.IDs {
		row[id] = i
	}
	return row
}

// originalHead trains the gated classifier's second head: the final head's
// settings on a paired trainer (it trains beside the final head), on the
// original embeddings (orig, matched to t by sample id) of the rows marked
// in train. It returns the head, orig's rows of the kept rows (the class
// gate's neighbours) and how many rows it trained on.
func originalHead(ctx context.Context, p Params, t, orig *feat.Table, keptRows, train []bool) (*mlp.Head, []int, int, error) {
	row := rowOf(orig)
	var rows, fit []int
	for k := range keptRows {
		i, ok := row[t.IDs[k]]
		if !ok {
			return nil, nil, 0, plugin.PortError("original", plugin.BadInputf("no row for sample_id %d of the features", t.IDs[k]))
		}
		if orig.Labels[i] != t.Labels[k] {
			return nil, nil, 0, plugin.PortError("original", plugin.BadInputf("sample_id %d has label %d, the features say %d", t.IDs[k], orig.Labels[i], t.Labels[k]))
		}
		if keptRows[k] {
			rows = append(rows, i)
		}
		if train[k] {
			fit = append(fit, i)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, 0, err
	}
	nc, err := t.CheckClasses(p.Classes)
	if err != nil {
		return nil, nil, 0, err
	}
	sizes := p.Sizes(orig.Embedding.D, nc)
	tr, err := mlp.NewTrainer(sizes, p.finalConfig().Paired())
	if err != nil {
		return nil, nil, 0, err
	}
	defer tr.Close()
	h, _, err := tr.FitMean(p.FinalHeads, p.Seed+1000, orig.Embedding.X, orig.Labels, nil, fit)
	if err != nil {
		return nil, nil, 0, err
	}
	return h, rows, len(fit), nil
}

// NonSuspect marks every one of n rows that suspect (nil: none) does not
// mark.
func NonSuspect(suspect []bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = suspect == nil || !suspect[i]
	}
	return out
}

// Spread returns the kept rows together with the suspects of every class
// that crowded (Crowded) does not mark: the rows a mask moves in clean
// data spread over the classes and carry their own labels, while poison
// carries its target's label and crowds that class. kept is not changed.
func Spread(kept, suspect []bool, labels []int32, crowded []bool) []bool {
	out := append([]bool(nil), kept...)
	for i, s := range suspect {
		if s && !crowded[labels[i]] {
			out[i] = true
		}
	}
	return out
}
