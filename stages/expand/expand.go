// Package expand is T-Core's second stage: seed expansion with confusion
// training (docs/ALGORITHM.md, stage 2). Starting from the seeds, it grows a
// trusted set round by round: a benign head fitted on the trusted set
// admits the samples it fits best, unless a confusion head (fitted on all
// data while trusted samples get random labels) still predicts them as their
// own label: those carry a shortcut that confusion does not erase.
package expand

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"strconv"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Stage is the expand stage.
type Stage struct{}

// New returns the expand stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "expand",
		Version: "0.2.0",
		Inputs: []plugin.PortSpec{
			{Name: "features", Kind: arrowio.KindFeatures, Doc: "embeddings of the training set"},
			{Name: "seeds", Kind: arrowio.KindScores, Doc: "the seed column (sift.seed)"},
		},
		Outputs: []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "expand.trusted, expand.round, expand.loss_benign, expand.loss_confusion, expand.flagged"}},
		Params: plugin.ParamsOf(Params{SeedColumn: "sift.seed", SuspectColumn: "sift.suspect", TargetFraction: 0.3, Rounds: 3, PCT: 0.5, ConfusionEvery: 1,
			ConfusionWeight: 10, MaxSteps: 2000, HeadParams: mlp.DefaultHeadParams(20)}),
		NeedsAllRows: true,
	}
}

// Params are expand's parameters.
type Params struct {
	SeedColumn      string  `json:"seed_column" doc:"boolean column of the seeds input"`
	SuspectColumn   string  `json:"suspect_column" doc:"boolean column of the seeds input marking rows never to trust (sift.suspect); empty: none"`
	TargetFraction  float64 `json:"target_fraction" range:"(0,1]" doc:"trusted set size per class, as a fraction of the class"`
	Rounds          int     `json:"rounds" range:"[1,)" doc:"rounds; the per-class quota grows geometrically to the target"`
	PCT             float32 `json:"p_ct" range:"(0,1]" doc:"flag a sample the confusion head still predicts as its label with at least this probability"`
	ConfusionEvery  int     `json:"confusion_every" range:"[1,)" doc:"one confusion batch after every this many ordinary batches"`
	ConfusionWeight float32 `json:"confusion_weight" range:"[0,)" doc:"loss weight of confusion batches (docs/DECISIONS.md: why 10)"`
	Classes         int     `json:"classes" role:"classes" range:"[0,)" doc:"declared number of classes (0: max label + 1)"`
	MaxSteps        int     `json:"max_steps" range:"[0,)" doc:"at most this many ordinary batches per head, whatever the rows (0: epochs alone decide)"`
	mlp.HeadParams
}

// Check implements plugin.Checker: it validates the parameters.
func (p Params) Check() error { return p.HeadParams.Check() }

// Result is expand's verdict, in table row order.
type Result struct {
	Trusted              []bool
	Round                []int32
	LossBenign, LossConf []float32
	Flagged              []bool
	Suspect              []bool // sift's suspects, never trusted
	Metrics              plugin.Metrics
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
	cols := []string{p.SeedColumn}
	if p.SuspectColumn != "" {
		cols = append(cols, p.SuspectColumn)
	}
	sc, err := feat.OpenScores(in, "seeds", t, cols...)
	if err != nil {
		return nil, err
	}
	seeds, suspect := sc[p.SeedColumn].B, sc[p.SuspectColumn].B
	if seeds == nil || (p.SuspectColumn != "" && suspect == nil) {
		return nil, plugin.PortError("seeds", plugin.BadInputf("columns %v must be boolean", cols))
	}
	res, err := Expand(ctx, t, seeds, suspect, p, progress)
	if err != nil {
		return nil, err
	}
	return res.Metrics, feat.WriteScores(out, "scores", t.IDs, []feat.Column{
		{Name: "expand.trusted", B: res.Trusted}, {Name: "expand.round", I: res.Round},
		{Name: "expand.loss_benign", F: res.LossBenign}, {Name: "expand.loss_confusion", F: res.LossConf},
		{Name: "expand.flagged", B: res.Flagged}, {Name: "expand.suspect", B: res.Suspect},
	})
}

