// Package report writes report.html: one self-contained page (inline SVG
// and CSS, a few lines of script, no network) that shows what a run found:
// ACC and ASR per pipeline, per-class seed/trusted/kept counts, the score
// histograms behind each decision (split by ground truth when known), a
// 2-D projection of the embeddings coloured by decision, the channel
// suspicion scores with the masked ones marked, and the encoder scan.
package report

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// Run is what a report shows of one run folder.
type Run struct {
	Name    string   // pipeline name, as shown
	Dir     string   // run folder
	Summary *Summary // report.json

	ids     []uint64
	labels  []int32
	cols    map[string][]float64 // samples.parquet, by column (bools as 0/1; null NaN)
	poison  map[uint64]bool      // ground truth, if known
	proj    [][2]float64         // 2-D projection of the embeddings, by row of ids
	layers  []string
	scores  [][]float64
	masked  [][]bool
	hasChan bool
}

// Load reads a run folder: report.json, samples.parquet, channels.parquet
// and the first embedding the run computed. truth (a truth.csv or truth/v1
// file, or "") adds the ground truth.
func Load(dir, truth string) (*Run, error) {
	s, err := ReadSummary(dir)
	if err != nil {
		return nil, err
	}
	r := &Run{Dir: dir, Summary: s, Name: s.Pipeline, cols: map[string][]float64{}}
	if err := r.loadFeatures(); err != nil {
		return nil, err
	}
	if err := r.loadSamples(filepath.Join(dir, SamplesFile)); err != nil {
		return nil, err
	}
	if err := r.loadChannels(filepath.Join(dir, ChannelsFile)); err != nil {
		return nil, err
	}
	if truth != "" {
		rec, err := arrowio.ReadTruth(truth)
		if err != nil {
			return nil, err
		}
		defer rec.Release()
		r.poison = map[uint64]bool{}
		ids, ps := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Boolean)
		for i := 0; i < ids.Len(); i++ {
			r.poison[ids.Value(i)] = ps.Value(i)
		}
	}
	return r, nil
}

// loadFeatures reads the embedding of the first node that wrote features
// (labels and the 2-D projection come from it).
func (r *Run) loadFeatures() error {
	var path string
	for _, id := range r.Summary.NodeIDs() {
		n := r.Summary.Nodes[id]
		if f, ok := n.Outputs["features"]; ok && path == "" && n.Stage == "embed" {
			path = f.Path
		}
	}
	if path == "" {
		return nil
	}
	rd, err := arrowio.OpenDataset(context.Background(), filepath.Join(r.Dir, path), arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer rd.Release()
	var x []float32
	d := 0
	for rd.Next() {
		rec := rd.Record()
		ids, ls := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Int32)
		l := rec.Column(2).(*array.FixedSizeList)
		d = int(l.DataType().(*arrow.FixedSizeListType).Len())
		vals := l.ListValues().(*array.Float32).Float32Values()[l.Offset()*d:]
		for i := 0; i < ids.Len(); i++ {
			r.ids = append(r.ids, ids.Value(i))
			r.labels = append(r.labels, ls.Value(i))
			x = append(x, vals[i*d:(i+1)*d]...)
		}
	}
	if err := rd.Err(); err != nil {
		return err
	}
	r.proj = project(x, len(r.ids), d)
	return nil
}

func (r *Run) loadSamples(path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	rd, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer rd.Release()
	pos := make(map[uint64]int, len(r.ids))
	for i, id := range r.ids {
		pos[id] = i
	}
	for rd.Next() {
		rec := rd.Record()
		ids := rec.Column(0).(*array.Uint64)
		for c := 1; c < int(rec.NumCols()); c++ {
			name := rec.Schema().Field(c).Name
			col := r.cols[name]
			if col == nil {
				col = make([]float64, len(r.ids))
				for i := range col {
					col[i] = math.NaN()
				}
				r.cols[name] = col
			}
			for i := 0; i < ids.Len(); i++ {
				k, ok := pos[ids.Value(i)]
				if !ok || rec.Column(c).IsNull(i) {
					continue
				}
				switch a := rec.Column(c).(type) {
				case *array.Boolean:
					if a.Value(i) {
						col[k] = 1
					} else {
						col[k] = 0
					}
				case *array.Float32:
					col[k] = float64(a.Value(i))
				case *array.Int32:
					col[k] = float64(a.Value(i))
				}
			}
		}
	}
	return rd.Err()
}

