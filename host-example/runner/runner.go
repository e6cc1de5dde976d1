// Package runner runs tcore pipelines as a user does: a pipeline over
// datasets into a run folder, then the folder's tables (samples.parquet,
// channels.parquet), the evaluation of its classifier and its typed
// summary (report.json, report.html). The tcore CLI, the benchmark and the
// demo all run through it; so does the planting of an attack (Poison).
package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/host-example/report"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/evaluate"
	"github.com/tcore-dev/tcore/stages/kit/attack"
)

// Run is one run of a pipeline over datasets.
type Run struct {
	Pipeline *dag.Pipeline
	Stages   dag.Provider
	Observer dag.Observer // progress, or nil
	// Train and Test are the datasets (Test may be ""); Read tunes how
	// they are read.
	Train, Test string
	Read        arrowio.ReadOptions
	// Bindings give the stages the encoder, device, seed; Out is the run
	// folder.
	Bindings dag.Bindings
	Out      string
	// Spec is an eval spec (JSON) for the attack success rate, Truth a
	// ground-truth file: evaluation only, never shown to the defence.
	Spec  json.RawMessage
	Truth string
	// Classes is the declared number of classes (--classes), or 0 to take
	// the training labels' largest + 1.
	Classes int
	// StageTimeout, when positive, bounds each stage's run (--stage-timeout).
	StageTimeout time.Duration
	// Reference, with a Test set, also trains the none baseline over the
	// run's own embedding (one head on every training row, in
	// ReferenceDir) and reports its accuracy beside the run's: what the
	// defence cost or saved. Pipelines without an embed node, or that
	// are no more than embed and a head, get none.
	Reference bool

	trainIDs map[uint64]int64    // sample_id -> row of Train, when Truth is given
	testRead arrowio.ReadOptions // Read, with the training set's class names
}

// SmallClass is the fewest rows a class may have before the run warns
// that a head can hardly learn it.
const SmallClass = 5

// checkLabels reads the training labels before any stage runs and returns
// the classes found. A label outside the declared classes, or (with no
// declaration) classes with no rows below the largest label, are errors
// naming the file, row and label: a head would otherwise get dead outputs,
// or fail in ONNX Runtime after the whole pipeline ran.
func (r *Run) checkLabels(ctx context.Context) (*report.Classes, error) {
	rr, err := arrowio.OpenDataset(ctx, r.Train, r.Read)
	if err != nil {
		return nil, err
	}
	defer rr.Release()
	// A test set is labelled by the training set's class names when both
	// name them (image folders): a test folder that lacks a class keeps
	// every other label.
	if v, ok := rr.Schema().Metadata().GetValue(arrowio.ClassesKey); ok {
		var names []string
		if json.Unmarshal([]byte(v), &names) == nil {
			r.testRead.Classes = names
		}
	}
	counts := map[int]int{}
	var row int64
	maxLabel, maxRow := -1, int64(-1)
	tiny, smallest := 0, [2]int{}
	for rr.Next() {
		rec := rr.Record()
		idx := rec.Schema().FieldIndices(arrowio.ColLabel)
		if len(idx) == 0 {
			return nil, nil // not an images/v1 table: the stages name the problem
		}
		labels, ok := rec.Column(idx[0]).(*array.Int32)
		if !ok {
			return nil, nil
		}
		if imgs, ok := rec.Column(rec.Schema().FieldIndices(arrowio.ColImage)[0]).(*array.Binary); ok {
			for i := 0; i < imgs.Len(); i++ {
				if cfg, _, err := arrowio.DecodeConfig(imgs.Value(i)); err == nil && min(cfg.Width, cfg.Height) < report.TinyImage {
					tiny++
					if px := cfg.Width * cfg.Height; px < smallest[0]*smallest[1] || tiny == 1 {
						smallest = [2]int{cfg.Width, cfg.Height}
					}
				}
			}
		}
		if ids, ok := rec.Column(0).(*array.Uint64); ok && r.trainIDs != nil {
			for i := 0; i < ids.Len(); i++ {
				r.trainIDs[ids.Value(i)] = row + int64(i)
			}
		}
		for i := 0; i < labels.Len(); i++ {
			l := int(labels.Value(i))
			if r.Classes > 0 && l >= r.Classes { // the reader refuses negative labels
				return nil, plugin.BadInput(&arrowio.DataError{File: r.Train, Column: arrowio.ColLabel, Row: row, Msg: fmt.Sprintf("label %d outside the declared classes 0..%d (--classes %d)", l, r.Classes-1, r.Classes)})
			}
			if l > maxLabel {
				maxLabel, maxRow = l, row
			}
			counts[l]++
			row++
		}
	}
	if err := rr.Err(); err != nil {
		return nil, err
	}
	c := &report.Classes{N: maxLabel + 1, TinyImages: tiny}
	if tiny > 0 {
		c.Smallest = fmt.Sprintf("%dx%d", smallest[0], smallest[1])
	}
	if r.Classes > 0 {
		c.N, c.Declared = r.Classes, true
	} else if empty := c.N - len(counts); empty > 0 {
		var missing []int
		for k := 0; k < c.N && len(missing) <= 10; k++ {
			if counts[k] == 0 {
				missing = append(missing, k)
			}
		}
		return nil, plugin.BadInput(&arrowio.DataError{File: r.Train, Column: arrowio.ColLabel, Row: maxRow,
			Msg: fmt.Sprintf("label %d leaves %d class(es) below it without rows (%s); relabel the classes 0..N-1, or declare --classes %d if the head should have them", maxLabel, empty, classList(missing, empty), c.N)})
	}
	c.Rows = make([]int, c.N)
	for k, n := range counts {
		c.Rows[k] = n
	}
	for k, n := range c.Rows {
		if n < SmallClass {
			c.Small = append(c.Small, k)
		}
	}
	return c, nil
}

