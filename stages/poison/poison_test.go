package poison_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/poison"
)

type row struct {
	id     uint64
	label  int32
	img    []byte
	poison bool
	orig   int32
}

// run poisons 300 8x8 images (label = id % 10) with params.
func run(t *testing.T, params string) ([]row, []row, plugin.Metrics, error) {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.ImagesSchema())
	var in []row
	for i := 0; i < 300; i++ {
		r := row{id: uint64(1000 + i), label: int32(i % 10), img: tabletest.PNG(8, 8, uint64(i))}
		in = append(in, r)
		b.Field(0).(*array.Uint64Builder).Append(r.id)
		b.Field(1).(*array.Int32Builder).Append(r.label)
		b.Field(2).(*array.BinaryBuilder).Append(r.img)
	}
	rec := b.NewRecord()
	b.Release()
	defer rec.Release()
	tin := plugin.NewTables()
	defer tin.Release()
	tin.Put("images", rec.Schema(), rec)
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(poison.New()).Run(context.Background(), json.RawMessage(params), tin, out, nil)
	if err != nil {
		return in, nil, m, err
	}
	var got []row
	for _, r := range out.Get("images").Records {
		ids, ls, imgs := r.Column(0).(*array.Uint64), r.Column(1).(*array.Int32), r.Column(2).(*array.Binary)
		for i := 0; i < ids.Len(); i++ {
			got = append(got, row{id: ids.Value(i), label: ls.Value(i), img: append([]byte(nil), imgs.Value(i)...)})
		}
	}
	k := 0
	for _, r := range out.Get("truth").Records {
		ids, ps, os := r.Column(0).(*array.Uint64), r.Column(1).(*array.Boolean), r.Column(2).(*array.Int32)
		for i := 0; i < ids.Len(); i++ {
			if ids.Value(i) != got[k].id {
				t.Fatalf("truth row %d has sample_id %d, images %d", k, ids.Value(i), got[k].id)
			}
			got[k].poison, got[k].orig = ps.Value(i), os.Value(i)
			k++
		}
	}
	return in, got, m, nil
}

func rgba(t *testing.T, data []byte) *image.NRGBA {
	img, err := arrowio.DecodeImage(data)
	if err != nil {
		t.Fatal(err)
	}
	out := image.NewNRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), img, image.Point{}, draw.Src)
	return out
}

func TestPoison(t *testing.T) {
	tests := []struct {
		name   string
		params string
		check  func(t *testing.T, in, out row)
		target int32
		clean  bool
		want   int
	}{
		{"badnets 10%", `{"trigger": {"kind": "patch", "size": 3, "row": 5, "col": 5}, "target": 2, "rate": 0.1}`, func(t *testing.T, in, out row) {
			a, b := rgba(t, in.img), rgba(t, out.img)
			for y := 0; y < 8; y++ {
				for x := 0; x < 8; x++ {
					inside := x >= 5 && y >= 5
					if c := b.NRGBAAt(x, y); inside && (c.R != 255 || c.G != 255 || c.B != 255) {
						t.Errorf("row %d: patch pixel (%d,%d) = %v", in.id, x, y, b.NRGBAAt(x, y))
					}
					if !inside && a.NRGBAAt(x, y) != b.NRGBAAt(x, y) {
						t.Errorf("row %d: pixel (%d,%d) outside the patch changed", in.id, x, y)
					}
				}
			}
		}, 2, false, 30},
		{"sig clean-label", `{"trigger": {"kind": "sig", "delta": 20, "freq": 2}, "target": 3, "rate": 0.05, "clean_label": true}`, nil, 3, true, 15},
		{"blend 20%", `{"trigger": {"kind": "blend", "alpha": 0.1, "seed": 4}, "rate": 0.2, "seed": 9}`, nil, 0, false, 60},
		{"wanet 1%", `{"trigger": {"kind": "wanet", "k": 2, "s": 2, "seed": 1}, "target": 9, "rate": 0.01}`, nil, 9, false, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, out, m, err := run(t, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(in) {
				t.Fatalf("%d rows out, %d in", len(out), len(in))
			}
			n := 0
			for i := range in {
				o := out[i]
				if o.orig != in[i].label || o.id != in[i].id {
					t.Fatalf("row %d: truth says orig label %d id %d, input has %d id %d", i, o.orig, o.id, in[i].label, in[i].id)
				}
				if !o.poison {
					if !bytes.Equal(o.img, in[i].img) || o.label != in[i].label {
						t.Fatalf("row %d: not poisoned but changed", i)
					}
					continue
				}
				n++
				if bytes.Equal(o.img, in[i].img) {
					t.Errorf("row %d: poisoned but the image is unchanged", i)
				}
				if o.label != tc.target {
					t.Errorf("row %d: poisoned row labelled %d, want target %d", i, o.label, tc.target)
				}
				if tc.clean && in[i].label != tc.target {
					t.Errorf("row %d: clean-label poison on a class-%d row", i, in[i].label)
				}
				if !tc.clean && in[i].label == tc.target {
					t.Errorf("row %d: a target-class row was poisoned (it teaches nothing)", i)
				}
				if tc.check != nil {
					tc.check(t, in[i], o)
				}
			}
			if n != tc.want || fmt.Sprint(m["poisoned"]) != fmt.Sprint(tc.want) {
				t.Errorf("%d poisoned (metrics %v), want %d", n, m["poisoned"], tc.want)
			}
			_, again, _, _ := run(t, tc.params)
			for i := range out {
				if again[i].poison != out[i].poison || !bytes.Equal(again[i].img, out[i].img) {
					t.Fatalf("row %d differs between two runs with one seed", i)
				}
			}
		})
	}
}

func TestPoisonBadParams(t *testing.T) {
	tests := []struct{ params, want string }{
		{`{}`, `"trigger": missing`},
		{`{"trigger": {"kind": "patch", "size": 3, "row": 1}}`, "trigger.col"},
		{`{"trigger": {"kind": "blend", "size": 3}}`, "trigger.size"},
		{`{"trigger": {"kind": "sig"}, "rate": 1.5}`, `"rate"`},
		{`{"trigger": {"kind": "sig"}, "rate": 0.2, "clean_label": true}`, "only 30 rows of the target class"},
		{`{"trigger": {"kind": "sig"}, "rates": 0.2}`, "rates"},
		{`{"trigger": {"kind": "patch", "size": 6, "row": 4, "col": 4}}`, "does not fit"},
	}
	for _, tc := range tests {
		t.Run(tc.params, func(t *testing.T) {
			_, _, _, err := run(t, tc.params)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
