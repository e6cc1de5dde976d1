// Command embed-bench measures the embed stage's throughput (images/s,
// decoding included) against a raw ONNX Runtime session on pre-decoded
// tensors (the ceiling) and against PyTorch on the same decoded tensors,
// in one run, and prints the ratios.
//
//	embed-bench --encoder ../shared/models/enc_clean.onnx --data ../shared/datasets/cifar10/test.parquet
package main

import (
	"archive/zip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "embed-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	encPath := flag.String("encoder", "", "encoder (ONNX)")
	data := flag.String("data", "", "images (Parquet)")
	torchScript := flag.String("torch", "../shared/tools/torch_throughput.py", "PyTorch throughput script ('' to skip)")
	python := flag.String("python", "/usr/bin/python3", "Python with torch")
	device := flag.String("device", "cpu", "cpu or cuda[:N]")
	batch := flag.Int("batch", 256, "batch size")
	reps := flag.Int("reps", 3, "repetitions (best is kept)")
	flag.Parse()
	if err := ort.Init(""); err != nil {
		return err
	}
	ctx := context.Background()
	threads := runtime.NumCPU()

	// Decode once for the raw session and PyTorch.
	imgs, labels, raw, err := load(ctx, *data)
	if err != nil {
		return err
	}
	n := len(labels)
	fmt.Printf("%d images, %d threads, batch %d, device %s\n", n, threads, *batch, *device)

	// (b) raw ONNX Runtime: decoded float tensors, embedding only.
	enc, err := encoder.Open(*encPath, encoder.Config{ORT: ort.Options{Device: *device, Threads: threads}})
	if err != nil {
		return err
	}
	size := enc.ImageSize()
	x := make([]float32, n*size)
	pre := encoder.ForEncoder(enc)
	var scratch []float32
	for i, im := range imgs {
		if err := pre.Image(im, x[i*size:(i+1)*size], &scratch); err != nil {
			return err
		}
	}
	rawBest := best(*reps, func() error {
		for s := 0; s < n; s += *batch {
			k := min(*batch, n-s)
			buf, err := enc.Batch(k)
			if err != nil {
				return err
			}
			copy(buf, x[s*size:(s+k)*size])
			if _, _, err := enc.Embed(k); err != nil {
				return err
			}
		}
		return nil
	})
	enc.Close()

	// (tcore) the embed stage over the Parquet file, decoding included.
	stage := func(layers string) func() error {
		return func() error {
			r, err := arrowio.OpenDataset(ctx, *data, arrowio.ReadOptions{})
			if err != nil {
				return err
			}
			defer r.Release()
			abs, _ := filepath.Abs(*encPath)
			p := fmt.Sprintf(`{"encoder": %q, "batch_size": %d, "device": %q, "layers": %s}`, abs, *batch, *device, layers)
			_, err = plugin.Local(embed.New()).Run(ctx, json.RawMessage(p), one{r}, drop{}, nil)
			return err
		}
	}
	tcoreEmb := best(*reps, stage(`[]`))
	tcoreProbe := best(*reps, stage(`["auto"]`))

	// (a) PyTorch on the same decoded tensors.
	var torchIPS float64
	var torchNote string
	if *torchScript != "" {
		torchIPS, torchNote, err = torch(*python, *torchScript, *encPath, raw, n, threads)
		if err != nil {
			torchNote = "not measured: " + err.Error()
		}
	}

	ips := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	fmt.Printf("\n| engine | images/s | vs PyTorch | vs raw ORT |\n|---|---|---|---|\n")
	row := func(name string, v float64) {
		vt := "-"
		if torchIPS > 0 {
			vt = fmt.Sprintf("%.2fx", v/torchIPS)
		}
		fmt.Printf("| %s | %.0f | %s | %.0f%% |\n", name, v, vt, 100*v/ips(rawBest))
	}
	row("tcore embed, decode included, embedding only", ips(tcoreEmb))
	row("tcore embed, decode included, + 4 probe layers", ips(tcoreProbe))
	row("raw ONNX Runtime, pre-decoded tensors", ips(rawBest))
	if torchIPS > 0 {
		row("PyTorch "+torchNote+", pre-decoded tensors", torchIPS)
	} else if torchNote != "" {
		fmt.Printf("| PyTorch | %s | | |\n", torchNote)
	}
	return nil
}