// checkTruth reads the ground truth before any stage runs: a malformed
// file, a truth row for a sample the training set does not have, or a
// training row with no truth would otherwise fail (or be ignored) only
// after the whole pipeline ran.
func (r *Run) checkTruth() error {
	if r.Truth == "" || len(r.trainIDs) == 0 {
		return nil
	}
	t, err := arrowio.ReadTruth(r.Truth)
	if err != nil {
		return plugin.BadInput(err)
	}
	defer t.Release()
	ids := t.Column(0).(*array.Uint64)
	seen := make(map[uint64]bool, ids.Len())
	for i := 0; i < ids.Len(); i++ {
		id := ids.Value(i)
		if _, ok := r.trainIDs[id]; !ok {
			return plugin.BadInput(&arrowio.DataError{File: r.Truth, Column: arrowio.ColSampleID, Row: int64(i),
				Msg: fmt.Sprintf("sample_id %d is not in --train %s (%d rows): is this the truth of another training set?", id, r.Train, len(r.trainIDs))})
		}
		seen[id] = true
	}
	if len(seen) < len(r.trainIDs) {
		missing, row := uint64(0), int64(math.MaxInt64)
		for id, rw := range r.trainIDs {
			if !seen[id] && rw < row {
				missing, row = id, rw
			}
		}
		return plugin.BadInput(&arrowio.DataError{File: r.Train, Column: arrowio.ColSampleID, Row: row,
			Msg: fmt.Sprintf("sample_id %d has no row in --truth %s (%d of %d training rows have none)", missing, r.Truth, len(r.trainIDs)-len(seen), len(r.trainIDs))})
	}
	return nil
}

// classList writes the first ten of total classes as "3, 5, 7" (then a
// count of the rest).
func classList(cs []int, total int) string {
	var b strings.Builder
	for i, c := range cs {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", total-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, c)
	}
	return b.String()
}

