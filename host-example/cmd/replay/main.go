// Command replay reruns T-Core's data stages (sift, expand, bootstrap) in
// process on a finished run folder's features, once per variant of their
// parameters, and scores each variant's final head on the test set's
// embeddings: ACC, ASR (with an eval spec) and the purity of the seed,
// trusted and kept sets (with ground truth). It is how the data stages'
// defaults are tuned (docs/DECISIONS.md): seconds per variant instead of a
// whole run, on the same embeddings.
//
//	replay --run DIR --encoder E.onnx --test TEST [--eval SPEC] [--truth TRUTH] \
//	       --variant 'name={"bootstrap": {"tau": 0.8}}' [--variant ...]
//
// The filter runs again (in process) when a variant sets filter parameters
// or --filter is given; its filtered encoder then embeds the test set.
// Otherwise, when the run's filter masked channels, bootstrap gets that
// filter's features, suspects and augment rows, and the test set is
// embedded by the run's filtered encoder.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/expand"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/knn"
	"github.com/tcore-dev/tcore/stages/kit/mlp"
	"github.com/tcore-dev/tcore/stages/kit/ort"
	"github.com/tcore-dev/tcore/stages/kit/stat"
	"github.com/tcore-dev/tcore/stages/sift"
)

type variants []string

func (v *variants) String() string     { return strings.Join(*v, " ") }
func (v *variants) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	dir := fs.String("run", "", "a finished run folder (T-Core pipeline)")
	enc := fs.String("encoder", "", "the run's encoder")
	test := fs.String("test", "", "clean test set")
	specPath := fs.String("eval", "", "eval spec (ASR)")
	truthPath := fs.String("truth", "", "ground truth of the training set")
	refilter := fs.Bool("filter", false, "rerun the filter for every variant")
	dump := fs.String("dump", "", "write per-row scores of the first variant (CSV) to this file")
	classKeep := fs.String("class-keep", "", "comma-separated probabilities q: for a run whose filtered encoder carries a class gate, measure the gated classifier (classes resolved as bootstrap does) when an input of a gated class keeps the original classifier's class where the filtered path still gives that class at least q")
	gate := fs.Bool("gate", false, "with --moved-z values: also measure a gated classifier (test inputs the mask moved far, or near where the far-moved rows came from, go through the filtered encoder and the bootstrap head; the rest through the original encoder and a head trained on the same kept rows)")
	probe := fs.Bool("probe-check", false, "only print, for a run whose scan found a noise blend, where the original encoder sends test images carrying the real trigger and the found noise at several alphas (a head on every training row; the nearest training rows' labels)")
	gateList := fs.String("gate-classes", "", "only print, for these finished run folders (comma-separated) with a class gate, the classes bootstrap gave it and the labels of its probe rows' nearest kept rows, and whether --target is among them")
	target := fs.Int("target", -1, "with --gate-classes: the attack's target class")
	probeSeed := fs.Uint64("probe-seed", 1, "with --probe-check: the run's seed (the gate's head is trained with it + 1000)")
	veto := fs.Bool("veto-check", false, "only print, for a run with a gated classifier, its clean accuracy and attack success on test images with and without a veto: inputs sent through the filtered encoder, moved past a threshold and labelled with a gate class by the filtered head get its best other class")
	fs.Float64Var(&whitenShrink, "whiten-shrink", whitenShrink, "with --gate-check: the share of the mean variance added to every direction of the trusted rows' move covariance for the whitened sweep")
	residual := fs.Bool("residual-check", false, "only print, for a run with a gated classifier, its clean accuracy and attack success when the found patterns' mean moves (measured on --train's images) are taken out of the filtered embedding before the filtered head")
	trainSet := fs.String("train", "", "with --residual-check: the run's training images")
	check := fs.Bool("gate-check", false, "only print the share of test images (clean, with the real trigger, with each pattern the filter found) the gate (moved_z 2.5 and the far movers' origin) sends through the filtered encoder")
	movedList := fs.String("moved-z", "", "comma-separated values: with the run's filter outputs, also exclude the rows the filter's mask moved this many robust sds above the trusted rows' median (filter's moved_z), one bootstrap per value (-1: the run's suspects only; a value ending in \"from\" also excludes the rows near where the far-moved rows came from, filter.MovedFrom)")
	scanList := fs.String("scan", "", "only scan these encoders (comma-separated) with each variant's filter parameters, on the run's trusted rows")
	judge := fs.String("judge", "", "with --scan: a JSON array of filter patterns (kind, size, row, col, colors in [0,1], alpha, noise_seed) to judge as the scan judges its candidates (z against the random candidates), e.g. the real trigger")
	blurList := fs.String("blur-check", "", "only print, for these comma-separated blur sigmas (input pixels), how the training rows' 10-neighbour label agreement changes when the encoder blurs its input (with --truth: poisoned against clean rows); --dump names a CSV for the per-row values")
	rawX := fs.String("raw", "", "only write the run's embeddings to this file: float32 little-endian, n rows of d, after an int32 header n, d")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole command to this file")
	splitOnly := fs.Bool("split", false, "only run the filter's class split (split_z) on the run's training images with each variant's filter parameters, and count the carriers it finds among poisoned and clean rows (with --truth)")
	carriersFirst := fs.Bool("carriers-first", false, "treat the run's filter suspects (the class split's carriers on a clean encoder) as sift's suspects: never seeds, never trusted")
	noAug := fs.Bool("no-augment", false, "leave out the filter's augment rows from the final head")
	oracle := fs.Bool("oracle", false, "with --truth: also train the final head (bootstrap's epochs, steps and seed) on every row, on every clean row, and on the kept rows alone, and count the clean rows left out per class; then, with three head seeds each, heads on the kept rows and the left-out rows each rule lets join (relabel rules, agreeing non-suspects), scored by each variant's own final head: give a variant {\"bootstrap\":{\"relabel\":0}} to judge the rules from the head before any relabelling")
	var vs variants
	fs.Var(&vs, "variant", "name=JSON of per-stage parameter overrides ({\"sift\": {...}, \"expand\": {...}, \"bootstrap\": {...}}); repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(vs) == 0 {
		vs = variants{"defaults={}"}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	movedZs := []movedRule{{z: -1}}
	if *movedList != "" {
		movedZs = nil
		for _, f := range strings.Split(*movedList, ",") {
			num, from := strings.CutSuffix(f, "from")
			z, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return fmt.Errorf("--moved-z: %v", err)
			}
			movedZs = append(movedZs, movedRule{z, from})
		}
	}
	ctx := context.Background()
	if *gateList != "" {
		return gateClasses(stdout, strings.Split(*gateList, ","), *target)
	}
	if *scanList != "" {
		var pats []filter.Pattern
		if *judge != "" {
			if err := json.Unmarshal([]byte(*judge), &pats); err != nil {
				return fmt.Errorf("--judge: %w", err)
			}
		}
		return scanOnly(ctx, *dir, strings.Split(*scanList, ","), vs, pats, stdout)
	}
	if *dir == "" || *enc == "" || *test == "" {
		return errors.New("--run, --encoder and --test are required")
	}
	t, err := readFeatures(filepath.Join(*dir, "nodes", "embed", "features.arrow"))
	if err != nil {
		return err
	}
	if *rawX != "" {
		if err := writeRaw(*rawX, t); err != nil {
			return err
		}
		return writePixels(ctx, *rawX+".px", *dir, *enc, t)
	}
	// What bootstrap sees: the filter's outputs when it masked.
	bt, testEnc := t, *enc
	var exclude []bool
	var aug *feat.Table
	if fe := filepath.Join(*dir, "nodes", "filter", "features.arrow"); fileExists(fe) && fileExists(filepath.Join(*dir, "filtered_encoder.onnx")) {
		if bt, err = readFeatures(fe); err != nil {
			return err
		}
		testEnc = filepath.Join(*dir, "filtered_encoder.onnx")
		if aug, err = readFeatures(filepath.Join(*dir, "nodes", "filter", "augment.arrow")); err != nil {
			return err
		}
		if *noAug {
			aug = nil
		}
		sc, err := readScores(filepath.Join(*dir, "nodes", "filter", "scores.arrow"), bt, "filter.suspect")
		if err != nil {
			return err
		}
		exclude = sc["filter.suspect"].B
	}
	var spec *attack.Spec
	if *specPath != "" {
		s, err := attack.ReadSpec(*specPath)
		if err != nil {
			return err
		}
		spec = &s
	}
	if *probe {
		return probeCheck(ctx, stdout, *dir, *enc, *test, spec, *probeSeed)
	}
	if *residual {
		return residualCheck(ctx, stdout, *dir, *enc, *test, *trainSet, spec)
	}
	if *check {
		return gateCheck(ctx, stdout, *dir, *enc, *test, spec)
	}
	if *veto {
		return vetoCheck(ctx, stdout, *dir, *enc, *test, spec)
	}
	clean, trig, err := testEmbeddings(ctx, testEnc, *test, spec, filepath.Dir(*dir))
	if err != nil {
		return err
	}
	var poison map[uint64]bool
	if *truthPath != "" {
		if poison, err = readTruth(*truthPath); err != nil {
			return err
		}
	}
	if *splitOnly {
		return splitCheck(ctx, stdout, *dir, *enc, t, poison, vs)
	}
	if *blurList != "" {
		sigmas, err := floats("blur-check", *blurList)
		if err != nil {
			return err
		}
		return blurCheck(ctx, stdout, *dir, *enc, t, poison, sigmas, *dump)
	}
	var images *plugin.Tables
	loadImages := func() error {
		if images != nil {
			return nil
		}
		r, err := arrowio.OpenDataset(ctx, filepath.Join(*dir, "nodes", "train", "table.arrow"), arrowio.ReadOptions{})
		if err != nil {
			return err
		}
		defer r.Release()
		h, err := arrowio.Hold(r)
		if err != nil {
			return err
		}
		images = plugin.NewTables()
		images.Put("images", h.Schema, h.Records...)
		h.Release()
		return nil
	}
	fmt.Fprintf(stdout, "%-24s %7s %7s %14s %14s %14s %6s %6s\n", "variant", "ACC", "ASR", "seeds", "trusted", "kept", "scan z", "masked")
	siftMemo, expandMemo := map[string]*sift.Result{}, map[string]*expand.Result{}
	for _, v := range vs {
		name, raw, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("--variant %q: want name=JSON", v)
		}
		var over map[string]json.RawMessage
		if err := json.Unmarshal([]byte(raw), &over); err != nil {
			return fmt.Errorf("--variant %s: %v", name, err)
		}
		var sp sift.Params
		if err := plugin.DecodeParams(sift.New().Spec(), over["sift"], &sp); err != nil {
			return err
		}
		var ep expand.Params
		if err := plugin.DecodeParams(expand.New().Spec(), over["expand"], &ep); err != nil {
			return err
		}
		var bp bootstrap.Params
		if err := plugin.DecodeParams(bootstrap.New().Spec(), over["bootstrap"], &bp); err != nil {
			return err
		}
		// Variants that share sift's and expand's parameters share
		// their results: both are deterministic in them.
		sk, _ := json.Marshal(sp)
		ek, _ := json.Marshal(ep)
		sr := siftMemo[string(sk)]
		if sr == nil {
			if sr, err = sift.Sift(ctx, t, sp, nil); err != nil {
				return err
			}
			siftMemo[string(sk)] = sr
		}
		var suspect []bool
		if ep.SuspectColumn != "" {
			suspect = sr.Suspect
		}
		if *carriersFirst && exclude != nil {
			// The run's filter suspects join sift's: the seeds are
			// drawn again without them, and expand never trusts them.
			suspect = bootstrap.Excluded(sr.Suspect, exclude)
			sift.DrawSeeds(t, sr, suspect, sp)
		}
		er := expandMemo[string(sk)+string(ek)]
		if er == nil {
			if er, err = expand.Expand(ctx, t, sr.Seed, suspect, ep, nil); err != nil {
				return err
			}
			expandMemo[string(sk)+string(ek)] = er
		}
		vbt, vexclude, vaug, vclean, vtrig := bt, exclude, aug, clean, trig
		scanZ, masked := "—", "—"
		if _, ok := over["filter"]; ok || *refilter {
			if err := loadImages(); err != nil {
				return err
			}
			fo, err := runFilter(ctx, *enc, images, t, er.Trusted, er.Suspect, over["filter"], filepath.Join(filepath.Dir(*dir), "replay-filtered-"+name+".onnx"))
			if err != nil {
				return err
			}
			scanZ, masked = fmt.Sprintf("%.1f", fo.scanZ), fmt.Sprint(fo.masked)
			vbt, vexclude, vaug = fo.features, fo.suspect, fo.augment
			if fo.masked > 0 {
				if vclean, vtrig, err = testEmbeddings(ctx, fo.encoder, *test, spec, filepath.Dir(*dir)); err != nil {
					return err
				}
			} else {
				// Nothing masked: the filter passes the features on
				// unchanged, and its augment rows still go to bootstrap
				// (planted_mask "skip" undoes a planted trojan with them).
				vbt = t
			}
		}
		for _, mz := range movedZs {
			vname, vexclude := name, vexclude
			var g *chanfilter.Gate
			if mz.z >= 0 && vbt != t {
				vname = fmt.Sprintf("%s/moved_z=%g", name, mz.z)
				if mz.from {
					vname += "+from"
				}
				if vexclude, g, err = movedExclude(t, vbt, er.Trusted, vexclude, mz); err != nil {
					return err
				}
			}
			var never []bool
			if bp.ExcludeColumn != "" {
				never = er.Suspect
			}
			bstart := time.Now()
			br, err := bootstrap.Bootstrap(ctx, vbt, er.Trusted, bootstrap.Excluded(vexclude, never), vaug, bp, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s: bootstrap %.1f s, admitted per round %v, relabelled %v\n", name, time.Since(bstart).Seconds(), br.Metrics["admitted_per_round"], br.Metrics["relabelled"])
			if *dump != "" {
				if err := dumpRows(*dump, t, sr, er, br, poison, bp, er.Trusted); err != nil {
					return err
				}
				*dump = ""
			}
			clean, trig := vclean, vtrig
			acc, err := accuracy(br.Head, clean, -1)
			if err != nil {
				return err
			}
			// The table rounds to one decimal; stderr carries two, enough to
			// tell which side of a bar a run falls.
			asr, asrFine := "—", "—"
			if trig != nil {
				a, err := accuracy(br.Head, trig, int32(spec.Target))
				if err != nil {
					return err
				}
				asr, asrFine = fmt.Sprintf("%.1f%%", 100*a), fmt.Sprintf("%.2f%%", 100*a)
			}
			fmt.Fprintf(os.Stderr, "%s: ACC %.2f%%, ASR %s\n", name, 100*acc, asrFine)
			fmt.Fprintf(stdout, "%-24s %6.1f%% %7s %14s %14s %14s %6s %6s\n", vname, 100*acc, asr,
				purity(t.IDs, sr.Seed, poison), purity(t.IDs, er.Trusted, poison), purity(vbt.IDs, br.Kept, poison), scanZ, masked)
			if *oracle {
				if err := oracleHeads(stdout, vbt, vaug, br, bootstrap.Excluded(vexclude, never), bp, poison, clean, trig, spec); err != nil {
					return err
				}
			}
			if *classKeep != "" && trig != nil {
				qs, err := floats("class-keep", *classKeep)
				if err != nil {
					return err
				}
				if err := classKeepCheck(ctx, stdout, vname, *dir, *enc, *test, spec, t, vbt, br, bp, [2]*feat.Table{clean, trig}, qs); err != nil {
					return err
				}
			}
			if *gate && g != nil && trig != nil {
				oclean, otrig, err := testEmbeddings(ctx, *enc, *test, spec, filepath.Dir(*dir))
				if err != nil {
					return err
				}
				if err := gated(stdout, vname, t, vbt, br, bp, g, [2]*feat.Table{oclean, otrig}, [2]*feat.Table{clean, trig}, int32(spec.Target)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// scanOnly scans each encoder with each variant's filter parameters on the
// run's images and trusted rows (the run's own encoder's features give the
// layer names; the scan itself needs only the images).
func scanOnly(ctx context.Context, dir string, encs []string, vs variants, judge []filter.Pattern, stdout io.Writer) error {
	t, err := readFeatures(filepath.Join(dir, "nodes", "embed", "features.arrow"))
	if err != nil {
		return err
	}
	tr, err := readScores(filepath.Join(dir, "nodes", "expand", "scores.arrow"), t, "expand.trusted")
	if err != nil {
		return err
	}
	r, err := arrowio.OpenDataset(ctx, filepath.Join(dir, "nodes", "train", "table.arrow"), arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	held, err := arrowio.Hold(r)
	r.Release()
	if err != nil {
		return err
	}
	defer held.Release()
	fmt.Fprintf(stdout, "%-40s %-22s %7s %8s %8s  %s\n", "encoder", "variant", "z", "collapse", "seconds", "pattern")
	for _, enc := range encs {
		m, err := encoder.Load(enc, "")
		if err != nil {
			return err
		}
		ins := &chanfilter.Inputs{Table: t, Images: held, Trusted: tr["expand.trusted"].B, Model: m}
		for _, v := range vs {
			name, raw, _ := strings.Cut(v, "=")
			var over map[string]json.RawMessage
			if err := json.Unmarshal([]byte(raw), &over); err != nil {
				return err
			}
			fp := over["filter"]
			if len(fp) == 0 {
				fp = json.RawMessage(`{}`)
			}
			var pm map[string]json.RawMessage
			json.Unmarshal(fp, &pm)
			pm["encoder"], _ = json.Marshal(enc)
			fp, _ = json.Marshal(pm)
			var p filter.Params
			if err := filter.DecodeParams(fp, &p); err != nil {
				return err
			}
			sc, zs, err := filter.ScanEncoder(ctx, p, ins, nil, judge...)
			if err != nil {
				return err
			}
			pat, _ := json.Marshal(sc.Pattern)
			fmt.Fprintf(stdout, "%-40s %-22s %7.1f %8.3f %8.1f  %s blend median %.3f smooth median %.3f\n", filepath.Base(enc), name, sc.BestZ, sc.BestCollapse, sc.Seconds, pat, sc.RandomMedian["blend"], sc.RandomMedian["smooth"])
			fmt.Fprintf(stdout, "  called %v, z %.9g, collapse %.9g, call collapse %.9g, planted z %.9g\n", sc.Backdoored, sc.BestZ, sc.BestCollapse, sc.CallCollapse, sc.PlantedZ)
			if sc.Looked > 0 {
				fmt.Fprintf(stdout, "  looks: %d judged, climbed to z %.1f (from %q: %v)\n", sc.Looked, sc.LookZ, sc.LookFrom, sc.FromLook)
			}
			if sc.Placed > 0 {
				fmt.Fprintf(stdout, "  place: %d screened, best z %.1f (from %q: %v)\n", sc.Placed, sc.PlaceZ, sc.PlaceFrom, sc.FromPlace)
			}
			for i, jp := range judge {
				fmt.Fprintf(stdout, "  judged %-36s z %7.1f\n", jp.String(), zs[i])
			}
		}
	}
	return nil
}

// dumpRows writes one CSV line per row: its id, label, ground truth,
// sift's scores, expand's decision and losses, bootstrap's decision, and
// the losses of two heads trained on halves of the trusted core (held out
// for trusted rows).
func dumpRows(path string, t *feat.Table, sr *sift.Result, er *expand.Result, br *bootstrap.Result, poison map[uint64]bool, bp bootstrap.Params, trusted []bool) error {
	nc, _ := t.Classes()
	tr, err := mlp.NewTrainer(bp.Sizes(t.Embedding.D, nc), bp.Config())
	if err != nil {
		return err
	}
	defer tr.Close()
	ho, _, err := bootstrap.HeldOut(tr, bp.Sizes(t.Embedding.D, nc), 7, t.Embedding.X, t.Labels, trusted, nc, [2]*mlp.Head{})
	if err != nil {
		return err
	}
	// each row's 10 nearest trusted rows (itself left out): the share
	// carrying its label
	var core []int
	var cx []float32
	d := t.Embedding.D
	for i, k := range trusted {
		if k {
			core = append(core, i)
			cx = append(cx, t.Embedding.X[i*d:(i+1)*d]...)
		}
	}
	ix, err := knn.NewIndex(cx, d)
	if err != nil {
		return err
	}
	agree := make([]float64, len(t.IDs))
	for i := range t.IDs {
		nb, err := ix.Nearest(t.Embedding.X[i*d:(i+1)*d], 11)
		if err != nil {
			return err
		}
		m, same := 0, 0
		for _, j := range nb {
			if core[j] == i || m == 10 {
				continue
			}
			m++
			if t.Labels[core[j]] == t.Labels[i] {
				same++
			}
		}
		agree[i] = float64(same) / float64(max(m, 1))
	}
	// each row's best class other than its label (held-out heads), and the
	// most common other label among its 10 nearest trusted rows (-1: none)
	other := make([]int, len(t.IDs))
	knnOther := make([]int, len(t.IDs))
	for i := range t.IDs {
		best := -1
		for c := 0; c < nc; c++ {
			if int32(c) != t.Labels[i] && (best < 0 || ho.Prob[i*nc+c] > ho.Prob[i*nc+best]) {
				best = c
			}
		}
		other[i] = best
		nb, err := ix.Nearest(t.Embedding.X[i*d:(i+1)*d], 11)
		if err != nil {
			return err
		}
		cnt := map[int32]int{}
		knnOther[i] = -1
		for _, j := range nb {
			if l := t.Labels[core[j]]; core[j] != i && l != t.Labels[i] {
				cnt[l]++
				if knnOther[i] < 0 || cnt[l] > cnt[int32(knnOther[i])] || (cnt[l] == cnt[int32(knnOther[i])] && int(l) < knnOther[i]) {
					knnOther[i] = int(l)
				}
			}
		}
	}
	var b strings.Builder
	b.WriteString("id,label,poison,gain,min,agreeL,seed,trusted,flagged,loss_benign,loss_conf,kept,core_loss,core_py,core_pred,core_pmax,knn_agree,core_other,knn_other")
	for l := range sr.Agree {
		fmt.Fprintf(&b, ",a%d", l)
	}
	b.WriteString("\n")
	b2i := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	last := len(sr.Agree) - 1
	for i, id := range t.IDs {
		fmt.Fprintf(&b, "%d,%d,%d,%.4f,%.4f,%.4f,%d,%d,%d,%.4f,%.4f,%d,%.4f,%.4f,%d,%.4f,%.2f,%d,%d", id, t.Labels[i], b2i(poison[id]), sr.Gain[i], sr.Min[i], sr.Agree[last][i],
			b2i(sr.Seed[i]), b2i(er.Trusted[i]), b2i(er.Flagged[i]), er.LossBenign[i], er.LossConf[i], b2i(br.Kept[i]), ho.Loss[i], ho.PY[i], ho.Pred[i], ho.Prob[i*nc+int(ho.Pred[i])], agree[i], other[i], knnOther[i])
		for l := range sr.Agree {
			fmt.Fprintf(&b, ",%.2f", sr.Agree[l][i])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// filtered is what the filter gave bootstrap.
type filtered struct {
	features, augment *feat.Table
	suspect           []bool
	encoder           string
	scanZ             float64
	masked            int
}

// runFilter runs the filter stage in process on the run's images and
// features with the variant's trusted rows and parameters, exporting the
// filtered encoder to export.
func runFilter(ctx context.Context, enc string, images *plugin.Tables, t *feat.Table, trusted, suspect []bool, over json.RawMessage, export string) (*filtered, error) {
	in := plugin.NewTables()
	defer in.Release()
	tb := images.Get("images")
	in.Put("images", tb.Schema, tb.Records...)
	layers := make([]arrowio.Layer, len(t.Layers))
	for i, l := range t.Layers {
		layers[i] = arrowio.Layer{Name: l.Name, Channels: l.D}
	}
	cols := [][]float32{t.Embedding.X}
	for _, l := range t.Layers {
		cols = append(cols, l.X)
	}
	schema := arrowio.FeaturesSchema(t.Embedding.D, layers)
	fr := arrowio.NewFeaturesRecord(schema, t.IDs, t.Labels, cols)
	in.Put("features", schema, fr)
	fr.Release()
	if suspect == nil {
		suspect = make([]bool, len(trusted))
	}
	sr, err := feat.ScoresRecord(t.IDs, []feat.Column{{Name: "expand.trusted", B: trusted}, {Name: "expand.suspect", B: suspect}})
	if err != nil {
		return nil, err
	}
	in.Put("trusted", sr.Schema(), sr)
	sr.Release()
	params := map[string]json.RawMessage{}
	if len(over) > 0 {
		if err := json.Unmarshal(over, &params); err != nil {
			return nil, err
		}
	}
	params["encoder"], _ = json.Marshal(enc)
	params["export"], _ = json.Marshal(export)
	raw, _ := json.Marshal(params)
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(filter.New()).Run(ctx, raw, in, out, nil)
	if err != nil {
		return nil, err
	}
	var res filter.Result
	b, _ := json.Marshal(m)
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	fo := &filtered{encoder: export, scanZ: res.Scan.BestZ, masked: res.ChannelsMasked}
	if res.DataTrigger != nil {
		b, _ := json.Marshal(res.DataTrigger)
		fmt.Fprintf(os.Stderr, "data trigger: %s\n", b)
	}
	if fo.features, err = feat.Open(out, "features"); err != nil {
		return nil, err
	}
	if fo.augment, err = feat.Open(out, "augment"); err != nil {
		return nil, err
	}
	sc, err := feat.OpenScores(out, "scores", fo.features, "filter.suspect")
	if err != nil {
		return nil, err
	}
	fo.suspect = sc["filter.suspect"].B
	return fo, nil
}

// purity is "poisoned/rows" of a selected set ("?/rows" without truth).
func purity(ids []uint64, sel []bool, poison map[uint64]bool) string {
	n, p := 0, 0
	for i, s := range sel {
		if s {
			n++
			if poison[ids[i]] {
				p++
			}
		}
	}
	if poison == nil {
		return fmt.Sprintf("?/%d", n)
	}
	return fmt.Sprintf("%d/%d", p, n)
}

// accuracy is the share of rows the head labels as their label (target <
// 0) or as target.
func accuracy(h *mlp.Head, t *feat.Table, target int32) (float64, error) {
	tr, err := mlp.NewTrainer(h.Sizes, mlp.DefaultConfig(1))
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	sc, err := tr.Score(h, t.Embedding.X, t.Labels)
	if err != nil {
		return 0, err
	}
	ok := 0
	for i, p := range sc.Pred {
		want := t.Labels[i]
		if target >= 0 {
			want = target
		}
		if p == want {
			ok++
		}
	}
	return float64(ok) / float64(max(1, len(sc.Pred))), nil
}

// embedAll embeds src's images under m and hands the features to use.
func embedAll(ctx context.Context, m *encoder.Model, src array.RecordReader, use func(array.RecordReader) error) error {
	s, err := m.Session(encoder.Config{ORT: ort.Options{}})
	if err != nil {
		return err
	}
	defer s.Close()
	tabs := plugin.NewTables()
	defer tabs.Release()
	w, err := tabs.Create("f", s.FeaturesSchema())
	if err != nil {
		return err
	}
	if _, err := s.Stream(ctx, src, w, m.Preprocess(), 256, plugin.ProgressFunc(func(plugin.Event) {})); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	got := tabs.Get("f")
	rr, err := array.NewRecordReader(got.Schema, got.Records)
	if err != nil {
		return err
	}
	defer rr.Release()
	return use(rr)
}

// testEmbeddings embeds the test set, and its non-target images with the
// trigger (spec nil: none), under the encoder; cached in cache by content.
func testEmbeddings(ctx context.Context, enc, test string, spec *attack.Spec, cache string) (*feat.Table, *feat.Table, error) {
	key := func(parts ...string) string {
		h := sha256.New()
		for _, p := range parts {
			if b, err := os.ReadFile(p); err == nil {
				h.Write(b)
			} else {
				h.Write([]byte(p))
			}
		}
		return hex.EncodeToString(h.Sum(nil))[:16]
	}
	m, err := encoder.Load(enc, "")
	if err != nil {
		return nil, nil, err
	}
	embedTo := func(path string, trig *attack.Spec) (*feat.Table, error) {
		if !fileExists(path) {
			r, err := arrowio.OpenDataset(ctx, test, arrowio.ReadOptions{})
			if err != nil {
				return nil, err
			}
			defer r.Release()
			var src array.RecordReader = r
			if trig != nil {
				if src, err = triggered(r, trig); err != nil {
					return nil, err
				}
				defer src.Release()
			}
			if err := embedAll(ctx, m, src, func(rr array.RecordReader) error {
				_, err := arrowio.WriteIPCFile(path, rr)
				return err
			}); err != nil {
				return nil, err
			}
		}
		return readFeatures(path)
	}
	clean, err := embedTo(filepath.Join(cache, "replay-"+key(enc, test)+".arrow"), nil)
	if err != nil || spec == nil {
		return clean, nil, err
	}
	sb, _ := json.Marshal(spec)
	trig, err := embedTo(filepath.Join(cache, "replay-"+key(enc, test, string(sb))+".arrow"), spec)
	return clean, trig, err
}

// triggered reads the test set's non-target images with the trigger
// applied (labels kept; accuracy against the target is the ASR).
func triggered(r array.RecordReader, spec *attack.Spec) (array.RecordReader, error) {
	return mapImages(r, -1, func(l int32) bool { return int(l) != spec.Target }, spec.Trigger.ApplyBytes)
}

func readFeatures(path string) (*feat.Table, error) {
	r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Release()
	return feat.ReadAll(r)
}

func readScores(path string, t *feat.Table, names ...string) (map[string]feat.Column, error) {
	r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Release()
	return feat.Scores(r, path, t, names...)
}

// origLabel is each training row's label before poisoning (readTruth).
var origLabel = map[uint64]int32{}

func readTruth(path string) (map[uint64]bool, error) {
	rec, err := arrowio.ReadTruth(path)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	out := map[uint64]bool{}
	ids, ps := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Boolean)
	orig, _ := rec.Column(2).(*array.Int32)
	for i := 0; i < ids.Len(); i++ {
		out[ids.Value(i)] = ps.Value(i)
		if orig != nil {
			origLabel[ids.Value(i)] = orig.Value(i)
		}
	}
	return out, nil
}

// movedRule is one --moved-z value: the filter's moved_z, and whether the
// rows near where the far-moved rows came from are excluded too.
type movedRule struct {
	z    float64
	from bool
}

// movedExclude adds to exclude the rows of f (the filtered features) that
// the filter's mask moved far from their rows of t (filter.MovedSuspects
// with the trusted rows not yet excluded) and, with r.from, the rows near
// where those came from (filter.MovedFrom).
func movedExclude(t, f *feat.Table, trusted, exclude []bool, r movedRule) ([]bool, *chanfilter.Gate, error) {
	row := map[uint64]int{}
	for i, id := range t.IDs {
		row[id] = i
	}
	d := t.Embedding.D
	moved := make([]float32, f.N())
	tr := make([]bool, f.N())
	for k, id := range f.IDs {
		i, ok := row[id]
		if !ok || f.Embedding.D != d {
			return nil, nil, fmt.Errorf("filtered features: row %d (sample_id %d) does not match the embed features", k, id)
		}
		moved[k] = float32(stat.Dist(t.Embedding.X[i*d:(i+1)*d], f.Embedding.X[k*d:(k+1)*d]))
		tr[k] = trusted[i] && (exclude == nil || !exclude[k])
	}
	far, rep := filter.MovedSuspects(moved, tr, r.z)
	fmt.Fprintf(os.Stderr, "moved_z %.2f: median %.3f scale %.3f threshold %.3f suspects %d\n", r.z, rep.TrustedMedian, rep.TrustedScale, rep.Threshold, rep.Suspects)
	g := &chanfilter.Gate{Moved: rep.Threshold}
	if r.from {
		x := make([]float32, 0, f.N()*d)
		for _, id := range f.IDs {
			i := row[id]
			x = append(x, t.Embedding.X[i*d:(i+1)*d]...)
		}
		from, reg := filter.MovedFrom(x, d, far, tr)
		fmt.Fprintf(os.Stderr, "moved from: radius %.3f trusted median %.3f q01 %.3f threshold %.3f suspects %d %s\n", reg.Radius, reg.TrustedMedian, reg.TrustedQ01, reg.Threshold, reg.Suspects, reg.Why)
		if reg.Suspects > 0 {
			g.Centre, g.Near = reg.Centre, reg.Threshold
		}
		for k := range far {
			far[k] = far[k] || from[k]
		}
	}
	out := make([]bool, f.N())
	for k := range out {
		out[k] = far[k] || (exclude != nil && exclude[k])
	}
	return out, g, nil
}

// gated measures a classifier that sends each test input through the
// filtered encoder and br's head when the mask moved it far or it sits near
// the far-moved rows' origin, and otherwise through the original encoder
// and a head trained, with bp's final-head settings, on the same kept rows
// of t. orig and filt are the clean and triggered test sets under each
// encoder, row for row.
func gated(w io.Writer, name string, t, f *feat.Table, br *bootstrap.Result, bp bootstrap.Params, g *chanfilter.Gate, orig, filt [2]*feat.Table, target int32) error {
	_, _, tr, h, err := keptHead(t, f, br, bp)
	if err != nil {
		return err
	}
	defer tr.Close()
	var line strings.Builder
	for s, what := range []string{"clean", "triggered"} {
		o, fl := orig[s], filt[s]
		if o.N() != fl.N() {
			return fmt.Errorf("gate: %s test sets of %d and %d rows", what, o.N(), fl.N())
		}
		po, err := tr.Score(h, o.Embedding.X, o.Labels)
		if err != nil {
			return err
		}
		pf, err := tr.Score(br.Head, fl.Embedding.X, fl.Labels)
		if err != nil {
			return err
		}
		d := o.Embedding.D
		hit, hitOrig, through := 0, 0, 0
		for i := 0; i < o.N(); i++ {
			far := g.Through(o.Embedding.X[i*d:(i+1)*d], fl.Embedding.X[i*d:(i+1)*d])
			want := o.Labels[i]
			if s == 1 {
				want = target
			}
			pred := po.Pred[i]
			if far {
				pred = pf.Pred[i]
				through++
			}
			if pred == want {
				hit++
			}
			if po.Pred[i] == want {
				hitOrig++
			}
		}
		n := float64(o.N())
		fmt.Fprintf(&line, " %s: %.1f%% (original head alone %.1f%%, %.1f%% filtered)", what, 100*float64(hit)/n, 100*float64(hitOrig)/n, 100*float64(through)/n)
	}
	fmt.Fprintf(w, "  gated %s:%s\n", name, line.String())
	return nil
}

// classKeepCheck measures a class-gated classifier on the test set
// (clean, and carrying the attack's trigger) as bootstrap exports it, and
// with a keep rule for each q: an input whose original class is gated
// keeps that class when the filtered path still gives it at least q.
func classKeepCheck(ctx context.Context, w io.Writer, name, dir, enc, test string, spec *attack.Spec, t, f *feat.Table, br *bootstrap.Result, bp bootstrap.Params, filt [2]*feat.Table, qs []float64) error {
	m, err := encoder.Load(filepath.Join(dir, "filtered_encoder.onnx"), "")
	if err != nil {
		return err
	}
	g, err := chanfilter.ReadGate(m.Graph())
	if err != nil {
		return err
	}
	if g == nil || !g.IsClass() {
		fmt.Fprintf(w, "  class-keep %s: the filtered encoder carries no class gate\n", name)
		return nil
	}
	oclean, otrig, err := testEmbeddings(ctx, enc, test, spec, filepath.Dir(dir))
	if err != nil {
		return err
	}
	nc, rows, tr, h, err := keptHead(t, f, br, bp)
	if err != nil {
		return err
	}
	defer tr.Close()
	if _, err := bootstrap.ClassGate(g, h.Predict, t, rows, bp.ClassRule(g)); err != nil {
		return err
	}
	gated := map[int32]bool{}
	for _, c := range g.Classes {
		gated[int32(c)] = true
	}
	fmt.Fprintf(w, "  class-keep %s: gate classes %v\n", name, g.Classes)
	var po, pf [2]*mlp.Scores
	for s, o := range [2]*feat.Table{oclean, otrig} {
		if o.N() != filt[s].N() {
			return fmt.Errorf("class-keep: test sets of %d and %d rows", o.N(), filt[s].N())
		}
		if po[s], err = tr.Score(h, o.Embedding.X, o.Labels); err != nil {
			return err
		}
		if pf[s], err = tr.Score(br.Head, filt[s].Embedding.X, filt[s].Labels); err != nil {
			return err
		}
	}
	for _, q := range append([]float64{math.Inf(1)}, qs...) {
		var res [2]float64
		through := 0
		for s := range po {
			n, hit := po[s].Pred, 0
			for i, c := range n {
				pred := c
				if gated[c] {
					if p := pf[s].Prob[i*nc+int(c)]; float64(p) < q {
						pred = pf[s].Pred[i]
						if s == 0 {
							through++
						}
					}
				}
				want := filt[s].Labels[i]
				if s == 1 {
					want = int32(spec.Target)
				}
				if pred == want {
					hit++
				}
			}
			res[s] = 100 * float64(hit) / float64(len(n))
		}
		label := "as exported (no keep)"
		if !math.IsInf(q, 1) {
			label = fmt.Sprintf("keep at q=%.2f", q)
		}
		fmt.Fprintf(w, "  class-keep %s: %-22s ACC %.1f%%  ASR %.1f%%  (clean inputs through the filtered path: %.1f%%)\n", name, label, res[0], res[1], 100*float64(through)/float64(oclean.N()))
	}
	return nil
}

// floats parses the comma-separated numbers of flag name's value v.
func floats(name, v string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(v, ",") {
		x, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("--%s: %v", name, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// keptHead trains the original path's head (gateHead) on the rows of t
// that bootstrap kept among f's rows; it returns t's class count and those
// rows too. The caller closes the trainer.
func keptHead(t, f *feat.Table, br *bootstrap.Result, bp bootstrap.Params) (int, []int, *mlp.Trainer, *mlp.Head, error) {
	nc, _ := t.Classes()
	rows := keptRows(t, f, br)
	tr, h, err := gateHead(t, nc, rows, bp)
	return nc, rows, tr, h, err
}

// keptRows are the rows of t (by sample_id) that bootstrap kept among
// f's rows.
func keptRows(t, f *feat.Table, br *bootstrap.Result) []int {
	pos := map[uint64]int{}
	for i, id := range t.IDs {
		pos[id] = i
	}
	var rows []int
	for k, kept := range br.Kept {
		if kept {
			rows = append(rows, pos[f.IDs[k]])
		}
	}
	return rows
}

// gateHead trains the original path's head of a gated classifier as
// bootstrap does: t's rows, the final head's epochs and steps, seed + 1000.
// The caller closes the trainer.
func gateHead(t *feat.Table, nc int, rows []int, bp bootstrap.Params) (*mlp.Trainer, *mlp.Head, error) {
	cfg := bp.Config()
	cfg.Epochs, cfg.MaxSteps = bp.FinalEpochs, bp.MaxSteps
	sizes := bp.Sizes(t.Embedding.D, nc)
	tr, err := mlp.NewTrainer(sizes, cfg)
	if err != nil {
		return nil, nil, err
	}
	h := mlp.NewHead(sizes, bp.Seed+1000)
	if _, err := tr.Fit(h, t.Embedding.X, t.Labels, rows, nil); err != nil {
		tr.Close()
		return nil, nil, err
	}
	return tr, h, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeRaw writes t's embeddings as an int32 header (n, d) and n*d float32
// values, little-endian, for analysis outside Go.
func writeRaw(path string, t *feat.Table) error {
	b := make([]byte, 8+4*len(t.Embedding.X))
	binary.LittleEndian.PutUint32(b, uint32(t.N()))
	binary.LittleEndian.PutUint32(b[4:], uint32(t.Embedding.D))
	for i, v := range t.Embedding.X {
		binary.LittleEndian.PutUint32(b[8+4*i:], math.Float32bits(v))
	}
	return os.WriteFile(path, b, 0o644)
}

// writePixels writes the run's training images in the encoder's canonical
// form (RGB planes in [0, 1]) in t's row order: an int32 header (n, size)
// and n*size float32 values, little-endian.
func writePixels(ctx context.Context, path, dir, enc string, t *feat.Table) error {
	im, err := loadPixels(ctx, dir, enc, t)
	if err != nil {
		return err
	}
	x := im.X
	b := make([]byte, 8+4*len(x))
	binary.LittleEndian.PutUint32(b, uint32(t.N()))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(x)/t.N()))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[8+4*i:], math.Float32bits(v))
	}
	return os.WriteFile(path, b, 0o644)
}

// loadPixels reads the run's training images in the encoder's canonical
// form, in t's row order (filter.LoadImages).
func loadPixels(ctx context.Context, dir, enc string, t *feat.Table) (filter.Images, error) {
	m, err := encoder.Load(enc, "")
	if err != nil {
		return filter.Images{}, err
	}
	r, err := arrowio.OpenDataset(ctx, filepath.Join(dir, "nodes", "train", "table.arrow"), arrowio.ReadOptions{})
	if err != nil {
		return filter.Images{}, err
	}
	defer r.Release()
	return filter.LoadImages(ctx, r, t.IDs, m.Preprocess())
}

// splitCheck runs the filter's class split on the run's training images
// with each variant's filter parameters and prints what it flags and, with
// ground truth, how many poisoned and clean rows it calls carriers.
func splitCheck(ctx context.Context, w io.Writer, dir, enc string, t *feat.Table, poison map[uint64]bool, vs variants) error {
	im, err := loadPixels(ctx, dir, enc, t)
	if err != nil {
		return err
	}
	for _, v := range vs {
		name, raw, _ := strings.Cut(v, "=")
		var over map[string]json.RawMessage
		if err := json.Unmarshal([]byte(raw), &over); err != nil {
			return fmt.Errorf("--variant %s: %v", name, err)
		}
		var p filter.Params
		fp := over["filter"]
		if len(fp) == 0 {
			fp = json.RawMessage(`{}`)
		}
		var m map[string]any
		json.Unmarshal(fp, &m)
		m["encoder"] = enc
		fp, _ = json.Marshal(m)
		if err := filter.DecodeParams(fp, &p); err != nil {
			return err
		}
		rep, carrier, pats, err := filter.SplitClasses(im, t.Labels, p.Split())
		if err != nil {
			return err
		}
		cp, cc, np := 0, 0, 0
		for i, id := range t.IDs {
			if poison[id] {
				np++
			}
			if carrier[i] {
				if poison[id] {
					cp++
				} else {
					cc++
				}
			}
		}
		b, _ := json.Marshal(rep)
		fmt.Fprintf(w, "%-16s carriers: %d of %d poisoned, %d clean; %d patterns; %s\n", name, cp, np, cc, len(pats), b)
	}
	return nil
}

// oracleHeads prints the ACC and ASR of final heads trained on every row,
// on every clean row (truth) and on br's kept rows, and the clean rows
// br left out per class: where a final head's accuracy is lost.
func oracleHeads(w io.Writer, t *feat.Table, aug *feat.Table, br *bootstrap.Result, suspect []bool, bp bootstrap.Params, poison map[uint64]bool, clean, trig *feat.Table, spec *attack.Spec) error {
	nc := 0
	for _, l := range t.Labels {
		nc = max(nc, int(l)+1)
	}
	// Rows left out that the final head gives another class with
	// probability q or more, relabelled as that class.
	str, err := mlp.NewTrainer(br.Head.Sizes, mlp.DefaultConfig(1))
	if err != nil {
		return err
	}
	sc, err := str.Score(br.Head, t.Embedding.X, t.Labels)
	str.Close()
	if err != nil {
		return err
	}
	// Each variant gives a left-out row the label it joins the head
	// under (-1: stays out).
	type variant struct {
		name string
		move func(i int) int32
	}
	other := func(q float32, only []bool) func(int) int32 {
		return func(i int) int32 {
			if p := sc.Pred[i]; (only == nil || only[i]) && p != t.Labels[i] && sc.Prob[i*nc+int(p)] >= q {
				return p
			}
			return -1
		}
	}
	agree := func(q float32) func(int) int32 {
		return func(i int) int32 {
			if p := sc.Pred[i]; (suspect == nil || !suspect[i]) && p == t.Labels[i] && sc.Prob[i*nc+int(p)] >= q {
				return p
			}
			return -1
		}
	}
	none := make([]bool, t.N())
	sus := suspect
	if sus == nil {
		sus = none
	}
	variants := []variant{{"off", func(int) int32 { return -1 }}, {"every row left out, 0.5", other(0.5, nil)}, {"every row left out, 0.9", other(0.9, nil)},
		{"suspects, 0.5", other(0.5, sus)}, {"suspects, 0.9", other(0.9, sus)}}
	crowded := bootstrap.Crowded(suspect, t.Labels, nc)
	for _, q := range []float32{0.5, 0.9} {
		rl := bootstrap.Relabels(sc, suspect, crowded, t.Labels, nc, q)
		variants = append(variants, variant{fmt.Sprintf("bootstrap's rule (crowded classes), %.1f", q), func(i int) int32 { return rl[i] }})
	}
	for _, q := range []float32{0.5, 0.7, 0.9} {
		variants = append(variants, variant{fmt.Sprintf("non-suspects the head agrees with, %.1f", q), agree(q)})
	}
	for _, v := range variants {
		var accs, asrs []float64
		y := append([]int32(nil), t.Labels...)
		var rows []int
		var re, rePoison, reRight int
		for i := range y {
			if br.Kept[i] {
				rows = append(rows, i)
				continue
			}
			if p := v.move(i); p >= 0 {
				y[i] = p
				rows = append(rows, i)
				re++
				if poison[t.IDs[i]] {
					rePoison++
					if o, ok := origLabel[t.IDs[i]]; ok && o == p {
						reRight++
					}
				}
			}
		}
		fx := t.Embedding.X
		if aug != nil && aug.N() > 0 {
			fx = append(append([]float32(nil), fx...), aug.Embedding.X...)
			y = append(y, aug.Labels...)
			for i := 0; i < aug.N(); i++ {
				rows = append(rows, t.N()+i)
			}
		}
		for k := uint64(1); k <= 3; k++ {
			cfg := bp.Config()
			cfg.Epochs, cfg.MaxSteps = bp.FinalEpochs, bp.MaxSteps
			tr, err := mlp.NewTrainer(bp.Sizes(t.Embedding.D, nc), cfg)
			if err != nil {
				return err
			}
			h := mlp.NewHead(bp.Sizes(t.Embedding.D, nc), bp.Seed+1000*k)
			_, err = tr.Fit(h, fx, y, rows, nil)
			tr.Close()
			if err != nil {
				return err
			}
			acc, err := accuracy(h, clean, -1)
			if err != nil {
				return err
			}
			accs = append(accs, 100*acc)
			if trig != nil && spec != nil {
				a, err := accuracy(h, trig, int32(spec.Target))
				if err != nil {
					return err
				}
				asrs = append(asrs, 100*a)
			}
		}
		asr := "—"
		if asrs != nil {
			asr = fmt.Sprintf("%.1f %v", mean64(asrs), fmtList(asrs))
		}
		fmt.Fprintf(w, "  %s: %d rows joined (%d poisoned, %d under their source's label)  ACC %5.1f %v  ASR %s\n", v.name, re, rePoison, reRight, mean64(accs), fmtList(accs), asr)
	}
	left, total := make([]int, nc), make([]int, nc)
	for i, l := range t.Labels {
		if poison[t.IDs[i]] {
			continue
		}
		total[l]++
		if !br.Kept[i] {
			left[l]++
		}
	}
	var b strings.Builder
	for c := range left {
		if left[c] > 0 {
			fmt.Fprintf(&b, " %d:%d/%d", c, left[c], total[c])
		}
	}
	fmt.Fprintf(w, "  clean rows left out by class:%s\n", b.String())
	return nil
}

func fmtList(v []float64) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f", x)
	}
	return "[" + b.String() + "]"
}

func mean64(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(max(1, len(v)))
}
