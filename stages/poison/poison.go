// Package poison is the attack kit's stage: it plants a backdoor in a
// training set, for benchmarks and the demo. A share of the rows get the
// trigger (re-encoded as PNG so it survives) and, unless the attack is
// clean-label, the target label. Which rows were poisoned leaves on a
// separate truth/v1 port that only evaluation reads.
package poison

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/attack"
)

// Stage is the poison stage.
type Stage struct{}

// New returns the poison stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "poison",
		Version: "0.1.0",
		Inputs:  []plugin.PortSpec{{Name: "images", Kind: arrowio.KindImages, Doc: "the clean training set"}},
		Outputs: []plugin.PortSpec{
			{Name: "images", Kind: arrowio.KindImages, Doc: "the training set with the poisoned rows (PNG)"},
			{Name: "truth", Kind: arrowio.KindTruth, Doc: "which rows are poisoned and their original labels (for evaluation only)"},
		},
		Params:       plugin.ParamsOf(Params{Trigger: json.RawMessage("null"), Rate: 0.1, Seed: 1}),
		NeedsAllRows: true,
	}
}

// Params are poison's parameters.
type Params struct {
	Trigger    json.RawMessage `json:"trigger" doc:"trigger spec (docs/ALGORITHM.md): patch, blend, sig or wanet"`
	Target     int32           `json:"target" range:"[0,)" doc:"target class"`
	Rate       float64         `json:"rate" range:"[0,1]" doc:"poisoned share of all rows"`
	CleanLabel bool            `json:"clean_label" doc:"poison target-class rows and keep their labels (SIG-style)"`
	Seed       uint64          `json:"seed" role:"seed" doc:"random seed of the row choice"`

	trigger attack.Trigger
}

// Check implements plugin.Checker.
func (p *Params) Check() error {
	if len(p.Trigger) == 0 || string(p.Trigger) == "null" {
		return plugin.BadInputf("parameter \"trigger\": missing (a trigger spec, e.g. {\"kind\": \"patch\", \"size\": 3, \"row\": 29, \"col\": 29})")
	}
	t, err := attack.ParseTrigger(p.Trigger, "trigger")
	if err != nil {
		return plugin.BadInputf("parameter %v", err)
	}
	p.trigger = t
	return nil
}

// Run implements plugin.Stage. Metrics: rows, poisoned, per-class counts
// of the poisoned rows' original labels.
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p Params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	r, err := in.Open("images")
	if err != nil {
		return nil, err
	}
	defer r.Release()
	schema := r.Schema()
	var recs []arrow.Record
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	var labels []int32
	for r.Next() {
		rec := r.Record()
		rec.Retain()
		recs = append(recs, rec)
		l := rec.Column(1).(*array.Int32)
		for i := 0; i < l.Len(); i++ {
			labels = append(labels, l.Value(i))
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	var pool []int
	for i, l := range labels {
		if (l == p.Target) == p.CleanLabel {
			pool = append(pool, i)
		}
	}
	want := int(math.Round(p.Rate * float64(len(labels))))
	if want > len(pool) {
		what := "rows outside the target class"
		if p.CleanLabel {
			what = "rows of the target class (clean-label poisons only those)"
		}
		return nil, plugin.BadInputf("parameter \"rate\": %v of %d rows is %d poisoned rows, but there are only %d %s", p.Rate, len(labels), want, len(pool), what)
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x706f69736f6e))
	rng.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
	chosen := make([]bool, len(labels))
	for _, i := range pool[:want] {
		chosen[i] = true
	}

	imgW, err := out.Create("images", schema)
	if err != nil {
		return nil, err
	}
	truthW, err := out.Create("truth", arrowio.TruthSchema())
	if err != nil {
		return nil, err
	}
	row := 0
	perClass := map[string]int{}
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ids := rec.Column(0).(*array.Uint64)
		imgs := rec.Column(2).(*array.Binary)
		ib := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		tb := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.TruthSchema())
		for i := 0; i < int(rec.NumRows()); i++ {
			id, label, img := ids.Value(i), labels[row], imgs.Value(i)
			if chosen[row] {
				b, err := p.trigger.ApplyBytes(img)
				if err != nil {
					ib.Release()
					tb.Release()
					return nil, plugin.PortError("images", plugin.BadInput(&arrowio.DataError{
						File: "input port images", Column: "image", Row: int64(row),
						Msg: fmt.Sprintf("sample_id %d: %v", id, err)}))
				}
				img = b
				perClass[fmt.Sprint(label)]++
				if !p.CleanLabel {
					label = p.Target
				}
			}
			ib.Field(0).(*array.Uint64Builder).Append(id)
			ib.Field(1).(*array.Int32Builder).Append(label)
			ib.Field(2).(*array.BinaryBuilder).Append(img)
			tb.Field(0).(*array.Uint64Builder).Append(id)
			tb.Field(1).(*array.BooleanBuilder).Append(chosen[row])
			tb.Field(2).(*array.Int32Builder).Append(labels[row])
			row++
		}
		if err := writeBuilt(imgW, ib); err != nil {
			tb.Release()
			return nil, err
		}
		if err := writeBuilt(truthW, tb); err != nil {
			return nil, err
		}
		progress.Report(plugin.Event{Done: int64(row), Total: int64(len(labels)), Unit: "rows"})
	}
	if err := imgW.Close(); err != nil {
		return nil, err
	}
	if err := truthW.Close(); err != nil {
		return nil, err
	}
	return plugin.Metrics{"rows": len(labels), "poisoned": want, "target": p.Target, "clean_label": p.CleanLabel,
		"trigger": p.trigger, "poisoned_by_original_class": perClass}, nil
}

// writeBuilt writes the builder's record and releases both.
func writeBuilt(w plugin.RecordWriter, b *array.RecordBuilder) error {
	rec := b.NewRecord()
	b.Release()
	defer rec.Release()
	return w.Write(rec)
}