// checkSpec checks the eval spec against the test set before any stage
// runs: the target is one of its labels and the trigger fits its first
// image (evaluation would otherwise refuse them only after the whole
// pipeline ran).
func (r *Run) checkSpec(ctx context.Context) error {
	if len(r.Spec) == 0 || r.Test == "" {
		return nil
	}
	spec, err := attack.ParseSpec(r.Spec)
	if err != nil {
		return plugin.BadInputf("eval spec: %v", err)
	}
	rr, err := arrowio.OpenDataset(ctx, r.Test, r.testRead)
	if err != nil {
		return err
	}
	defer rr.Release()
	maxLabel, w, h := int64(-1), 0, 0
	for rr.Next() {
		rec := rr.Record()
		s := rec.Schema()
		labels, ok := rec.Column(s.FieldIndices(arrowio.ColLabel)[0]).(*array.Int32)
		if !ok {
			return nil // not an images/v1 table: evaluation names the problem
		}
		for i := 0; i < labels.Len(); i++ {
			maxLabel = max(maxLabel, int64(labels.Value(i)))
		}
		if w == 0 {
			if imgs, ok := rec.Column(s.FieldIndices(arrowio.ColImage)[0]).(*array.Binary); ok && imgs.Len() > 0 {
				if cfg, _, err := image.DecodeConfig(bytes.NewReader(imgs.Value(0))); err == nil {
					w, h = cfg.Width, cfg.Height
				}
			}
		}
	}
	if err := rr.Err(); err != nil {
		return err
	}
	if int64(spec.Target) > maxLabel {
		return plugin.BadInputf("eval spec: target %d, but the labels of %s go to %d", spec.Target, r.Test, maxLabel)
	}
	if w > 0 {
		if err := spec.Trigger.Fits(w, h); err != nil {
			return plugin.BadInputf("eval spec: %v (the images of %s)", err, r.Test)
		}
	}
	return nil
}

// Execute runs the pipeline into the run folder, writes samples.parquet,
// channels.parquet, report.json and report.html there, and returns the
// summary. The pipeline is bound (it changes r.Pipeline).
func (r *Run) Execute(ctx context.Context) (*report.Summary, error) {
	start := time.Now()
	p := r.Pipeline
	inputs := map[string]string{}
	given := map[string]string{"train": r.Train, "test": r.Test}
	for _, name := range p.Inputs() {
		v, known := given[name]
		if !known {
			return nil, plugin.BadInputf("pipeline %q needs input %q, which a run does not provide (inputs: train, test)", p.Name, name)
		}
		if v == "" {
			return nil, plugin.BadInputf("pipeline %q needs --%s", p.Name, name)
		}
		inputs[name] = v
	}
	if r.Truth != "" {
		r.trainIDs = map[uint64]int64{}
	}
	r.testRead = r.Read
	classes, err := r.checkLabels(ctx) // also sets testRead.Classes
	if err != nil {
		return nil, err
	}
	if err := r.checkSpec(ctx); err != nil {
		return nil, err
	}
	if err := r.checkTruth(); err != nil {
		return nil, err
	}
	if classes != nil {
		lg := zerolog.Ctx(ctx)
		lg.Info().Int("classes", classes.N).Ints("rows", classes.Rows).Msg("training labels checked")
		if classes.TinyImages > 0 {
			lg.Warn().Int("images", classes.TinyImages).Str("smallest", classes.Smallest).
				Msgf("%d training image(s) under %dx%d pixels (the smallest %s): the encoder sees them blown up to its input size", classes.TinyImages, report.TinyImage, report.TinyImage, classes.Smallest)
		}
		if len(classes.Small) > 0 {
			lg.Warn().Ints("classes", classes.Small).Msgf("%d class(es) with fewer than %d training rows: the classifier can hardly learn them", len(classes.Small), SmallClass)
		}
	}
	b := r.Bindings
	b.Classes = r.Classes
	b.RunDir = r.Out
	if b.Export == "" {
		b.Export = filepath.Join(r.Out, "clean_model.onnx")
	}
	if err := p.Bind(r.Stages, b); err != nil {
		return nil, err
	}
	res, err := (&dag.Runner{Stages: r.Stages, Observer: r.Observer, Read: r.Read, NodeTimeout: r.StageTimeout, Clear: report.RunFiles}).Run(ctx, p, inputs, r.Out)
	if err != nil {
		return nil, err
	}
	s := report.NewSummary(p.Name, res)
	logWarnings(ctx, s)
	s.Classes = classes
	s.Inputs = map[string]string{"train": r.Train, "test": r.Test}
	s.Encoder = b.Encoder
	if b.Seed != nil {
		s.Seed = *b.Seed
	}
	if s.Samples, err = WriteSamples(res); err != nil {
		return nil, fmt.Errorf("samples.parquet: %w", err)
	}
	if s.Channels, err = WriteChannels(res); err != nil {
		return nil, fmt.Errorf("channels.parquet: %w", err)
	}
	model := filepath.Join(res.Dir, "clean_model.onnx")
	if _, err := os.Stat(model); err == nil {
		s.Model = model
		if r.Test != "" {
			e := Eval{Model: model, Data: r.Test, Device: b.Device, Read: r.testRead, Spec: r.Spec, Truth: r.Truth}
			if classes != nil {
				e.Classes = classes.N
			}
			if samples := filepath.Join(res.Dir, report.SamplesFile); r.Truth != "" {
				e.Samples = samples
			}
			ev, err := e.Run(ctx)
			if err != nil {
				return nil, fmt.Errorf("evaluating %s on %s: %w", model, r.Test, err)
			}
			s.ACC, s.ASR = &ev.ACC, ev.ASR
			s.Evaluation = &ev.Result
			if r.Reference {
				if s.Reference, err = r.reference(ctx, p, res, b, e.Classes); err != nil {
					return nil, err
				}
			}
		}
	}
	s.Seconds = time.Since(start).Seconds()
	if err := report.WriteSummary(res.Dir, s); err != nil {
		return nil, err
	}
	page, err := report.Load(res.Dir, r.Truth)
	if err != nil {
		return nil, fmt.Errorf("report.html: %w", err)
	}
	if err := report.Write(filepath.Join(res.Dir, report.PageFile), []*report.Run{page}); err != nil {
		return nil, fmt.Errorf("report.html: %w", err)
	}
	return s, nil
}