// Expand grows the seeds into the trusted set; rows marked in suspect (nil:
// none) are never trusted and are passed on as expand.suspect.
func Expand(ctx context.Context, t *feat.Table, seeds, suspect []bool, p Params, progress plugin.Progress) (*Result, error) {
	nc, err := t.CheckClasses(p.Classes)
	if err != nil {
		return nil, err
	}
	n, d := t.N(), t.Embedding.D
	x := t.Embedding.X
	y := t.Labels
	res := &Result{Trusted: make([]bool, n), Round: make([]int32, n), LossBenign: make([]float32, n),
		LossConf: make([]float32, n), Flagged: make([]bool, n), Suspect: make([]bool, n)}
	if suspect != nil {
		copy(res.Suspect, suspect)
	}
	for i := range res.Round {
		res.Round[i] = -1
		if seeds[i] && !res.Suspect[i] {
			res.Trusted[i] = true
			res.Round[i] = 0
		}
	}
	size, start := feat.CountPer(nil, y, nc), feat.CountPer(res.Trusted, y, nc)
	var warnings []string
	for c := 0; c < nc; c++ {
		if size[c] > 0 && start[c] == 0 {
			warnings = append(warnings, "class "+strconv.Itoa(c)+" has no seeds: nothing of it can be trusted")
		}
	}
	sizes := p.Sizes(d, nc)
	cfg := p.Config()
	cfg.MaxSteps = p.MaxSteps
	// Each round's two heads train side by side (mlp.Together).
	tr, err := mlp.NewTrainer(sizes, cfg.Paired())
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	admitted := []int{}
	flaggedPerRound := []int{}
	for r := 1; r <= p.Rounds; r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var trusted []int
		for i, ok := range res.Trusted {
			if ok {
				trusted = append(trusted, i)
			}
		}
		// The benign head (trusted rows) and the confusion head (every
		// row) do not depend on each other: they train side by side.
		fs := mlp.NewHead(sizes, p.Seed+uint64(2*r))
		fct := mlp.NewHead(sizes, p.Seed+uint64(2*r+1))
		var sb, sc *mlp.Scores
		err := mlp.Together(func() (err error) {
			sb, err = tr.FitScore(fs, x, y, trusted, nil)
			return err
		}, func() (err error) {
			sc, err = tr.FitScore(fct, x, y, all, &mlp.Confusion{Rows: trusted, Every: p.ConfusionEvery, Weight: p.ConfusionWeight})
			return err
		})
		if err != nil {
			return nil, err
		}
		flagged := 0
		cands := make([][]int, nc)
		for i := 0; i < n; i++ {
			res.LossBenign[i], res.LossConf[i] = sb.Loss[i], sc.Loss[i]
			res.Flagged[i] = sc.PY[i] >= p.PCT
			if res.Flagged[i] {
				flagged++
			}
			if !res.Trusted[i] && !res.Flagged[i] && !res.Suspect[i] && sb.Pred[i] == y[i] {
				cands[y[i]] = append(cands[y[i]], i)
			}
		}
		flaggedPerRound = append(flaggedPerRound, flagged)
		added := 0
		for c := 0; c < nc; c++ {
			if start[c] == 0 {
				continue
			}
			target := p.TargetFraction * float64(size[c])
			quota := int(math.Round(float64(start[c]) * math.Pow(target/float64(start[c]), float64(r)/float64(p.Rounds))))
			have := 0
			for i, ok := range res.Trusted {
				if ok && y[i] == int32(c) {
					have++
				}
			}
			cs := cands[c]
			sort.Slice(cs, func(a, b int) bool {
				if res.LossBenign[cs[a]] != res.LossBenign[cs[b]] {
					return res.LossBenign[cs[a]] < res.LossBenign[cs[b]]
				}
				return t.IDs[cs[a]] < t.IDs[cs[b]]
			})
			for _, i := range cs[:max(0, min(len(cs), quota-have))] {
				res.Trusted[i] = true
				res.Round[i] = int32(r)
				added++
			}
		}
		admitted = append(admitted, added)
		if progress != nil {
			progress.Report(plugin.Event{Done: int64(r), Total: int64(p.Rounds), Unit: "rounds"})
		}
	}
	perClass := map[string]int{}
	for i, ok := range res.Trusted {
		if ok {
			perClass[strconv.Itoa(int(y[i]))]++
		}
	}
	res.Metrics = plugin.Metrics{"rows": n, "classes": nc, "seeds": stat.Count(seeds), "trusted": stat.Count(res.Trusted),
		"trusted_per_class": perClass, "admitted_per_round": admitted, "flagged_per_round": flaggedPerRound,
		"p_ct": p.PCT, "target_fraction": p.TargetFraction, "warnings": warnings}
	return res, nil
}