func (r *Run) loadChannels(path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	rd, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer rd.Release()
	index := map[string]int{}
	for rd.Next() {
		rec := rd.Record()
		layer, keep, score := rec.Column(0).(*array.String), rec.Column(2).(*array.Boolean), rec.Column(3).(*array.Float32)
		for i := 0; i < layer.Len(); i++ {
			l, ok := index[layer.Value(i)]
			if !ok {
				l = len(r.layers)
				index[layer.Value(i)] = l
				r.layers = append(r.layers, layer.Value(i))
				r.scores = append(r.scores, nil)
				r.masked = append(r.masked, nil)
			}
			r.scores[l] = append(r.scores[l], float64(score.Value(i)))
			r.masked[l] = append(r.masked[l], !keep.Value(i))
			r.hasChan = true
		}
	}
	return rd.Err()
}

// project returns the first two principal components of n rows of d
// values (on at most 20,000 rows).
func project(x []float32, n, d int) [][2]float64 {
	if n == 0 || d == 0 {
		return nil
	}
	var rows []int
	for i := 0; i < n; i += max(1, n/20000) {
		rows = append(rows, i)
	}
	comps := stat.Components(x, d, rows, 2, 1)
	out := make([][2]float64, n)
	for i, p := range stat.Project(x, d, nil, stat.Mean(x, d, rows), comps) {
		out[i] = [2]float64{p[0], p[1]}
	}
	return out
}

// Write writes the report of runs (the first one is shown in detail;
// every run gets a row and a bar) to path, atomically.
func Write(path string, runs []*Run) error {
	if len(runs) == 0 {
		return fmt.Errorf("report: no runs")
	}
	var body strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&body, format, args...) }
	w("<h1>tcore report</h1>\n")
	w(`<p class="sub">%s</p>`, html.EscapeString(describe(runs[0])))
	// summary table and ACC/ASR
	w("<h2>Results</h2>\n<table><tr><th>pipeline</th><th>ACC</th><th>ASR</th><th>kept</th><th>kept poisoned</th><th>channels masked</th><th>seconds</th></tr>\n")
	var names []string
	accs, asrs := make([]float64, len(runs)), make([]float64, len(runs))
	for i, r := range runs {
		s := r.Summary
		var acc, asr float64
		if s.ACC != nil {
			acc = *s.ACC
		}
		asrS := "—"
		if s.ASR != nil {
			asr = *s.ASR
			asrS = fmt.Sprintf("%.1f%%", 100*asr)
		}
		accs[i], asrs[i] = 100*acc, 100*asr
		names = append(names, r.Name)
		kp := "—"
		if set, ok := s.Set("kept"); ok {
			kp = strconv.Itoa(set.Poisoned)
		}
		secs := "—"
		if s.Seconds > 0 {
			secs = fmt.Sprintf("%.0f", s.Seconds)
		}
		w("<tr><td>%s</td><td>%.1f%%</td><td>%s</td><td>%d</td><td>%s</td><td>%d</td><td>%s</td></tr>\n",
			html.EscapeString(r.Name), 100*acc, asrS, s.Samples.Kept, kp, s.Channels.Filtered, secs)
	}
	if ref := runs[0].Summary.Reference; len(runs) == 1 && ref != nil && ref.ACC != nil {
		var asr float64
		asrS := "—"
		if ref.ASR != nil {
			asr, asrS = *ref.ASR, fmt.Sprintf("%.1f%%", 100**ref.ASR)
		}
		w("<tr><td>none (reference: one head on every row, same encoder)</td><td>%.1f%%</td><td>%s</td><td>%d</td><td>—</td><td>0</td><td>%.0f</td></tr>\n",
			100**ref.ACC, asrS, runs[0].Summary.Samples.Total, ref.Seconds)
		accs, asrs = append(accs, 100**ref.ACC), append(asrs, 100*asr)
	}
	w("</table>\n")
	bars := names
	if len(accs) > len(names) {
		bars = append(bars[:len(bars):len(bars)], "none (reference)")
	}
	w(`<div class="fig">%s</div>`, Bars("acc-asr", "ACC and ASR per pipeline", "%", bars, []string{"ACC", "ASR"}, [][]float64{accs, asrs}, 100))
	if classes, series := perClass(runs); len(classes) > 0 {
		w(`<div class="fig">%s</div>`, Bars("acc-class", "Accuracy per class on the clean test set", "%", classes, names, series, 100))
	}

	for _, r := range runs {
		if r.Name == "none" && len(runs) > 1 {
			continue
		}
		r.detail(w)
	}
	page := strings.Replace(pageTemplate, "{{BODY}}", body.String(), 1)
	return arrowio.WriteFileAtomic(path, []byte(page))
}

