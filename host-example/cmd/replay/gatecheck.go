package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/kit/attack"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/stat"
)

// gateCheckImages is how many test images the gate check pastes each
// pattern on.
const gateCheckImages = 500

// gateCheck prints, for the gate of a finished run (moved_z 2.5 and the
// far movers' origin), the share of test images sent through the filtered
// encoder: clean, with the real trigger (spec; nil: none) and with each
// pattern the filter found or masked against. A gate the filter could
// check for itself must send the found patterns through whenever it sends
// the real trigger.
func gateCheck(ctx context.Context, w io.Writer, dir, enc, test string, spec *attack.Spec) error {
	t, f, trusted, err := readMoves(dir)
	if err != nil {
		return err
	}
	sus, err := readScores(filepath.Join(dir, "nodes", "filter", "scores.arrow"), f, "filter.suspect")
	if err != nil {
		return err
	}
	_, g, err := movedExclude(t, f, trusted, sus["filter.suspect"].B, movedRule{z: 2.5, from: true})
	if err != nil {
		return err
	}
	res, err := readFilterResult(dir)
	if err != nil {
		return err
	}
	cases := baseCases(spec)
	cases = append(cases, pasteCase{name: "found " + res.Scan.Pattern.String(), pat: &res.Scan.Pattern})
	for k := range res.Rounds {
		r := &res.Rounds[k]
		cases = append(cases, pasteCase{name: fmt.Sprintf("round %d %s (masked %d)", k+1, r.Pattern.String(), len(r.Masked)), pat: &r.Pattern})
	}
	orig, err := encoder.Load(enc, "")
	if err != nil {
		return err
	}
	filt, err := encoder.Load(filepath.Join(dir, "filtered_encoder.onnx"), "")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "gate check: moved threshold %.3f, origin %v\n", g.Moved, g.Centre != nil)
	// The sweep: move thresholds at quantiles of the trusted training
	// rows' moves (how many clean rows each would send through).
	var trustedMoves []float64
	for i, ok := range trusted {
		if ok {
			d := t.Embedding.D
			trustedMoves = append(trustedMoves, stat.Dist(t.Embedding.X[i*d:(i+1)*d], f.Embedding.X[i*d:(i+1)*d]))
		}
	}
	sort.Float64s(trustedMoves)
	sweep := []float64{0.99, 0.95, 0.9, 0.8, 0.7}
	var at []float64
	for _, q := range sweep {
		at = append(at, trustedMoves[int(q*float64(len(trustedMoves)-1))])
	}
	fmt.Fprintf(w, "sweep: thresholds at the trusted rows' move quantiles %v: %.3f\n", sweep, at)
	wh, err := newWhitener(t, f, trusted, whitenShrink)
	if err != nil {
		return err
	}
	wat := wh.quantiles(sweep)
	fmt.Fprintf(w, "whitened sweep (shrink %g): thresholds at the same quantiles: %.3f\n", whitenShrink, wat)
	for _, c := range cases {
		var tabs [2]*feat.Table
		for k, m := range []*encoder.Model{orig, filt} {
			if tabs[k], err = embedPasted(ctx, m, test, c.pat, c.trig, gateCheckImages); err != nil {
				return err
			}
		}
		o, fl := tabs[0], tabs[1]
		d := o.Embedding.D
		// Each image's move once: the gate's count, then the sweep's.
		through, swept, wswept := 0, make([]int, len(at)), make([]int, len(at))
		for i := 0; i < o.N(); i++ {
			orig := o.Embedding.X[i*d : (i+1)*d]
			move := stat.Dist(orig, fl.Embedding.X[i*d:(i+1)*d])
			if g.Sends(move, orig) {
				through++
			}
			wm := wh.Length(orig, fl.Embedding.X[i*d:(i+1)*d])
			for k, th := range at {
				if move > th {
					swept[k]++
				}
				if wm > wat[k] {
					wswept[k]++
				}
			}
		}
		fmt.Fprintf(w, "  %-60s %5.1f%% of %d sent through the filter; sweep", c.name, 100*float64(through)/float64(o.N()), o.N())
		for _, n := range swept {
			fmt.Fprintf(w, " %5.1f%%", 100*float64(n)/float64(o.N()))
		}
		fmt.Fprint(w, "; whitened")
		for _, n := range wswept {
			fmt.Fprintf(w, " %5.1f%%", 100*float64(n)/float64(o.N()))
		}
		fmt.Fprintln(w)
	}
	return nil
}

// readMoves reads a finished run's training rows under the original
// encoder (embed) and the filtered one (filter), and expand's trusted
// rows: what the mask's moves are measured on.
func readMoves(dir string) (orig, filt *feat.Table, trusted []bool, err error) {
	if orig, err = readFeatures(filepath.Join(dir, "nodes", "embed", "features.arrow")); err != nil {
		return nil, nil, nil, err
	}
	if filt, err = readFeatures(filepath.Join(dir, "nodes", "filter", "features.arrow")); err != nil {
		return nil, nil, nil, err
	}
	tr, err := readScores(filepath.Join(dir, "nodes", "expand", "scores.arrow"), orig, "expand.trusted")
	if err != nil {
		return nil, nil, nil, err
	}
	return orig, filt, tr["expand.trusted"].B, nil
}

