// Package evaluate scores an exported classifier: ACC on a clean test set;
// ASR from an eval spec (the trigger applied to the test images that are
// not of the target class, counted when the model says target); and, with
// ground truth, the purity of the seed, trusted and kept sets and how well
// "not kept" detects poison. It is the only stage that reads an eval spec or
// ground truth.
package evaluate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Stage is the evaluate stage.
type Stage struct{}

// New returns the evaluate stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "evaluate",
		Version: "0.2.0",
		Inputs: []plugin.PortSpec{
			{Name: "test", Kind: arrowio.KindImages, Doc: "the clean, labelled test set"},
			{Name: "samples", Kind: arrowio.KindScores, Optional: true, Doc: "the defence's per-sample decisions (seed, trusted and kept columns)"},
			{Name: "truth", Kind: arrowio.KindTruth, Optional: true, Doc: "ground truth of the training set"},
		},
		Outputs: []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "per test image: evaluate.pred, evaluate.triggered_pred (-1: target class or no spec)"}},
		Params: plugin.ParamsOf(Params{Spec: json.RawMessage("null"), BatchSize: 256, Device: "cpu",
			Columns: DefaultColumns}),
	}
}

// Params are evaluate's parameters.
type Params struct {
	Model     string            `json:"model" role:"file" doc:"the classifier (ONNX: image in, logits out)"`
	Output    string            `json:"output" doc:"its logits output (default: logits or the only rank-2 output)"`
	Spec      json.RawMessage   `json:"spec" doc:"eval spec {target, trigger} for the ASR (null: no ASR)"`
	Columns   map[string]string `json:"columns" doc:"boolean columns of the samples input whose purity is measured; kept also makes the detector"`
	BatchSize int               `json:"batch_size" range:"[1,)" doc:"images per batch"`
	Threads   int               `json:"threads" range:"[0,)" doc:"ONNX Runtime threads (0: one per core)"`
	Device    string            `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`
	Classes   int               `json:"classes" role:"classes" range:"[0,)" doc:"classes of the classifier (0: the test labels' largest + 1): its output must have one value per class"`

	spec *attack.Spec
}

// DefaultColumns are the boolean columns of the T-Core stages whose purity
// is measured by default: the seed, trusted and kept sets. Callers must not
// change the map.
var DefaultColumns = map[string]string{"seed": "sift.seed", "trusted": "expand.trusted", "kept": "bootstrap.kept"}

// Check implements plugin.Checker.
func (p *Params) Check() error {
	if p.Model == "" {
		return plugin.BadInputf("parameter \"model\": no model given")
	}
	if len(p.Spec) > 0 && string(p.Spec) != "null" {
		s, err := attack.ParseSpec(p.Spec)
		if err != nil {
			return plugin.BadInputf("parameter \"spec\": %v", err)
		}
		p.spec = &s
	}
	return ort.CheckDevice(p.Device)
}

// Result is what evaluate measures (its metrics).
type Result struct {
	N        int64              `json:"n"`
	ACC      float64            `json:"acc"`
	PerClass map[string]float64 `json:"per_class_acc"`
	ASR      *float64           `json:"asr"`
	ASRN     int64              `json:"asr_n,omitempty"`
	Target   *int               `json:"target,omitempty"`
	Sets     map[string]Set     `json:"sets,omitempty"`
	Detector *Detector          `json:"detector,omitempty"`
}

// Set is the size and purity of one selected set.
type Set struct {
	N        int     `json:"n"`
	Poisoned int     `json:"poisoned"`
	Purity   float64 `json:"purity"`
}