// perClass returns the classes any run has a per-class accuracy for, in
// class order, and each run's accuracies (%) on them.
func perClass(runs []*Run) ([]string, [][]float64) {
	seen := map[int]bool{}
	for _, r := range runs {
		if ev := r.Summary.Evaluation; ev != nil {
			for k := range ev.PerClass {
				if c, err := strconv.Atoi(k); err == nil {
					seen[c] = true
				}
			}
		}
	}
	var cs []int
	for c := range seen {
		cs = append(cs, c)
	}
	sort.Ints(cs)
	classes := make([]string, len(cs))
	for i, c := range cs {
		classes[i] = strconv.Itoa(c)
	}
	series := make([][]float64, len(runs))
	for i, r := range runs {
		series[i] = make([]float64, len(cs))
		if ev := r.Summary.Evaluation; ev != nil {
			for j, c := range classes {
				series[i][j] = 100 * ev.PerClass[c]
			}
		}
	}
	return classes, series
}

func describe(r *Run) string {
	s := r.Summary
	return fmt.Sprintf("training data %v, test data %v, encoder %s", s.Inputs["train"], s.Inputs["test"], filepath.Base(s.Encoder))
}

// detail writes one run's figures.
func (r *Run) detail(w func(string, ...any)) {
	id := strings.ReplaceAll(r.Name, " ", "-")
	w("<h2>%s: what was found</h2>\n", html.EscapeString(r.Name))
	for _, id := range r.Summary.NodeIDs() {
		n := r.Summary.Nodes[id]
		if n.Stage != "embed" || n.Metrics["layers"] == nil {
			continue
		}
		m := n.Metrics
		w("<p>Encoder (%s): %vx%v input, %v-dimensional embedding; probed layers %v (channels %v); preprocessing %v.</p>\n",
			html.EscapeString(id), m["height"], m["width"], m["dim"], html.EscapeString(fmt.Sprint(m["layers"])),
			html.EscapeString(fmt.Sprint(m["layer_channels"])), html.EscapeString(fmt.Sprint(m["preprocess"])))
	}
	if ws := r.Summary.Warnings(); len(ws) > 0 {
		w("<p>Warnings:</p>\n<ul>\n")
		for _, x := range ws {
			w("<li>%s (%s): %s</li>\n", html.EscapeString(x.Node), html.EscapeString(x.Stage), html.EscapeString(x.Msg))
		}
		w("</ul>\n")
	}
	// encoder scan
	if scan := r.Summary.EncoderScan; scan != nil {
		scanVerdict(w, scan)
		var groups []string
		for k := range scan.RandomMedian {
			groups = append(groups, k)
		}
		sort.Slice(groups, func(a, b int) bool { return sizeKey(groups[a]) < sizeKey(groups[b]) })
		vals := make([]float64, len(groups))
		for i, g := range groups {
			vals[i] = scan.RandomMedian[g]
		}
		groups = append(groups, "found")
		vals = append(vals, scan.BestCollapse)
		w(`<div class="fig">%s</div>`, Bars(id+"-scan", "Encoder scan: median collapse of random patterns per size, and the found pattern", "collapse", groups, []string{"collapse"}, [][]float64{vals}, 0))
	}
	r.filterSuspects(w)
	r.exportedGate(w)
	// per-class counts
	if len(r.labels) > 0 {
		sets := []string{}
		for _, c := range []string{"sift.seed", "expand.trusted", "bootstrap.kept"} {
			if _, ok := r.cols[c]; ok {
				sets = append(sets, c)
			}
		}
		if len(sets) > 0 {
			nc := 0
			for _, l := range r.labels {
				nc = max(nc, int(l)+1)
			}
			classes := make([]string, nc)
			for c := range classes {
				classes[c] = strconv.Itoa(c)
			}
			vals := make([][]float64, len(sets))
			for s, name := range sets {
				vals[s] = make([]float64, nc)
				for i, v := range r.cols[name] {
					if v == 1 {
						vals[s][r.labels[i]]++
					}
				}
			}
			w(`<div class="fig">%s</div>`, Bars(id+"-classes", "Rows per class in each set", "rows", classes, sets, vals, 0))
		}
	}
	// histograms
	for _, h := range []struct{ col, by, title string }{
		{"sift.invariance", "sift.seed", "Invariance (depth gain): seeds vs the rest"},
		{"expand.loss_benign", "expand.trusted", "Benign loss: trusted vs the rest"},
		{"expand.loss_confusion", "expand.flagged", "Confusion loss: flagged vs not"},
		{"bootstrap.loss", "bootstrap.kept", "Final loss: kept vs not kept"},
		{"filter.moved", "filter.suspect", "How far the filter's mask moved each row's embedding: the filter's suspects vs the rest"},
	} {
		vals, ok := r.cols[h.col]
		by, ok2 := r.cols[h.by]
		if !ok || !ok2 || !slices.ContainsFunc(vals, func(v float64) bool { return v != 0 }) {
			continue
		}
		names, series := r.split(vals, by, h.by)
		w(`<div class="fig">%s</div>`, Hist(id+"-"+strings.ReplaceAll(h.col, ".", "-"), h.title, h.col, names, series, 40, true))
	}
	// projection
	if len(r.proj) > 0 {
		decision := "bootstrap.kept"
		if _, ok := r.cols[decision]; !ok {
			decision = ""
		}
		groups := []string{"kept", "not kept"}
		if decision == "" {
			groups = []string{"all rows"}
		}
		var pts []Point
		step := max(1, len(r.proj)/4000)
		for i := 0; i < len(r.proj); i += step {
			g := 0
			if decision != "" && r.cols[decision][i] != 1 {
				g = 1
			}
			pts = append(pts, Point{X: r.proj[i][0], Y: r.proj[i][1], Group: g, Ring: r.poison != nil && r.poison[r.ids[i]]})
		}
		title := "Embeddings (first two principal components), coloured by decision"
		if r.poison != nil {
			title += "; known poison ringed"
		}
		w(`<div class="fig">%s</div>`, Scatter(id+"-proj", title, groups, pts))
	}
	if r.hasChan {
		w(`<div class="fig">%s</div>`, Strip(id+"-channels", "Channel suspicion per probed layer (masked in red; dashed: u)", r.layers, r.scores, r.masked, 3))
	}
	if ev := r.Summary.Evaluation; ev != nil && ev.Sets != nil {
		w("<table><tr><th>set</th><th>rows</th><th>poisoned</th><th>purity</th></tr>\n")
		for _, k := range []string{"seed", "trusted", "kept"} {
			if s, ok := ev.Sets[k]; ok {
				w("<tr><td>%s</td><td>%d</td><td>%d</td><td>%.4f</td></tr>\n", k, s.N, s.Poisoned, s.Purity)
			}
		}
		w("</table>\n")
		if d := ev.Detector; d != nil {
			w("<p>Not kept, read as a poison detector: precision %.3f, recall %.3f.</p>\n", d.Precision, d.Recall)
		}
	}
}

