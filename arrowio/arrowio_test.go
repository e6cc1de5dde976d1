package arrowio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/badinput"
	"github.com/tcore-dev/tcore/internal/tabletest"
)

// build makes one record of the given schema; fill appends row i.
func build(schema *arrow.Schema, rows int, fill func(b *array.RecordBuilder, i int)) arrow.Record {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := 0; i < rows; i++ {
		fill(b, i)
	}
	return b.NewRecord()
}

func writeParquet(t *testing.T, rec arrow.Record) string {
	t.Helper()
	rr, _ := array.NewRecordReader(rec.Schema(), []arrow.Record{rec})
	defer rr.Release()
	path := filepath.Join(t.TempDir(), "data.parquet")
	if _, err := arrowio.WriteParquet(path, rr); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeIPC(t *testing.T, rec arrow.Record, stream bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.arrow")
	if !stream {
		rr, _ := array.NewRecordReader(rec.Schema(), []arrow.Record{rec})
		defer rr.Release()
		if _, err := arrowio.WriteIPCFile(path, rr); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	w.Write(rec)
	w.Close()
	os.WriteFile(path, buf.Bytes(), 0o644)
	return path
}

type row struct {
	id    uint64
	label int32
	img   []byte
}

func readAll(t *testing.T, path string, opt arrowio.ReadOptions) ([]row, *arrow.Schema, error) {
	t.Helper()
	r, err := arrowio.OpenDataset(context.Background(), path, opt)
	if err != nil {
		return nil, nil, err
	}
	defer r.Release()
	var out []row
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64)
		ls := rec.Column(1).(*array.Int32)
		imgs := rec.Column(2).(*array.Binary)
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, row{ids.Value(i), ls.Value(i), bytes.Clone(imgs.Value(i))})
		}
	}
	return out, r.Schema(), r.Err()
}

func img(i int) []byte { return tabletest.PNG(3, 2, uint64(i)) }

func TestOpenDatasetFindsColumns(t *testing.T) {
	binLabel := func(labelType arrow.DataType, labelName, imageName string, extra ...arrow.Field) *arrow.Schema {
		fields := append([]arrow.Field{{Name: imageName, Type: arrow.BinaryTypes.Binary}, {Name: labelName, Type: labelType}}, extra...)
		md := arrow.NewMetadata([]string{"class_names"}, []string{"a,b,c"})
		return arrow.NewSchema(fields, &md)
	}
	appendInt := func(b array.Builder, v int) {
		switch b := b.(type) {
		case *array.Int64Builder:
			b.Append(int64(v))
		case *array.Uint8Builder:
			b.Append(uint8(v))
		case *array.Int16Builder:
			b.Append(int16(v))
		}
	}
	structType := arrow.StructOf(arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary}, arrow.Field{Name: "path", Type: arrow.BinaryTypes.String})
	cases := []struct {
		name  string
		rec   func() arrow.Record
		write func(*testing.T, arrow.Record) string
		opt   arrowio.ReadOptions
		ids   []uint64
	}{
		{"parquet, binary image, int64 label", func() arrow.Record {
			return build(binLabel(arrow.PrimitiveTypes.Int64, "label", "image"), 5, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				appendInt(b.Field(1), i%3)
			})
		}, writeParquet, arrowio.ReadOptions{}, nil},
		{"parquet, {bytes, path} struct, uint8 labels, two batches", func() arrow.Record {
			s := arrow.NewSchema([]arrow.Field{{Name: "picture", Type: structType}, {Name: "labels", Type: arrow.PrimitiveTypes.Uint8}}, nil)
			return build(s, 5, func(b *array.RecordBuilder, i int) {
				sb := b.Field(0).(*array.StructBuilder)
				sb.Append(true)
				sb.FieldBuilder(0).(*array.BinaryBuilder).Append(img(i))
				sb.FieldBuilder(1).(*array.StringBuilder).Append(fmt.Sprintf("%d.png", i))
				appendInt(b.Field(1), i%3)
			})
		}, writeParquet, arrowio.ReadOptions{BatchRows: 3}, nil},
		{"parquet, two binary columns, one named img, int16 label, sample_id", func() arrow.Record {
			s := arrow.NewSchema([]arrow.Field{{Name: "thumb", Type: arrow.BinaryTypes.Binary}, {Name: "img", Type: arrow.BinaryTypes.Binary},
				{Name: "label", Type: arrow.PrimitiveTypes.Int16}, {Name: "sample_id", Type: arrow.PrimitiveTypes.Int64}}, nil)
			return build(s, 5, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append([]byte("x"))
				b.Field(1).(*array.BinaryBuilder).Append(img(i))
				appendInt(b.Field(2), i%3)
				b.Field(3).(*array.Int64Builder).Append(int64(100 + i))
			})
		}, writeParquet, arrowio.ReadOptions{}, []uint64{100, 101, 102, 103, 104}},
		{"ipc file, explicit columns", func() arrow.Record {
			return build(binLabel(arrow.PrimitiveTypes.Int64, "y", "x", arrow.Field{Name: "other", Type: arrow.BinaryTypes.Binary}), 5, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				appendInt(b.Field(1), i%3)
				b.Field(2).(*array.BinaryBuilder).Append([]byte("zz"))
			})
		}, func(t *testing.T, r arrow.Record) string { return writeIPC(t, r, false) }, arrowio.ReadOptions{ImageCol: "x", LabelCol: "y"}, nil},
		{"ipc stream", func() arrow.Record {
			return build(binLabel(arrow.PrimitiveTypes.Int64, "label", "image"), 5, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				appendInt(b.Field(1), i%3)
			})
		}, func(t *testing.T, r arrow.Record) string { return writeIPC(t, r, true) }, arrowio.ReadOptions{}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec()
			defer rec.Release()
			rows, schema, err := readAll(t, tc.write(t, rec), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if k, _ := arrowio.KindOf(schema); k != arrowio.KindImages {
				t.Fatalf("kind %q", k)
			}
			if len(rows) != 5 {
				t.Fatalf("rows got=%d, want=5", len(rows))
			}
			for i, r := range rows {
				wantID := uint64(i)
				if tc.ids != nil {
					wantID = tc.ids[i]
				}
				if r.id != wantID || r.label != int32(i%3) || !bytes.Equal(r.img, img(i)) {
					t.Fatalf("row %d: id=%d label=%d, want id=%d label=%d and the original image", i, r.id, r.label, wantID, i%3)
				}
			}
		})
	}
}

