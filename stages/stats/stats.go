// Package stats is the smallest real tcore stage: it counts rows per class
// of an images/v1 table and reads every image's header, writing each
// image's size as scores/v1. It proves the plugin plumbing end to end.
package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// Stage counts rows per class.
type Stage struct{}

// New returns the stats stage.
func New() plugin.Stage { return Stage{} }

// Spec implements plugin.Stage.
func (Stage) Spec() plugin.Spec {
	return plugin.Spec{
		Name:    "stats",
		Version: "0.1.0",
		Inputs:  []plugin.PortSpec{{Name: "images", Kind: arrowio.KindImages, Doc: "the dataset"}},
		Outputs: []plugin.PortSpec{{Name: "scores", Kind: arrowio.KindScores, Doc: "stats.width, stats.height per sample"}},
		Params:  plugin.ParamsOf(params{}),
	}
}

type params struct {
	MinPerClass int `json:"min_per_class" range:"[0,)" doc:"fail when a class has fewer rows (0: no check)"`
}

var scoresSchema = func() *arrow.Schema {
	s, err := arrowio.ScoresSchema(
		arrow.Field{Name: "stats.width", Type: arrow.PrimitiveTypes.Int32},
		arrow.Field{Name: "stats.height", Type: arrow.PrimitiveTypes.Int32},
	)
	if err != nil {
		panic(err)
	}
	return s
}()

// Run implements plugin.Stage. Metrics: rows, classes (label -> rows),
// image_bytes, formats (png/jpeg -> rows).
func (s Stage) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p params
	if err := plugin.DecodeParams(s.Spec(), raw, &p); err != nil {
		return nil, err
	}
	r, err := in.Open("images")
	if err != nil {
		return nil, err
	}
	defer r.Release()
	w, err := out.Create("scores", scoresSchema)
	if err != nil {
		return nil, err
	}
	classes := map[int32]int64{}
	formats := map[string]int64{}
	var rows, nbytes int64
	for r.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		labels := rec.Column(1).(*array.Int32)
		imgs := rec.Column(2).(*array.Binary)
		b := array.NewRecordBuilder(memory.DefaultAllocator, scoresSchema)
		wb := b.Field(0).(*array.Uint64Builder)
		widths := b.Field(1).(*array.Int32Builder)
		heights := b.Field(2).(*array.Int32Builder)
		for i := 0; i < int(rec.NumRows()); i++ {
			cfg, format, err := arrowio.DecodeConfig(imgs.Value(i))
			if err != nil {
				b.Release()
				return nil, plugin.PortError("images", plugin.BadInput(&arrowio.DataError{
					File: "input port images", Column: "image", Row: rows + int64(i),
					Msg: fmt.Sprintf("sample_id %d: %v", ids.Value(i), err)}))
			}
			wb.Append(ids.Value(i))
			widths.Append(int32(cfg.Width))
			heights.Append(int32(cfg.Height))
			classes[labels.Value(i)]++
			formats[format]++
			nbytes += int64(imgs.ValueLen(i))
		}
		rows += rec.NumRows()
		batch := b.NewRecord()
		b.Release()
		err := w.Write(batch)
		batch.Release()
		if err != nil {
			return nil, err
		}
		progress.Report(plugin.Event{Done: rows, Unit: "rows"})
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	labels := make([]int, 0, len(classes))
	for l := range classes {
		labels = append(labels, int(l))
	}
	sort.Ints(labels)
	perClass := map[string]int64{}
	for _, l := range labels {
		n := classes[int32(l)]
		perClass[strconv.Itoa(l)] = n
		if p.MinPerClass > 0 && n < int64(p.MinPerClass) {
			return nil, plugin.PortError("images", plugin.BadInputf("class %d has %d rows, fewer than min_per_class=%d", l, n, p.MinPerClass))
		}
	}
	return plugin.Metrics{"rows": rows, "classes": perClass, "image_bytes": nbytes, "formats": formats}, nil
}
