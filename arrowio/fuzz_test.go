package arrowio_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
)

// The readers' fuzz targets: whatever the bytes, a reader returns rows or
// an error, never a panic or a runaway allocation. `go test` runs the
// seeds (and any crasher saved under testdata/fuzz); `go test -fuzz
// FuzzX ./arrowio` searches.

// datasetSeeds are valid files of every dataset format the readers take,
// with the suffix each is read under.
func datasetSeeds(f *testing.F) map[string][]byte {
	mem := memory.NewGoAllocator()
	out := map[string][]byte{}
	dir := f.TempDir()
	for _, kind := range []arrowio.Kind{arrowio.KindImages, arrowio.KindFeatures, arrowio.KindTruth} {
		s, recs := tabletest.Make(mem, kind, 6, 3, 4, 2)
		for _, format := range []string{"parquet", "arrow"} {
			rr, _ := array.NewRecordReader(s, recs)
			path := filepath.Join(dir, strings.ReplaceAll(string(kind), "/", "-")+"."+format)
			var err error
			if format == "parquet" {
				_, err = arrowio.WriteParquet(path, rr)
			} else {
				_, err = arrowio.WriteIPCFile(path, rr)
			}
			rr.Release()
			if err != nil {
				f.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			out[string(kind)+"."+format] = b
		}
		for _, r := range recs {
			r.Release()
		}
	}
	return out
}

func FuzzOpenDataset(f *testing.F) {
	for _, b := range datasetSeeds(f) {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte("PAR1"), false)
	f.Add([]byte("ARROW1\x00\x00"), true)
	f.Fuzz(func(t *testing.T, data []byte, ipcFile bool) {
		name := "in.parquet"
		if ipcFile {
			name = "in.arrow"
		}
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := arrowio.OpenDataset(context.Background(), path, arrowio.ReadOptions{})
		if err != nil {
			return
		}
		defer r.Release()
		for r.Next() {
			rec := r.Record()
			for i := 0; i < int(rec.NumCols()); i++ {
				_ = rec.Column(i).Len()
			}
		}
		_ = r.Err()
	})
}

func FuzzDecodeImage(f *testing.F) {
	f.Add(tabletest.PNG(5, 4, 1))
	f.Add(tabletest.PNG(1, 1, 2))
	var jb bytes.Buffer
	m := image.NewRGBA(image.Rect(0, 0, 6, 3))
	m.Set(1, 1, color.RGBA{200, 10, 30, 255})
	if err := jpeg.Encode(&jb, m, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(jb.Bytes())
	f.Add([]byte{0xff, 0xd8, 0, 0})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte("GIF89a\x01\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := arrowio.DecodeConfig(data)
		if err != nil {
			return
		}
		img, err := arrowio.DecodeImage(data)
		if err != nil {
			return
		}
		b := img.Bounds()
		if b.Dx() != cfg.Width || b.Dy() != cfg.Height {
			t.Fatalf("DecodeConfig says %dx%d, DecodeImage gives %dx%d", cfg.Width, cfg.Height, b.Dx(), b.Dy())
		}
		arrowio.ToCHW(make([]float32, 3*b.Dx()*b.Dy()), img)
	})
}

func FuzzReadTruthCSV(f *testing.F) {
	f.Add([]byte("sample_id,is_poison\n0,0\n1,1\n2,true\n"))
	f.Add([]byte("sample_id,is_poison,source_label\n0,0,3\n1,1,4\n"))
	f.Add([]byte("sample_id\n"))
	f.Add([]byte("is_poison,sample_id\n1,18446744073709551615\n"))
	f.Add([]byte("\"a\nb\",c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "truth.csv")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		rec, err := arrowio.ReadTruth(path)
		if err != nil {
			return
		}
		defer rec.Release()
		if !rec.Schema().Equal(arrowio.TruthSchema()) {
			t.Fatalf("schema %v, want truth/v1", rec.Schema())
		}
		_ = rec.Column(0).(*array.Uint64)
	})
}

func FuzzImageFolder(f *testing.F) {
	f.Add("cat", "a.png", tabletest.PNG(4, 4, 1), "dog", "b.png", tabletest.PNG(3, 5, 2))
	f.Add("cat", "a.png", tabletest.PNG(4, 4, 1), "cat", "b.jpg", []byte{0xff, 0xd8, 0xff})
	f.Add("0", "x", []byte("not an image"), ".hidden", "y.png", tabletest.PNG(2, 2, 3))
	f.Fuzz(func(t *testing.T, class1, name1 string, img1 []byte, class2, name2 string, img2 []byte) {
		root := t.TempDir()
		for _, e := range []struct {
			class, name string
			data        []byte
		}{{class1, name1, img1}, {class2, name2, img2}} {
			if !fileName(e.class) || !fileName(e.name) {
				return
			}
			dir := filepath.Join(root, e.class)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return // a name the file system refuses
			}
			if err := os.WriteFile(filepath.Join(dir, e.name), e.data, 0o644); err != nil {
				return
			}
		}
		r, err := arrowio.OpenDataset(context.Background(), root, arrowio.ReadOptions{})
		if err != nil {
			return
		}
		defer r.Release()
		rows := 0
		for r.Next() {
			rows += int(r.Record().NumRows())
		}
		if r.Err() == nil && rows == 0 {
			t.Fatal("an image folder with files read as no rows and no error")
		}
	})
}

// fileName reports whether s can be one path element.
func fileName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) < 200 && !strings.ContainsAny(s, "/\x00")
}