func TestImageFolder(t *testing.T) {
	root := t.TempDir()
	files := map[string][]byte{"dog/b.png": img(1), "cat/z.png": img(2), "cat/a.png": img(3), "dog/a.png": img(4)}
	for p, b := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), b, 0o644)
	}
	rows, schema, err := readAll(t, root, arrowio.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Sorted path order: cat/a, cat/z, dog/a, dog/b; classes cat=0, dog=1.
	want := []row{{0, 0, img(3)}, {1, 0, img(2)}, {2, 1, img(4)}, {3, 1, img(1)}}
	for i := range want {
		if rows[i].id != want[i].id || rows[i].label != want[i].label || !bytes.Equal(rows[i].img, want[i].img) {
			t.Fatalf("row %d = %d/%d, want %d/%d", i, rows[i].id, rows[i].label, want[i].id, want[i].label)
		}
	}
	if v, _ := schema.Metadata().GetValue(arrowio.ClassesKey); v != `["cat","dog"]` {
		t.Fatalf("classes %q", v)
	}
}

func TestOpenDatasetErrors(t *testing.T) {
	imgLabel := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary, Nullable: true}, {Name: "label", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil)
	cases := []struct {
		name string
		path func(t *testing.T) string
		want []string
	}{
		{"no label column", func(t *testing.T) string {
			s := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary}, {Name: "class", Type: arrow.PrimitiveTypes.Int64}}, nil)
			r := build(s, 2, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				b.Field(1).(*array.Int64Builder).Append(1)
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "label|labels"`, "no label column", "[image class]"}},
		{"float label", func(t *testing.T) string {
			s := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary}, {Name: "label", Type: arrow.PrimitiveTypes.Float64}}, nil)
			r := build(s, 2, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				b.Field(1).(*array.Float64Builder).Append(1)
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "label"`, "want an integer type"}},
		{"ambiguous image columns", func(t *testing.T) string {
			s := arrow.NewSchema([]arrow.Field{{Name: "a", Type: arrow.BinaryTypes.Binary}, {Name: "b", Type: arrow.BinaryTypes.Binary}, {Name: "label", Type: arrow.PrimitiveTypes.Int64}}, nil)
			r := build(s, 1, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				b.Field(1).(*array.BinaryBuilder).Append(img(i))
				b.Field(2).(*array.Int64Builder).Append(1)
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{"cannot tell the image column"}},
		{"negative label", func(t *testing.T) string {
			r := build(imgLabel, 4, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				b.Field(1).(*array.Int64Builder).Append(int64(1 - i))
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "label", row 2`, "label -1 out of range"}},
		{"null label", func(t *testing.T) string {
			r := build(imgLabel, 4, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				if i == 3 {
					b.Field(1).AppendNull()
				} else {
					b.Field(1).(*array.Int64Builder).Append(1)
				}
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "label", row 3`, "null label"}},
		{"null image", func(t *testing.T) string {
			r := build(imgLabel, 4, func(b *array.RecordBuilder, i int) {
				if i == 1 {
					b.Field(0).AppendNull()
				} else {
					b.Field(0).(*array.BinaryBuilder).Append(img(i))
				}
				b.Field(1).(*array.Int64Builder).Append(1)
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "image", row 1`, "null image"}},
		{"duplicate sample_id", func(t *testing.T) string {
			s := arrow.NewSchema([]arrow.Field{{Name: "image", Type: arrow.BinaryTypes.Binary}, {Name: "label", Type: arrow.PrimitiveTypes.Int64}, {Name: "sample_id", Type: arrow.PrimitiveTypes.Uint32}}, nil)
			r := build(s, 4, func(b *array.RecordBuilder, i int) {
				b.Field(0).(*array.BinaryBuilder).Append(img(i))
				b.Field(1).(*array.Int64Builder).Append(1)
				b.Field(2).(*array.Uint32Builder).Append(uint32(i % 3))
			})
			defer r.Release()
			return writeParquet(t, r)
		}, []string{`column "sample_id", row 3`, "sample_id 0 repeats row 0"}},
		{"malformed parquet", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "bad.parquet")
			os.WriteFile(p, []byte("PAR1\x00\x01garbage"), 0o644)
			return p
		}, []string{"bad.parquet", "malformed Parquet"}},
		{"not a dataset", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "notes.txt")
			os.WriteFile(p, []byte("hello"), 0o644)
			return p
		}, []string{"notes.txt", "not a Parquet file"}},
		{"folder with a file that is not an image", func(t *testing.T) string {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "cat"), 0o755)
			os.WriteFile(filepath.Join(root, "cat", "a.png"), img(1), 0o644)
			os.WriteFile(filepath.Join(root, "cat", "b.png"), []byte("not an image"), 0o644)
			return root
		}, []string{filepath.Join("cat", "b.png"), `column "image", row 1`, "not a PNG or JPEG"}},
		{"folder without classes", func(t *testing.T) string { return t.TempDir() }, []string{"no class sub-folders"}},
		{"folder whose classes hold no images", func(t *testing.T) string {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "cat"), 0o755)
			os.WriteFile(filepath.Join(root, "cat", ".hidden.png"), img(1), 0o644)
			return root
		}, []string{"class sub-folders [cat] but no images in them"}},
	}
	table := badinput.New("Bad datasets",
		"Generated by `TestOpenDatasetErrors` (arrowio): what reading each kind of bad `--train` or `--test` gives.")
	defer table.Check(t, "../docs/bad-inputs/datasets.md", len(cases))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(t, tc.path(t), arrowio.ReadOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			table.Add(tc.name, "", err.Error())
			if !errors.Is(err, arrowio.ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateSchema(t *testing.T) {
	feat := arrowio.FeaturesSchema(4, []arrowio.Layer{{Name: "stage1", Channels: 2}})
	noKind := arrow.NewSchema(arrowio.ImagesSchema().Fields(), nil)
	md := arrow.NewMetadata([]string{arrowio.MetaKey}, []string{"features/v1"})
	badLayer := arrow.NewSchema(append(feat.Fields()[:3:3], arrow.Field{Name: "stage1", Type: feat.Field(3).Type}), &md)
	wrongType := arrow.NewSchema([]arrow.Field{feat.Field(0), {Name: "label", Type: arrow.PrimitiveTypes.Int64}, feat.Field(2)}, &md)
	cases := []struct {
		name   string
		schema *arrow.Schema
		kind   arrowio.Kind
		want   string
	}{
		{"images", arrowio.ImagesSchema(), arrowio.KindImages, ""},
		{"features", feat, arrowio.KindFeatures, ""},
		{"channels", arrowio.ChannelsSchema(), arrowio.KindChannels, ""},
		{"truth", arrowio.TruthSchema(), arrowio.KindTruth, ""},
		{"scores", tabletest.Schema(arrowio.KindScores, 0), arrowio.KindScores, ""},
		{"no metadata", noKind, arrowio.KindImages, "no \"tcore.schema\" metadata"},
		{"other kind", arrowio.TruthSchema(), arrowio.KindImages, "table kind truth/v1, want images/v1"},
		{"layer column without prefix", badLayer, arrowio.KindFeatures, `column "stage1"`},
		{"label of the wrong type", wrongType, arrowio.KindFeatures, `column "label": type int64, want int32`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := arrowio.ValidateSchema(tc.schema, tc.kind)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := arrowio.ScoresSchema(arrow.Field{Name: "nodot", Type: arrow.PrimitiveTypes.Float32}); err == nil {
		t.Error("a scores column without <stage>. was accepted")
	}
	if _, err := arrowio.ScoresSchema(arrow.Field{Name: "s.x", Type: arrow.PrimitiveTypes.Float64}); err == nil {
		t.Error("a float64 scores column was accepted")
	}
}

func TestValidatorRejectsNonFiniteFeatures(t *testing.T) {
	s := arrowio.FeaturesSchema(3, nil)
	v := arrowio.NewValidator(arrowio.KindFeatures, "feats")
	for batch := 0; batch < 2; batch++ {
		rec := build(s, 4, func(b *array.RecordBuilder, i int) {
			b.Field(0).(*array.Uint64Builder).Append(uint64(batch*4 + i))
			b.Field(1).(*array.Int32Builder).Append(1)
			lb := b.Field(2).(*array.FixedSizeListBuilder)
			lb.Append(true)
			vals := []float32{1, 2, 3}
			if batch == 1 && i == 2 {
				vals[1] = float32(math.NaN())
			}
			lb.ValueBuilder().(*array.Float32Builder).AppendValues(vals, nil)
		})
		err := v.Check(rec)
		rec.Release()
		if batch == 0 && err != nil {
			t.Fatal(err)
		}
		if batch == 1 && (err == nil || !strings.Contains(err.Error(), `feats: column "embedding", row 6: value 1 is NaN`)) {
			t.Fatalf("got %v", err)
		}
	}
}

func TestToCHW(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	m.Set(0, 0, color.NRGBA{255, 0, 51, 255})
	m.Set(1, 0, color.NRGBA{0, 102, 255, 255})
	var pb bytes.Buffer
	png.Encode(&pb, m)
	g := image.NewGray(image.Rect(0, 0, 2, 1))
	g.Pix[0], g.Pix[1] = 0, 255
	var gb bytes.Buffer
	png.Encode(&gb, g)
	jm := image.NewRGBA(image.Rect(0, 0, 2, 1))
	for i := 0; i < 2; i++ {
		jm.Set(i, 0, color.RGBA{200, 100, 50, 255})
	}
	var jb bytes.Buffer
	jpeg.Encode(&jb, jm, &jpeg.Options{Quality: 100})
	cases := []struct {
		name string
		data []byte
		want []float32
		tol  float32
	}{
		{"png rgb", pb.Bytes(), []float32{1, 0, 0, 0.4, 0.2, 1}, 1e-6},
		{"png grey fills three planes", gb.Bytes(), []float32{0, 1, 0, 1, 0, 1}, 1e-6},
		{"jpeg", jb.Bytes(), []float32{200. / 255, 200. / 255, 100. / 255, 100. / 255, 50. / 255, 50. / 255}, 3. / 255},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, err := arrowio.DecodeImage(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]float32, 6)
			arrowio.ToCHW(dst, img)
			for i := range dst {
				if d := dst[i] - tc.want[i]; d > tc.tol || d < -tc.tol {
					t.Fatalf("got %v, want %v", dst, tc.want)
				}
			}
		})
	}
	if _, err := arrowio.DecodeImage([]byte("GIF89a")); !errors.Is(err, arrowio.ErrNotImage) {
		t.Fatalf("a GIF header: got %v, want ErrNotImage", err)
	}
	if _, err := arrowio.DecodeImage(append([]byte{0xff, 0xd8}, make([]byte, 20)...)); !errors.Is(err, arrowio.ErrNotImage) {
		t.Fatalf("a broken JPEG: got %v, want ErrNotImage", err)
	}
}

func TestParquetRoundTripKeepsKindAndValues(t *testing.T) {
	for _, kind := range arrowio.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			s, recs := tabletest.Make(mem, kind, 25, 10, 8, 5)
			rr, _ := array.NewRecordReader(s, recs)
			path := filepath.Join(t.TempDir(), "t.parquet")
			res, err := arrowio.WriteParquet(path, rr)
			rr.Release()
			if err != nil || res.Rows != 25 {
				t.Fatalf("rows=%d err=%v", res.Rows, err)
			}
			r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{Alloc: mem})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Schema().Equal(s) || !r.Schema().Metadata().Equal(s.Metadata()) {
				t.Fatalf("schema %v, want %v", r.Schema(), s)
			}
			want := array.NewTableFromRecords(s, recs)
			var got []arrow.Record
			for r.Next() {
				r.Record().Retain()
				got = append(got, r.Record())
			}
			if r.Err() != nil {
				t.Fatal(r.Err())
			}
			gt := array.NewTableFromRecords(s, got)
			if !array.TableEqual(want, gt) {
				t.Fatal("values differ after the round trip")
			}
			gt.Release()
			want.Release()
			for _, x := range append(got, recs...) {
				x.Release()
			}
			r.Release()
		})
	}
}

// failingReader yields one batch and then an error.
type failingReader struct {
	array.RecordReader
	n int
}

func (f *failingReader) Next() bool {
	f.n++
	return f.n == 1 && f.RecordReader.Next()
}
func (f *failingReader) Err() error { return errors.New("source broke") }

func TestWritersLeaveNothingOnError(t *testing.T) {
	for name, write := range map[string]func(string, array.RecordReader) (arrowio.WriteResult, error){
		"parquet": arrowio.WriteParquet, "ipc": arrowio.WriteIPCFile,
	} {
		t.Run(name, func(t *testing.T) {
			s, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindTruth, 20, 10, 0, 1)
			rr, _ := array.NewRecordReader(s, recs)
			defer rr.Release()
			dir := t.TempDir()
			_, err := write(filepath.Join(dir, "out"), &failingReader{RecordReader: rr})
			if err == nil || !strings.Contains(err.Error(), "source broke") {
				t.Fatalf("got %v", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left %v", entries)
			}
		})
	}
}

func ExampleFeaturesSchema() {
	s := arrowio.FeaturesSchema(256, []arrowio.Layer{{Name: "stage1", Channels: 32}, {Name: "stage2", Channels: 64}})
	k, _ := arrowio.KindOf(s)
	fmt.Println(k, arrowio.ValidateSchema(s, arrowio.KindFeatures) == nil)
	for _, l := range arrowio.FeatureLayers(s) {
		fmt.Println(l.Name, l.Channels)
	}
	// Output:
	// features/v1 true
	// stage1 32
	// stage2 64
}

// A Parquet file with corrupted bytes anywhere must give an error that
// names the file, never a panic, whatever the decoder makes of it.
func TestCorruptedParquetNeverPanics(t *testing.T) {
	mem := memory.NewGoAllocator()
	s, recs := tabletest.Make(mem, arrowio.KindFeatures, 200, 10, 8, 5)
	rr, _ := array.NewRecordReader(s, recs)
	dir := t.TempDir()
	path := filepath.Join(dir, "t.parquet")
	if _, err := arrowio.WriteParquet(path, rr); err != nil {
		t.Fatal(err)
	}
	rr.Release()
	for _, r := range recs {
		r.Release()
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.parquet")
	failed := 0
	for off := 4; off < len(orig)-8; off += 53 {
		b := append([]byte(nil), orig...)
		for i := off; i < min(off+12, len(b)-8); i++ {
			b[i] ^= 0xa5
		}
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("bytes %d-%d corrupted: panic %v", off, off+12, p)
				}
			}()
			r, err := arrowio.OpenDataset(context.Background(), bad, arrowio.ReadOptions{})
			if err != nil {
				return err
			}
			defer r.Release()
			for r.Next() {
			}
			return r.Err()
		}()
		if err != nil {
			failed++
			if !strings.Contains(err.Error(), "bad.parquet") {
				t.Errorf("bytes %d-%d corrupted: error %q does not name the file", off, off+12, err)
			}
		}
	}
	if failed == 0 {
		t.Fatal("no corruption was noticed at all")
	}
}

// TestFuzzFindingsAreErrors reads what FuzzOpenDataset found: a 3 KiB
// Arrow IPC stream whose batch declares a 24 TiB buffer, a 600-byte one
// whose schema declares a hundred million fields, and a file whose
// fixed-size list column's buffers hold less than its lengths say. The process
// used to die of the first, spend 4 GiB and 20 s on the second, and panic
// on the third.
func TestFuzzFindingsAreErrors(t *testing.T) {
	for _, tc := range []struct{ corpus, want string }{
		{"6c1710f69706d10e", "declares a buffer of 26388279066624 bytes"},
		{"ff62f80d69293c53", "entries declared in"},
		{"75d46484dc437657", "malformed batch"},
	} {
		t.Run(tc.corpus, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzOpenDataset", tc.corpus))
			if err != nil {
				t.Fatal(err)
			}
			line := strings.Split(string(raw), "\n")[1]
			data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "huge.arrows")
			if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
			if err == nil {
				for r.Next() {
				}
				err = r.Err()
				r.Release()
			}
			if err == nil || !strings.Contains(err.Error(), "huge.arrows") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming huge.arrows and saying %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestDecodeImageBoundsPixels(t *testing.T) {
	img := tabletest.PNG(20, 10, 1)
	for _, tc := range []struct {
		env  string
		want string // "" for no error
	}{
		{"", ""},
		{"200", ""},
		{"199", "a 20x10 png image, more than the 199 pixels tcore decodes (TCORE_MAX_IMAGE_PIXELS raises the bound)"},
		{"junk", ""}, // not a positive integer: the default
	} {
		t.Run("limit="+tc.env, func(t *testing.T) {
			t.Setenv(arrowio.MaxPixelsEnv, tc.env)
			_, err := arrowio.DecodeImage(img)
			if (tc.want == "") != (err == nil) || (err != nil && err.Error() != tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// A tcore table's columns are fixed: --image-col/--label-col naming others
// are refused rather than silently ignored.
func TestColumnFlagsOnTcoreTables(t *testing.T) {
	mem := memory.NewGoAllocator()
	s, recs := tabletest.Make(mem, arrowio.KindImages, 4, 3, 4, 2)
	rr, _ := array.NewRecordReader(s, recs)
	path := filepath.Join(t.TempDir(), "images.parquet")
	if _, err := arrowio.WriteParquet(path, rr); err != nil {
		t.Fatal(err)
	}
	rr.Release()
	for _, r := range recs {
		r.Release()
	}
	for _, tc := range []struct {
		name string
		opt  arrowio.ReadOptions
		want string // "" for no error
	}{
		{"no override", arrowio.ReadOptions{}, ""},
		{"the fixed names", arrowio.ReadOptions{ImageCol: "image", LabelCol: "label"}, ""},
		{"another image column", arrowio.ReadOptions{ImageCol: "img"}, `images.parquet: column "img": a tcore images/v1 table: its columns are fixed (image, label), so --image-col "img" does not apply`},
		{"another label column", arrowio.ReadOptions{LabelCol: "y"}, `--label-col "y" does not apply`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(t, path, tc.opt)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// A test folder that lacks a class is labelled by the training classes'
// names, not by its own sorted folders; a linked class folder counts.
func TestImageFolderClassesByName(t *testing.T) {
	root := t.TempDir()
	for p, b := range map[string][]byte{"cat/a.png": img(1), "fox/a.png": img(2)} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), b, 0o644)
	}
	elsewhere := t.TempDir()
	os.WriteFile(filepath.Join(elsewhere, "b.png"), img(3), 0o644)
	if err := os.Symlink(elsewhere, filepath.Join(root, "dog")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		classes []string
		labels  string // by row, sorted path order: cat/a, dog/b, fox/a
		err     string
	}{
		{"own folders", nil, "[0 1 2]", ""},
		{"training classes", []string{"ant", "cat", "dog", "eel", "fox"}, "[1 2 4]", ""},
		{"a class the training set lacks", []string{"cat", "dog"}, "", `class folder "fox" is not one of the training classes [cat dog]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, schema, err := readAll(t, root, arrowio.ReadOptions{Classes: tc.classes})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var labels []int32
			for _, r := range rows {
				labels = append(labels, r.label)
			}
			if fmt.Sprint(labels) != tc.labels {
				t.Fatalf("labels %v, want %s", labels, tc.labels)
			}
			if v, _ := schema.Metadata().GetValue(arrowio.ClassesKey); tc.classes != nil && !strings.Contains(v, `"ant"`) {
				t.Fatalf("classes %q, want the training names", v)
			}
		})
	}
}