// filterSuspects lists why the filter made suspects (rows never kept),
// signal by signal, with the reason a signal flagged nothing.
func (r *Run) filterSuspects(w func(string, ...any)) {
	for _, id := range r.Summary.NodeIDs() {
		n := r.Summary.Nodes[id]
		if n.Stage != "filter" {
			continue
		}
		b, _ := json.Marshal(n.Metrics)
		var res filter.Result
		if json.Unmarshal(b, &res) != nil || res.Region == nil && res.Moved == nil && res.MovedFrom == nil && res.DataTrigger == nil && (res.Planted == nil || res.Planted.Carriers == 0) && (res.ClassSplit == nil || res.ClassSplit.Carriers == 0) {
			continue
		}
		line := func(what string, count int, why string) {
			if why != "" {
				w("<li>%s: none (%s)</li>\n", what, html.EscapeString(why))
				return
			}
			w("<li>%s: <b>%d</b></li>\n", what, count)
		}
		w("<p>The filter's suspects (%s; never kept):</p>\n<ul>\n", html.EscapeString(id))
		if g := res.Region; g != nil {
			line("inside the found trigger's region", g.Suspects, g.Why)
		}
		if m := res.Moved; m != nil {
			line(fmt.Sprintf("moved far by the mask (more than %.2f)", m.Threshold), m.Suspects, m.Why)
		}
		if g := res.MovedFrom; g != nil {
			line("started where the far-moved rows came from", g.Suspects, g.Why)
		}
		if d := res.DataTrigger; d != nil {
			line("carrying the data trigger (of sift's suspects)", d.Carriers, d.Why)
		}
		if pl := res.Planted; pl != nil && pl.Carriers > 0 {
			var found []string
			for _, f := range pl.Found {
				found = append(found, html.EscapeString(fmt.Sprintf("%s in %d rows labelled %d", f.Pattern, f.Rows, f.Label)))
			}
			line(fmt.Sprintf("carrying a patch pasted pixel for pixel into the data (%s)", strings.Join(found, "; ")), pl.Carriers, "")
		}
		if cs := res.ClassSplit; cs != nil {
			line("in a class whose images split into two groups (a trigger planted in part of one class's rows)", cs.Carriers, cs.Why)
		}
		w("</ul>\n")
		classSplit(w, res.ClassSplit)
		filterSmoothing(w, res.Smoothing)
		filterGate(w, res.Gate)
	}
}