func best(reps int, f func() error) time.Duration {
	b := time.Duration(1 << 62)
	for i := 0; i < reps; i++ {
		t := time.Now()
		if err := f(); err != nil {
			fmt.Fprintln(os.Stderr, "embed-bench:", err)
			os.Exit(1)
		}
		b = min(b, time.Since(t))
	}
	return b
}

// load reads every image's bytes, label, and RGB pixels (NHWC uint8).
func load(ctx context.Context, path string) ([][]byte, []int32, []byte, error) {
	r, err := arrowio.OpenDataset(ctx, path, arrowio.ReadOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	defer r.Release()
	var imgs [][]byte
	var labels []int32
	var raw []byte
	for r.Next() {
		rec := r.Record()
		bin := rec.Column(2).(*array.Binary)
		for i := 0; i < int(rec.NumRows()); i++ {
			b := append([]byte(nil), bin.Value(i)...)
			imgs = append(imgs, b)
			labels = append(labels, rec.Column(1).(*array.Int32).Value(i))
			img, err := arrowio.DecodeImage(b)
			if err != nil {
				return nil, nil, nil, err
			}
			chw := make([]float32, 3*img.Bounds().Dx()*img.Bounds().Dy())
			arrowio.ToCHW(chw, img)
			plane := len(chw) / 3
			for p := 0; p < plane; p++ {
				for c := 0; c < 3; c++ {
					raw = append(raw, uint8(chw[c*plane+p]*255+0.5))
				}
			}
		}
	}
	return imgs, labels, raw, r.Err()
}

// torch runs the PyTorch throughput script on the decoded images.
func torch(python, script, enc string, raw []byte, n, threads int) (float64, string, error) {
	dir, err := os.MkdirTemp("", "embed-bench-")
	if err != nil {
		return 0, "", err
	}
	defer os.RemoveAll(dir)
	npz := filepath.Join(dir, "x.npz")
	side := 32
	if err := writeNPZ(npz, raw, []int{n, side, side, 3}); err != nil {
		return 0, "", err
	}
	out, err := exec.Command(python, script, enc, npz, fmt.Sprint(threads)).Output()
	if err != nil {
		return 0, "", fmt.Errorf("%s: %v", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res struct {
		Engine   string  `json:"engine"`
		Threads  int     `json:"threads"`
		ImgPerS  float64 `json:"img_per_s"`
		BestSecs float64 `json:"best_s"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return 0, "", err
	}
	return res.ImgPerS, fmt.Sprintf("%s (%d threads)", res.Engine, res.Threads), nil
}

// writeNPZ writes a uint8 array as x.npy inside an .npz (zip) file.
func writeNPZ(path string, data []byte, shape []int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	z := zip.NewWriter(f)
	w, err := z.CreateHeader(&zip.FileHeader{Name: "x.npy", Method: zip.Store})
	if err != nil {
		return err
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	header := fmt.Sprintf("{'descr': '|u1', 'fortran_order': False, 'shape': (%s), }", strings.Join(dims, ", "))
	for (10+len(header)+1)%64 != 0 {
		header += " "
	}
	header += "\n"
	pre := []byte("\x93NUMPY\x01\x00")
	pre = append(pre, byte(len(header)), byte(len(header)>>8))
	if _, err := w.Write(append(pre, header...)); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return z.Close()
}

type one struct{ r array.RecordReader }

func (o one) Open(port string) (array.RecordReader, error) {
	if port != "images" {
		return nil, plugin.ErrNotConnected
	}
	o.r.Retain()
	return o.r, nil
}

type drop struct{}

func (drop) Create(string, *arrow.Schema) (plugin.RecordWriter, error) { return drop{}, nil }
func (drop) Write(arrow.Record) error                                  { return nil }
func (drop) Close() error                                              { return nil }