// Poison plants an attack in a training set with the poison stage (a
// cached DAG run in dir): recipe holds the poison stage's trigger, target
// and clean_label; rate and seed complete it. It returns the poisoned
// images and their ground truth (files in dir).
func Poison(ctx context.Context, stages dag.Provider, obs dag.Observer, train string, recipe json.RawMessage, rate float64, seed int64, dir string) (images, truth string, err error) {
	params := map[string]json.RawMessage{}
	if err := json.Unmarshal(recipe, &params); err != nil {
		return "", "", plugin.BadInputf("poison recipe: %v", err)
	}
	params["rate"], _ = json.Marshal(rate)
	params["seed"], _ = json.Marshal(seed)
	raw, _ := json.Marshal(params)
	p, _ := pipelines.Get("poison")
	for i := range p.Nodes {
		if p.Nodes[i].Stage == "poison" {
			p.Nodes[i].Params = raw
		}
	}
	if err := p.Bind(stages, dag.Bindings{RunDir: dir}); err != nil {
		return "", "", err
	}
	res, err := (&dag.Runner{Stages: stages, Observer: obs}).Run(ctx, p, map[string]string{"train": train}, dir)
	if err != nil {
		return "", "", err
	}
	images, _ = res.OutputPath("poison", "images")
	truth, _ = res.OutputPath("poison", "truth")
	return images, truth, nil
}

// outputsOfKind lists the run's output files of a kind, in node order.
func outputsOfKind(res *dag.Result, kind arrowio.Kind) []string {
	var out []string
	for _, id := range res.Order {
		n := res.Nodes[id]
		ports := make([]string, 0, len(n.Outputs))
		for p := range n.Outputs {
			ports = append(ports, p)
		}
		sort.Strings(ports)
		for _, port := range ports {
			full, _ := res.OutputPath(id, port)
			if kindOfFile(full) == kind {
				out = append(out, full)
			}
		}
	}
	return out
}