// exportedGate says what the exported classifier does, as the bootstrap
// stage decided it (its gated metric): the filter proposes a gate, and
// bootstrap resolves its class part, its veto and its per-class move
// thresholds, or drops it. With per-class thresholds it lists them.
func (r *Run) exportedGate(w func(string, ...any)) {
	for _, id := range r.Summary.NodeIDs() {
		n := r.Summary.Nodes[id]
		gated, _ := n.Metrics["gated"].(string)
		if n.Stage != "bootstrap" || gated == "" {
			continue
		}
		w("<p>The exported classifier (%s): gated %s.</p>\n", html.EscapeString(id), html.EscapeString(gated))
		ths, _ := n.Metrics["gate_class_moved"].([]any)
		if len(ths) == 0 {
			continue
		}
		w("<table><caption>The move each class of the original head needs to go through the filtered encoder (gate_class_quantile)</caption><tr><th>class</th>")
		for c := range ths {
			w("<th>%s</th>", strconv.Itoa(c))
		}
		w("</tr><tr><td>move threshold</td>")
		for _, v := range ths {
			f, _ := v.(float64)
			w("<td>%.2f</td>", f)
		}
		w("</tr></table>\n")
	}
}

// classSplit shows the classes whose images split apart, each with the
// figure that flagged it and the bar it had to reach, and the unflagged
// class that came nearest its bar: how close the call was.
func classSplit(w func(string, ...any), cs *filter.ClassSplit) {
	if cs == nil {
		return
	}
	if len(cs.Flagged) > 0 {
		w("<table><caption>Classes whose images split in two. The detail view's figure is z: how many robust sds the class's separation lies above the classes' median. The sharpness view's is the gap between its two groups' medians. A class is flagged where its figure reaches the bar.</caption>\n")
		w("<tr><th>class</th><th>view</th><th>rows</th><th>z or gap</th><th>bar</th><th>carriers</th></tr>\n")
		for _, f := range cs.Flagged {
			w("<tr><td>%d</td><td>%s</td><td>%d</td><td>%.2f</td><td>%.2f</td><td>%d</td></tr>\n", f.Class, html.EscapeString(f.View), f.Rows, f.Figure(), f.Bar, f.Carriers)
		}
		w("</table>\n")
	}
	if n := cs.Nearest; n != nil {
		w("<p>The class split's nearest call left unflagged: class %d (%d rows) split by a sharpness gap of %.2f against its bar of %.2f (the classes' median gap is %.2f).</p>\n", n.Class, n.Rows, n.Gap, n.Bar, cs.MedianGap)
	}
}