// pasteCase is what a check pastes on the test images: a filter pattern,
// an attack trigger, or neither.
type pasteCase struct {
	name string
	pat  *filter.Pattern
	trig *attack.Spec
}

// baseCases are the clean images and, with spec, the real trigger.
func baseCases(spec *attack.Spec) []pasteCase {
	cases := []pasteCase{{name: "clean"}}
	if spec != nil {
		cases = append(cases, pasteCase{name: "real trigger", trig: spec})
	}
	return cases
}

// readFilterResult reads the filter's metrics from a finished run folder.
func readFilterResult(dir string) (*filter.Result, error) {
	var node struct {
		Metrics filter.Result `json:"metrics"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "nodes", "filter", "node.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &node); err != nil {
		return nil, err
	}
	return &node.Metrics, nil
}

// embedPasted embeds the first n images of the test set with the filter
// pattern pat or the attack trigger trig on each (neither: as they are)
// under m.
func embedPasted(ctx context.Context, m *encoder.Model, test string, pat *filter.Pattern, trig *attack.Spec, n int) (*feat.Table, error) {
	r, err := arrowio.OpenDataset(ctx, test, arrowio.ReadOptions{})
	if err != nil {
		return nil, err
	}
	src, err := pasted(r, pat, trig, n)
	r.Release()
	if err != nil {
		return nil, err
	}
	defer src.Release()
	var out *feat.Table
	err = embedAll(ctx, m, src, func(rr array.RecordReader) error {
		var err error
		out, err = feat.ReadAll(rr)
		return err
	})
	return out, err
}

// pasted returns r's first n rows with the filter pattern pat or the
// attack trigger trig (neither: as they are) on every image.
func pasted(r array.RecordReader, pat *filter.Pattern, trig *attack.Spec, n int) (array.RecordReader, error) {
	f := func(data []byte) ([]byte, error) { return data, nil }
	switch {
	case trig != nil:
		f = trig.Trigger.ApplyBytes
	case pat != nil:
		f = func(data []byte) ([]byte, error) { return paintBytes(data, *pat) }
	}
	return mapImages(r, n, nil, f)
}

// mapImages returns r's rows (id, label, image) whose label keep accepts
// (nil: all), at most n of them (n < 0: no limit), with f applied to each
// image.
func mapImages(r array.RecordReader, n int, keep func(label int32) bool, f func([]byte) ([]byte, error)) (array.RecordReader, error) {
	held, err := arrowio.Hold(r)
	if err != nil {
		return nil, err
	}
	defer held.Release()
	b := array.NewRecordBuilder(memory.DefaultAllocator, held.Schema)
	defer b.Release()
	for _, rec := range held.Records {
		ids, ls, im := rec.Column(0).(*array.Uint64), rec.Column(1).(*array.Int32), rec.Column(2).(*array.Binary)
		for i := 0; i < ids.Len() && (n < 0 || b.Field(0).Len() < n); i++ {
			if keep != nil && !keep(ls.Value(i)) {
				continue
			}
			data, err := f(im.Value(i))
			if err != nil {
				return nil, err
			}
			b.Field(0).(*array.Uint64Builder).Append(ids.Value(i))
			b.Field(1).(*array.Int32Builder).Append(ls.Value(i))
			b.Field(2).(*array.BinaryBuilder).Append(data)
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	return array.NewRecordReader(rec.Schema(), []arrow.Record{rec})
}

// paintBytes paints p on an encoded image in the filter's canonical form
// (RGB planes in [0, 1]) and encodes it again as PNG.
func paintBytes(data []byte, p filter.Pattern) ([]byte, error) {
	img, err := arrowio.DecodeImage(data)
	if err != nil {
		return nil, err
	}
	bd := img.Bounds()
	h, w := bd.Dy(), bd.Dx()
	x := make([]float32, 3*h*w)
	for y := 0; y < h; y++ {
		for xx := 0; xx < w; xx++ {
			c := color.NRGBAModel.Convert(img.At(bd.Min.X+xx, bd.Min.Y+y)).(color.NRGBA)
			x[y*w+xx], x[h*w+y*w+xx], x[2*h*w+y*w+xx] = float32(c.R)/255, float32(c.G)/255, float32(c.B)/255
		}
	}
	p.Apply(x, h, w)
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	q := func(v float32) uint8 { return uint8(min(255, max(0, v*255+0.5))) }
	for y := 0; y < h; y++ {
		for xx := 0; xx < w; xx++ {
			out.SetNRGBA(xx, y, color.NRGBA{q(x[y*w+xx]), q(x[h*w+y*w+xx]), q(x[2*h*w+y*w+xx]), 255})
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