// WriteSamples writes samples.parquet: every scores/v1 output of the run
// joined by sample_id (rows in the order of the first), and returns the
// counts of rows, seeds, trusted and kept samples (the columns the
// evaluate stage reads by default: evaluate.DefaultColumns).
func WriteSamples(res *dag.Result) (report.Counts, error) {
	paths := outputsOfKind(res, arrowio.KindScores)
	var counts report.Counts
	if len(paths) == 0 {
		return counts, nil
	}
	type col struct {
		field arrow.Field
		vals  map[uint64]any
	}
	var ids []uint64
	var cols []col
	for k, path := range paths {
		r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
		if err != nil {
			return counts, err
		}
		s := r.Schema()
		base := len(cols)
		for _, f := range s.Fields()[1:] {
			cols = append(cols, col{field: f, vals: map[uint64]any{}})
		}
		for r.Next() {
			rec := r.Record()
			rid := rec.Column(0).(*array.Uint64).Uint64Values()
			if k == 0 {
				ids = append(ids, rid...)
			}
			for c := 1; c < int(rec.NumCols()); c++ {
				cc := cols[base+c-1]
				a := rec.Column(c)
				for i, id := range rid {
					if a.IsNull(i) {
						continue
					}
					switch a := a.(type) {
					case *array.Float32:
						cc.vals[id] = a.Value(i)
					case *array.Int32:
						cc.vals[id] = a.Value(i)
					case *array.Boolean:
						cc.vals[id] = a.Value(i)
					}
				}
			}
		}
		err = r.Err()
		r.Release()
		if err != nil {
			return counts, err
		}
	}
	// The training rows' labels and positions in --train, for readers of
	// samples.parquet who join it back to their data.
	if src := trainTable(res); src != "" {
		label := col{field: arrow.Field{Name: "train.label", Type: arrow.PrimitiveTypes.Int32}, vals: map[uint64]any{}}
		row := col{field: arrow.Field{Name: "train.row", Type: arrow.PrimitiveTypes.Int32}, vals: map[uint64]any{}}
		r, err := arrowio.OpenDataset(context.Background(), src, arrowio.ReadOptions{})
		if err != nil {
			return counts, err
		}
		n := int32(0)
		for r.Next() {
			rec := r.Record()
			rid := rec.Column(0).(*array.Uint64).Uint64Values()
			lab := rec.Column(1).(*array.Int32)
			for i, id := range rid {
				label.vals[id], row.vals[id] = lab.Value(i), n
				n++
			}
		}
		err = r.Err()
		r.Release()
		if err != nil {
			return counts, err
		}
		cols = append([]col{label, row}, cols...)
	}
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = c.field
		fields[i].Nullable = true
	}
	schema, err := arrowio.ScoresSchema(fields...)
	if err != nil {
		return counts, err
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Uint64Builder).AppendValues(ids, nil)
	for i, c := range cols {
		fb := b.Field(i + 1)
		for _, id := range ids {
			v, ok := c.vals[id]
			switch {
			case !ok:
				fb.AppendNull()
			case c.field.Type.ID() == arrow.FLOAT32:
				fb.(*array.Float32Builder).Append(v.(float32))
			case c.field.Type.ID() == arrow.INT32:
				fb.(*array.Int32Builder).Append(v.(int32))
			default:
				fb.(*array.BooleanBuilder).Append(v.(bool))
				if v.(bool) {
					switch c.field.Name {
					case evaluate.DefaultColumns["seed"]:
						counts.Seed++
					case evaluate.DefaultColumns["trusted"]:
						counts.Trusted++
					case evaluate.DefaultColumns["kept"]:
						counts.Kept++
					}
				}
			}
		}
	}
	counts.Total = len(ids)
	rec := b.NewRecord()
	defer rec.Release()
	rr, _ := array.NewRecordReader(schema, []arrow.Record{rec})
	defer rr.Release()
	_, err = arrowio.WriteParquet(filepath.Join(res.Dir, report.SamplesFile), rr)
	return counts, err
}

// logWarnings logs the warnings stages return in their metrics, which
// would otherwise show only in report.json.
func logWarnings(ctx context.Context, s *report.Summary) {
	lg := zerolog.Ctx(ctx)
	for _, w := range s.Warnings() {
		lg.Warn().Str("node", w.Node).Str("stage", w.Stage).Msg(w.Msg)
	}
}

// trainTable returns the run's copy of --train (the output of the input
// node that reads "train"), or "".
func trainTable(res *dag.Result) string {
	for id, n := range res.Nodes {
		if n.Input == "train" {
			if p, ok := res.OutputPath(id, dag.InputPort); ok {
				return p
			}
		}
	}
	return ""
}