// filterSmoothing shows the blurs the filter tried against a noise blend.
func filterSmoothing(w func(string, ...any), sm *filter.Smoothing) {
	if sm == nil {
		return
	}
	if len(sm.Tried) == 0 {
		w("<p>The found pattern is a noise blend; no blur was tried (%s).</p>\n", html.EscapeString(sm.Why))
		return
	}
	if sm.Sigma > 0 {
		w("<p>The found pattern is a noise blend: the filtered encoder <b>blurs its input</b> (Gaussian, sigma %.1f pixels of the data) instead of masking channels.</p>\n", sm.Sigma)
	} else {
		w("<p>The found pattern is a noise blend, but no blur undid it (%s); channels were masked instead.</p>\n", html.EscapeString(sm.Why))
	}
	w("<table><tr><th>sigma</th><th>found blend's collapse / a smooth blend's</th><th>found blend's z</th><th>largest z of a noise blend</th></tr>\n")
	for _, t := range sm.Tried {
		w("<tr><td>%.1f</td><td>%.2f</td><td>%.1f</td><td>%.1f</td></tr>\n", t.Sigma, t.Ratio, t.Z, t.Worst)
	}
	w("</table>\n")
}

// filterGate says whether the classifier is gated: which inputs go
// through the filtered encoder, and the check that decided it.
func filterGate(w func(string, ...any), g *filter.GateReport) {
	if g == nil {
		return
	}
	if g.On && g.Class {
		w("<p>The classifier is <b>gated by class</b>: an input goes through the filtered (blurred) encoder when the original classifier labels it with a class it gives at least 5%% (and two) of %d trusted images carrying the found blend (where the trigger sends inputs); every other input goes through the original encoder and a head trained on the same kept rows. The bootstrap stage's <code>gated</code> metric names the classes, and <code>gate_probe_classes</code> lists the probe's classes.</p>\n", g.ProbeRows)
		return
	}
	if !g.On {
		w("<p>The classifier is not gated: every input goes through the filtered encoder (%s).</p>\n", html.EscapeString(g.Why))
	} else {
		origin := ""
		if g.Near > 0 {
			origin = fmt.Sprintf(", or sits within %.2f of where the far-moved rows started", g.Near)
		}
		lowered := ""
		if g.StepMoved > g.Moved {
			lowered = fmt.Sprintf(" (the moved step's threshold was %.2f; the gate went lower until the share gate_through of the best pattern's images went through)", g.StepMoved)
		}
		classes := ""
		if g.ProbeRows > 0 {
			classes = fmt.Sprintf(", or the original classifier labels it with a class it gives at least 5%% (and two) of %d trusted images carrying the patterns masked against (where the trigger sends inputs; the bootstrap stage's <code>gated</code> metric names the classes)", g.ProbeRows)
		}
		w("<p>The classifier is <b>gated</b>: an input goes through the filtered encoder when the mask moves its embedding more than %.2f%s%s%s; every other input goes through the original encoder and a head trained on the same kept rows, without the mask's accuracy cost. It sends %.1f%% of the training rows through the filtered encoder by their moves.</p>\n", g.Moved, lowered, origin, classes, 100*g.TrainingThrough)
		if g.Fallback != "" {
			w("<p>The gate stands on its class part alone (<code>gate_fallback</code> \"class\"): %s. An input carrying the trigger that the original classifier labels with the part's class goes through the filtered encoder; one it labels otherwise does not get the target from the original path either. When the original classifier gives no class enough of those images, the bootstrap stage drops the gate and every input goes through the filtered encoder: its <code>gated</code> metric says which.</p>\n", html.EscapeString(g.Fallback))
		}
	}
	if len(g.Patterns) > 0 {
		w("<p>The check (trusted images carrying each pattern masked against; the gate needs one pattern to send gate_min of them through):</p>\n<table><tr><th>pattern</th><th>images</th><th>sent through the filtered encoder</th></tr>\n")
		for _, c := range g.Patterns {
			w("<tr><td>%s</td><td>%d</td><td>%.1f%%</td></tr>\n", html.EscapeString(c.Pattern), c.Rows, 100*c.Through)
		}
		w("</table>\n")
	}
}