// Detector scores "not kept" as a poison detector.
type Detector struct {
	Flagged   int     `json:"flagged"`
	Poisoned  int     `json:"poisoned"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
}

// Run implements plugin.Stage.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	enc, err := encoder.Open(p.Model, encoder.Config{Embedding: p.Output, Layers: []string{}, ORT: ort.Options{Device: p.Device, Threads: p.Threads}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	pre := encoder.ForEncoder(enc)
	r, err := in.Open("test")
	if err != nil {
		return nil, err
	}
	test, err := arrowio.Hold(r) // read twice: clean, then triggered
	r.Release()
	if err != nil {
		return nil, plugin.PortError("test", err)
	}
	defer test.Release()

	clean := newScorer(-1)
	if err := stream(ctx, test, enc, pre, p.BatchSize, clean, nil, progress); err != nil {
		return nil, err
	}
	classes, how := p.Classes, "declared"
	if classes == 0 {
		classes, how = int(clean.maxLabel)+1, "the test labels' largest + 1"
	}
	if clean.n > 0 && enc.Dim != classes {
		return nil, plugin.BadInputf("parameter \"model\": %s gives %d values per image, but there are %d classes (%s): not a classifier of these classes (an encoder?); declare the classes with --classes if the test set lacks some",
			filepath.Base(p.Model), enc.Dim, classes, how)
	}
	res := &Result{N: clean.n, PerClass: map[string]float64{}}
	if clean.n > 0 {
		res.ACC = float64(clean.ok) / float64(clean.n)
	}
	for l, n := range clean.perN {
		res.PerClass[strconv.Itoa(int(l))] = float64(clean.perOK[l]) / float64(n)
	}
	var trig *scorer
	if p.spec != nil {
		if int(clean.maxLabel) < p.spec.Target {
			return nil, plugin.BadInputf("parameter \"spec\": target %d, but the test set's labels go to %d", p.spec.Target, clean.maxLabel)
		}
		trig = newScorer(int32(p.spec.Target))
		if err := stream(ctx, test, enc, pre, p.BatchSize, trig, p.spec, progress); err != nil {
			return nil, err
		}
		asr := 0.0
		if trig.n > 0 {
			asr = float64(trig.ok) / float64(trig.n)
		}
		res.ASR, res.ASRN, res.Target = &asr, trig.n, &p.spec.Target
	}
	if err := s.purity(in, p, res); err != nil {
		return nil, err
	}
	if err := writeScores(out, clean, trig); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(res)
	var m plugin.Metrics
	_ = json.Unmarshal(b, &m)
	return m, nil
}

// stream runs the test set through the classifier into sc; with a spec,
// only the non-target images, triggered and labelled as the target.
func stream(ctx context.Context, test *arrowio.Held, enc *encoder.Encoder, pre encoder.Preprocess, batch int, sc *scorer, spec *attack.Spec, progress plugin.Progress) error {
	r, err := test.Reader()
	if err != nil {
		return err
	}
	defer r.Release()
	if spec != nil {
		r = &triggered{src: r, spec: spec, refs: 1}
		defer r.Release()
	}
	_, err = enc.Stream(ctx, array.RecordReader(r), sc, pre, batch, progress)
	if err != nil {
		return plugin.PortError("test", err)
	}
	return nil
}

// triggered is a RecordReader over the non-target rows of src with the
// trigger applied and the target label.
type triggered struct {
	src  array.RecordReader
	spec *attack.Spec
	cur  arrow.Record
	err  error
	row  int64
	refs int64
}

func (t *triggered) Retain() { t.refs++ }
func (t *triggered) Release() {
	t.refs--
	if t.refs == 0 && t.cur != nil {
		t.cur.Release()
		t.cur = nil
	}
}
func (t *triggered) Schema() *arrow.Schema { return t.src.Schema() }
func (t *triggered) Record() arrow.Record  { return t.cur }
func (t *triggered) Err() error {
	if t.err != nil {
		return t.err
	}
	return t.src.Err()
}

func (t *triggered) Next() bool {
	if t.cur != nil {
		t.cur.Release()
		t.cur = nil
	}
	for t.err == nil && t.src.Next() {
		rec := t.src.Record()
		ids := rec.Column(0).(*array.Uint64)
		labels := rec.Column(1).(*array.Int32)
		imgs := rec.Column(2).(*array.Binary)
		b := array.NewRecordBuilder(memory.DefaultAllocator, rec.Schema())
		for i := 0; i < int(rec.NumRows()); i++ {
			if int(labels.Value(i)) == t.spec.Target {
				continue
			}
			img, err := t.spec.Trigger.ApplyBytes(imgs.Value(i))
			if err != nil {
				t.err = plugin.BadInput(&arrowio.DataError{File: "input port test", Column: "image", Row: t.row + int64(i),
					Msg: fmt.Sprintf("sample_id %d: %v", ids.Value(i), err)})
				break
			}
			b.Field(0).(*array.Uint64Builder).Append(ids.Value(i))
			b.Field(1).(*array.Int32Builder).Append(int32(t.spec.Target))
			b.Field(2).(*array.BinaryBuilder).Append(img)
		}
		t.row += rec.NumRows()
		out := b.NewRecord()
		b.Release()
		if t.err != nil {
			out.Release()
			return false
		}
		if out.NumRows() > 0 {
			t.cur = out
			return true
		}
		out.Release()
	}
	return false
}

// scorer is a RecordWriter of logits (features/v1) that counts correct
// argmax predictions and keeps each row's prediction.
type scorer struct {
	target      int32
	n, ok       int64
	perN, perOK map[int32]int64
	maxLabel    int32
	ids         []uint64
	preds       []int32
}

func newScorer(target int32) *scorer {
	return &scorer{target: target, perN: map[int32]int64{}, perOK: map[int32]int64{}, maxLabel: -1}
}

func (s *scorer) Close() error { return nil }
func (s *scorer) Write(rec arrow.Record) error {
	ids := rec.Column(0).(*array.Uint64)
	labels := rec.Column(1).(*array.Int32).Int32Values()
	l := rec.Column(2).(*array.FixedSizeList)
	k := int(l.DataType().(*arrow.FixedSizeListType).Len())
	vals := l.ListValues().(*array.Float32).Float32Values()[l.Offset()*k:]
	for i, y := range labels {
		row := vals[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		s.ids = append(s.ids, ids.Value(i))
		s.preds = append(s.preds, int32(best))
		s.n++
		s.perN[y]++
		s.maxLabel = max(s.maxLabel, y)
		if int32(best) == y {
			s.ok++
			s.perOK[y]++
		}
	}
	return nil
}

func writeScores(out plugin.Outputs, clean, trig *scorer) error {
	tp := map[uint64]int32{}
	if trig != nil {
		for i, id := range trig.ids {
			tp[id] = trig.preds[i]
		}
	}
	tpred := make([]int32, len(clean.ids))
	for i, id := range clean.ids {
		tpred[i] = -1
		if v, ok := tp[id]; ok {
			tpred[i] = v
		}
	}
	schema, err := arrowio.ScoresSchema(
		arrow.Field{Name: "evaluate.pred", Type: arrow.PrimitiveTypes.Int32},
		arrow.Field{Name: "evaluate.triggered_pred", Type: arrow.PrimitiveTypes.Int32})
	if err != nil {
		return err
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Uint64Builder).AppendValues(clean.ids, nil)
	b.Field(1).(*array.Int32Builder).AppendValues(clean.preds, nil)
	b.Field(2).(*array.Int32Builder).AppendValues(tpred, nil)
	rec := b.NewRecord()
	defer rec.Release()
	w, err := out.Create("scores", schema)
	if err != nil {
		return err
	}
	if err := w.Write(rec); err != nil {
		return err
	}
	return w.Close()
}

// purity measures the sets of the samples input against the truth.
func (s Stage) purity(in plugin.Inputs, p Params, res *Result) error {
	truth, err := readTruth(in)
	if err != nil || truth == nil {
		return err
	}
	cols, ids, err := readBools(in)
	if err != nil || cols == nil {
		return err
	}
	for _, id := range ids {
		if _, ok := truth[id]; !ok {
			return plugin.PortError("truth", plugin.BadInputf("sample_id %d of the samples input has no ground truth", id))
		}
	}
	res.Sets = map[string]Set{}
	names := make([]string, 0, len(p.Columns))
	for k := range p.Columns {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		col, ok := cols[p.Columns[name]]
		if !ok {
			continue
		}
		var set Set
		var det Detector
		totalPoison := 0
		for i, id := range ids {
			poisoned := truth[id]
			if poisoned {
				totalPoison++
			}
			if col[i] {
				set.N++
				if poisoned {
					set.Poisoned++
				}
			} else {
				det.Flagged++
				if poisoned {
					det.Poisoned++
				}
			}
		}
		set.Purity = 1
		if set.N > 0 {
			set.Purity = 1 - float64(set.Poisoned)/float64(set.N)
		}
		res.Sets[name] = set
		if name == "kept" {
			if det.Flagged > 0 {
				det.Precision = float64(det.Poisoned) / float64(det.Flagged)
			}
			if totalPoison > 0 {
				det.Recall = float64(det.Poisoned) / float64(totalPoison)
			}
			res.Detector = &det
		}
	}
	return nil
}

func readTruth(in plugin.Inputs) (map[uint64]bool, error) {
	r, err := in.Open("truth")
	if errors.Is(err, plugin.ErrNotConnected) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Release()
	out := map[uint64]bool{}
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		ps := rec.Column(1).(*array.Boolean)
		for i := 0; i < ids.Len(); i++ {
			out[ids.Value(i)] = ps.Value(i)
		}
	}
	return out, r.Err()
}

// readBools reads every boolean column of the samples input.
func readBools(in plugin.Inputs) (map[string][]bool, []uint64, error) {
	r, err := in.Open("samples")
	if errors.Is(err, plugin.ErrNotConnected) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer r.Release()
	cols := map[string][]bool{}
	var ids []uint64
	for r.Next() {
		rec := r.Record()
		id := rec.Column(0).(*array.Uint64)
		for i := 0; i < id.Len(); i++ {
			ids = append(ids, id.Value(i))
		}
		for c := 1; c < int(rec.NumCols()); c++ {
			b, ok := rec.Column(c).(*array.Boolean)
			if !ok {
				continue
			}
			name := rec.Schema().Field(c).Name
			for i := 0; i < b.Len(); i++ {
				cols[name] = append(cols[name], b.IsValid(i) && b.Value(i))
			}
		}
	}
	return cols, ids, r.Err()
}
