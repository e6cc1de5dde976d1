package embed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

var (
	encPath string
	catalog *plugin.Catalog
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "tcore-embed-test-")
		if err != nil {
			return 1
		}
		defer os.RemoveAll(dir)
		defer plugin.CleanupClients()
		encPath = filepath.Join(dir, "enc.onnx")
		if err := testenc.Clean(11).Model().Save(encPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		path, err := testplugin.Setup(dir, testplugin.Binary{Spec: embed.New().Spec(), Package: "github.com/tcore-dev/tcore/stages/embed/cmd/tcore-embed"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if catalog, err = plugin.LoadCatalog(path); err != nil {
			return 1
		}
		return m.Run()
	}())
}

// pixels returns a seeded 16x16 RGB image and its CHW values in [0, 1].
func pixels(seed uint64) ([]byte, []float32) {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	x := make([]float32, 3*256)
	for y := 0; y < 16; y++ {
		for xx := 0; xx < 16; xx++ {
			c := color.NRGBA{uint8(rng.IntN(230)), uint8(rng.IntN(230)), uint8(rng.IntN(230)), 255}
			img.Set(xx, y, c)
			x[y*16+xx], x[256+y*16+xx], x[512+y*16+xx] = float32(c.R)/255, float32(c.G)/255, float32(c.B)/255
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes(), x
}

func grayPNG(seed uint64) ([]byte, []float32) {
	rng := rand.New(rand.NewPCG(seed, 2))
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	x := make([]float32, 3*256)
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(230))
		v := float32(img.Pix[i]) / 255
		x[i], x[256+i], x[512+i] = v, v, v
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes(), x
}

func imagesTable(imgs [][]byte) *plugin.Tables {
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.ImagesSchema())
	defer b.Release()
	for i, im := range imgs {
		b.Field(0).(*array.Uint64Builder).Append(uint64(100 + i))
		b.Field(1).(*array.Int32Builder).Append(int32(i % 2))
		b.Field(2).(*array.BinaryBuilder).Append(im)
	}
	rec := b.NewRecord()
	defer rec.Release()
	t := plugin.NewTables()
	t.Put("images", arrowio.ImagesSchema(), rec)
	return t
}

func params(extra string) json.RawMessage {
	s := fmt.Sprintf(`{"encoder": %q, "batch_size": 3, "threads": 1`, encPath)
	if extra != "" {
		s += ", " + extra
	}
	return json.RawMessage(s + "}")
}

func column(t *testing.T, tb *plugin.Table, name string) []float32 {
	t.Helper()
	var out []float32
	for _, r := range tb.Records {
		idx := r.Schema().FieldIndices(name)
		if len(idx) == 0 {
			t.Fatalf("no column %s", name)
		}
		l := r.Column(idx[0]).(*array.FixedSizeList)
		k := int(l.DataType().(*arrow.FixedSizeListType).Len())
		out = append(out, l.ListValues().(*array.Float32).Float32Values()[l.Offset()*k:(l.Offset()+l.Len())*k]...)
	}
	return out
}

func runners(t *testing.T) map[string]plugin.Stage {
	cl, err := catalog.Launch(context.Background(), "embed", plugin.LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Kill)
	return map[string]plugin.Stage{"local": plugin.Local(embed.New()), "plugin": cl}
}