func sizeKey(s string) int {
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "size_")); err == nil {
		return n
	}
	return 1 << 20
}

// split divides vals by a 0/1 decision column and, with ground truth, by
// poison.
func (r *Run) split(vals, by []float64, byName string) ([]string, [][]float64) {
	short := byName[strings.LastIndex(byName, ".")+1:]
	var names []string
	var series [][]float64
	add := func(name string, keep func(i int) bool) {
		var s []float64
		for i, v := range vals {
			if !math.IsNaN(v) && keep(i) {
				s = append(s, v)
			}
		}
		if len(s) > 0 {
			names, series = append(names, name), append(series, s)
		}
	}
	if r.poison == nil {
		add(short, func(i int) bool { return by[i] == 1 })
		add("not "+short, func(i int) bool { return by[i] != 1 })
		return names, series
	}
	p := func(i int) bool { return r.poison[r.ids[i]] }
	add(short+", clean", func(i int) bool { return by[i] == 1 && !p(i) })
	add(short+", poison", func(i int) bool { return by[i] == 1 && p(i) })
	add("not "+short+", clean", func(i int) bool { return by[i] != 1 && !p(i) })
	add("not "+short+", poison", func(i int) bool { return by[i] != 1 && p(i) })
	return names, series
}

const pageTemplate = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tcore report</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#1a202c}
h1{margin-bottom:2px} .sub{color:#4a5568;margin-top:0}
table{border-collapse:collapse;margin:12px 0} td,th{border:1px solid #cbd5e0;padding:4px 10px;text-align:right} th{background:#edf2f7}
td:first-child,th:first-child{text-align:left}
.fig{display:inline-block;margin:6px 8px 6px 0;vertical-align:top;border:1px solid #e2e8f0;padding:4px}
</style></head>
<body>
{{BODY}}
<script>
// Marks the page once every figure has content, for people and for tests.
(function(){
  var plots=document.querySelectorAll("svg.plot"), ok=0;
  plots.forEach(function(p){ if(p.querySelectorAll("rect.bar,polyline.series,circle").length>0){ok++}else{p.setAttribute("data-empty","1")} });
  document.body.setAttribute("data-plots", String(plots.length));
  document.body.setAttribute("data-plots-ok", String(ok));
})();
</script>
</body></html>
`

// scanVerdict writes the encoder scan's call: its z against gap_min, and
// where the call was moved to the place its patch stands out most.
func scanVerdict(w func(string, ...any), scan *filter.Scan) {
	verdict := "does not look backdoored: nothing masked"
	switch {
	case scan.Backdoored:
		verdict = "looks backdoored: channels masked"
	case scan.UndoneByData:
		verdict = fmt.Sprintf("answers to a patch pasted into the training data (same-size z %.1f): its carriers were left out and the head learned that it means nothing, so nothing was masked", scan.PlantedZ)
	}
	w(`<p>Encoder scan: best pattern collapses the embeddings with same-size z = <b>%.1f</b> (gap_min %.0f): the encoder %s.`, scan.BestZ, scan.GapMin, verdict)
	if scan.FromPlace {
		w(` The random search found %s; the same patch stands out most at %s (%d places screened), which became the call.`, html.EscapeString(scan.PlaceFrom), html.EscapeString(scan.Pattern.String()), scan.Placed)
	}
	w("</p>\n")
}