// WriteChannels writes channels.parquet (the run's channels/v1 output, or
// an empty table) and returns its counts.
func WriteChannels(res *dag.Result) (report.ChannelCounts, error) {
	var counts report.ChannelCounts
	var rr array.RecordReader
	if paths := outputsOfKind(res, arrowio.KindChannels); len(paths) > 0 {
		r, err := arrowio.OpenDataset(context.Background(), paths[len(paths)-1], arrowio.ReadOptions{})
		if err != nil {
			return counts, err
		}
		var recs []arrow.Record
		for r.Next() {
			rec := r.Record()
			rec.Retain()
			recs = append(recs, rec)
			keep := rec.Column(2).(*array.Boolean)
			for i := 0; i < keep.Len(); i++ {
				counts.Total++
				if !keep.Value(i) {
					counts.Filtered++
				}
			}
		}
		r.Release()
		rr, _ = array.NewRecordReader(arrowio.ChannelsSchema(), recs)
		for _, rec := range recs {
			rec.Release()
		}
	} else {
		rr, _ = array.NewRecordReader(arrowio.ChannelsSchema(), nil)
	}
	defer rr.Release()
	_, err := arrowio.WriteParquet(filepath.Join(res.Dir, report.ChannelsFile), rr)
	return counts, err
}

func kindOfFile(path string) arrowio.Kind {
	r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
	if err != nil {
		return ""
	}
	defer r.Release()
	k, _ := arrowio.KindOf(r.Schema())
	return k
}

// EvalResult is what an evaluation measured (and tcore eval prints).
type EvalResult struct {
	Model    string  `json:"model"`
	Data     string  `json:"data"`
	Correct  int64   `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	evaluate.Result
}

// Eval is one evaluation: the model, the test data and, where given, the
// eval spec, the run's samples and the ground truth.
type Eval struct {
	Model, Data, Output, Device string
	Batch, Threads              int // 0: 256 images per batch, one thread per core
	Read                        arrowio.ReadOptions
	Spec                        json.RawMessage // eval spec, or nil
	Samples, Truth              string          // files, or ""
	// Classes is the classifier's number of classes (0: the test labels'
	// largest + 1); its output must be that wide.
	Classes int
}

// Run evaluates through the evaluate stage, in process.
func (e Eval) Run(ctx context.Context) (*EvalResult, error) {
	if e.Batch == 0 {
		e.Batch = 256
	}
	in := plugin.NewTables()
	defer in.Release()
	r, err := arrowio.OpenDataset(ctx, e.Data, e.Read)
	if err != nil {
		return nil, err
	}
	err = putAll(in, "test", r)
	r.Release()
	if err != nil {
		return nil, err
	}
	if e.Samples != "" {
		if err := putFile(ctx, in, "samples", e.Samples); err != nil {
			return nil, err
		}
	}
	if e.Truth != "" {
		t, err := arrowio.ReadTruth(e.Truth)
		if err != nil {
			return nil, err
		}
		in.Put("truth", t.Schema(), t)
		t.Release()
	}
	absModel, _ := filepath.Abs(e.Model)
	spec := e.Spec
	if len(spec) == 0 {
		spec = json.RawMessage("null")
	}
	device := e.Device
	if device == "" {
		device = "cpu"
	}
	params, _ := json.Marshal(map[string]any{"model": absModel, "output": e.Output, "spec": spec,
		"device": device, "batch_size": e.Batch, "threads": e.Threads, "classes": e.Classes})
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(evaluate.New()).Run(ctx, params, in, out, nil)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(m)
	res := &EvalResult{Model: e.Model, Data: e.Data}
	if err := json.Unmarshal(b, &res.Result); err != nil {
		return nil, err
	}
	res.Accuracy = res.ACC
	res.Correct = int64(math.Round(res.ACC * float64(res.N)))
	return res, nil
}

func putFile(ctx context.Context, in *plugin.Tables, port, path string) error {
	r, err := arrowio.OpenDataset(ctx, path, arrowio.ReadOptions{})
	if err != nil {
		return err
	}
	defer r.Release()
	return putAll(in, port, r)
}

func putAll(in *plugin.Tables, port string, r array.RecordReader) error {
	var recs []arrow.Record
	for r.Next() {
		recs = append(recs, r.Record())
		r.Record().Retain()
	}
	in.Put(port, r.Schema(), recs...)
	for _, rec := range recs {
		rec.Release()
	}
	return r.Err()
}