func TestEmbedMatchesReference(t *testing.T) {
	ortlib.Init(t)
	net := testenc.Clean(11)
	var imgs [][]byte
	var xs [][]float32
	for i := 0; i < 7; i++ { // batch 3: two full batches and a tail
		var b []byte
		var x []float32
		if i == 4 {
			b, x = grayPNG(uint64(i)) // grey: converted
		} else {
			b, x = pixels(uint64(i))
		}
		imgs, xs = append(imgs, b), append(xs, x)
	}
	for name, st := range runners(t) {
		t.Run(name, func(t *testing.T) {
			in := imagesTable(imgs)
			defer in.Release()
			out := plugin.NewTables()
			defer out.Release()
			m, err := st.Run(context.Background(), params(""), in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := out.Get("features")
			if m["rows"].(float64) != 7 || f.Rows() != 7 {
				t.Fatalf("rows %v", m["rows"])
			}
			emb, s2 := column(t, f, "embedding"), column(t, f, "layer.stage2")
			for i, x := range xs {
				want, stages := net.Forward(x)
				for d := range want {
					if math.Abs(float64(emb[i*32+d]-want[d])) > 1e-5 {
						t.Fatalf("image %d dim %d: %v, want %v", i, d, emb[i*32+d], want[d])
					}
				}
				for c := 0; c < 16; c++ {
					var s float64
					for j := 0; j < 64; j++ {
						s += float64(stages[1][c*64+j])
					}
					if math.Abs(float64(s2[i*16+c])-s/64) > 1e-5 {
						t.Fatalf("image %d stage2 channel %d: %v, want %v", i, c, s2[i*16+c], s/64)
					}
				}
			}
		})
	}
}

func channels(rows ...[2]int) *plugin.Tables {
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.ChannelsSchema())
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.StringBuilder).Append("stage1")
		b.Field(1).(*array.Int32Builder).Append(int32(r[0]))
		b.Field(2).(*array.BooleanBuilder).Append(r[1] == 1)
		b.Field(3).(*array.Float32Builder).Append(0)
		b.Field(4).(*array.StringBuilder).Append("test")
	}
	rec := b.NewRecord()
	defer rec.Release()
	t := plugin.NewTables()
	t.Put("channels", arrowio.ChannelsSchema(), rec)
	return t
}

// merged serves the ports of several Tables.
type merged []*plugin.Tables

func (m merged) Open(port string) (array.RecordReader, error) {
	for _, t := range m {
		if t.Get(port) != nil {
			return t.Open(port)
		}
	}
	return nil, plugin.ErrNotConnected
}

func TestChannelsPortMasks(t *testing.T) {
	ortlib.Init(t)
	var imgs [][]byte
	for i := 0; i < 4; i++ {
		b, _ := pixels(uint64(i))
		imgs = append(imgs, b)
	}
	in := imagesTable(imgs)
	defer in.Release()
	ch := channels([2]int{2, 0}, [2]int{3, 1})
	defer ch.Release()
	out := plugin.NewTables()
	defer out.Release()
	m, err := plugin.Local(embed.New()).Run(context.Background(), params(""), merged{in, ch}, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1 := column(t, out.Get("features"), "layer.stage1")
	for i := 0; i < 4; i++ {
		if s1[i*8+2] != 0 || s1[i*8+3] == 0 {
			t.Fatalf("image %d: channel 2 %v (masked, want 0), channel 3 %v", i, s1[i*8+2], s1[i*8+3])
		}
	}
	if m["masked_channels"].(float64) != 1 {
		t.Fatalf("masked_channels %v", m["masked_channels"])
	}
}

func TestEmbedBadInput(t *testing.T) {
	ortlib.Init(t)
	good, _ := pixels(1)
	gray, _ := grayPNG(2)
	cases := []struct {
		name   string
		imgs   [][]byte
		params json.RawMessage
		extra  *plugin.Tables
		want   []string
	}{
		{"row that is not an image", [][]byte{good, good, []byte("GIF89a......"), good}, params(""), nil,
			[]string{`port "images"`, "row 2", "sample_id 102", "not a PNG or JPEG"}},
		{"grey image refused", [][]byte{good, gray}, params(`"gray": "reject"`), nil, []string{"row 1", "grey image"}},
		{"unknown layer", [][]byte{good}, params(`"layers": ["stage7"]`), nil, []string{`no layer "stage7"`}},
		{"mask for a missing channel", [][]byte{good}, params(""), channels([2]int{99, 0}), []string{"100 channels, the layer has 8"}},
		{"corrupt encoder", [][]byte{good}, json.RawMessage(`{"encoder": "` + os.Args[0] + `"}`), nil, []string{"not an ONNX model"}},
		{"no encoder", [][]byte{good}, json.RawMessage(`{}`), nil, []string{`"encoder"`}},
		{"size mismatch", [][]byte{good}, params(`"size": [32, 32]`), nil, []string{"takes 16x16"}},
		{"unknown parameter", [][]byte{good}, params(`"batchsize": 2`), nil, []string{`unknown parameter "batchsize"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := imagesTable(tc.imgs)
			defer in.Release()
			ins := merged{in}
			if tc.extra != nil {
				ins = append(ins, tc.extra)
				defer tc.extra.Release()
			}
			out := plugin.NewTables()
			defer out.Release()
			_, err := plugin.Local(embed.New()).Run(context.Background(), tc.params, ins, out, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "bad input") && !strings.Contains(err.Error(), "arrowio") {
				t.Errorf("%v is not reported as bad input", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
