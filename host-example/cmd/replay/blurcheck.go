package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/stages/kit/encoder"
	"github.com/tcore-dev/tcore/stages/kit/feat"
	"github.com/tcore-dev/tcore/stages/kit/knn"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// blurCheck embeds the run's training images through the encoder with a
// Gaussian blur of each sigma in front, and prints how each row's label
// agreement among its 10 nearest rows (the embedding, standardised) changes:
// the share of poisoned and clean rows whose agreement falls by each step,
// with ground truth. With csvPath it writes id, agree_raw and agree_s<sigma>
// per row.
func blurCheck(ctx context.Context, w io.Writer, dir, enc string, t *feat.Table, poison map[uint64]bool, sigmas []float64, csvPath string) error {
	m, err := encoder.Load(enc, "")
	if err != nil {
		return err
	}
	agreeOf := func(x []float32) ([]float32, error) {
		n, d := t.N(), t.Embedding.D
		nb, err := knn.Neighbors(knn.Standardize(x, n, d), n, d, 10, knn.Options{Engine: knn.EngineORT, ORT: ort.Options{}})
		if err != nil {
			return nil, err
		}
		return knn.Agreement(nb, t.Labels, 10), nil
	}
	raw, err := agreeOf(t.Embedding.X)
	if err != nil {
		return err
	}
	cols := [][]float32{raw}
	names := []string{"agree_raw"}
	for _, s := range sigmas {
		sm, err := m.Smoothed(s)
		if err != nil {
			return err
		}
		r, err := arrowio.OpenDataset(ctx, filepath.Join(dir, "nodes", "train", "table.arrow"), arrowio.ReadOptions{})
		if err != nil {
			return err
		}
		var bt *feat.Table
		err = embedAll(ctx, sm, r, func(rr array.RecordReader) error {
			var err error
			bt, err = feat.ReadAll(rr)
			return err
		})
		r.Release()
		if err != nil {
			return err
		}
		if bt.N() != t.N() {
			return fmt.Errorf("blurred embedding has %d rows, the run %d", bt.N(), t.N())
		}
		for i := range t.IDs {
			if bt.IDs[i] != t.IDs[i] {
				return fmt.Errorf("row %d: id %d, the run's %d", i, bt.IDs[i], t.IDs[i])
			}
		}
		a, err := agreeOf(bt.Embedding.X)
		if err != nil {
			return err
		}
		cols = append(cols, a)
		names = append(names, fmt.Sprintf("agree_s%g", s))
	}
	q := func(v []float64) string {
		if len(v) == 0 {
			return "-"
		}
		sort.Float64s(v)
		var b strings.Builder
		for _, p := range []float64{0.1, 0.25, 0.5, 0.75, 0.9} {
			fmt.Fprintf(&b, "%.2f ", v[int(p*float64(len(v)-1))])
		}
		return b.String()
	}
	for k := 1; k < len(cols); k++ {
		var dp, dc []float64
		for i, id := range t.IDs {
			d := float64(cols[0][i] - cols[k][i])
			if poison[id] {
				dp = append(dp, d)
			} else {
				dc = append(dc, d)
			}
		}
		fmt.Fprintf(w, "%s: drop of agreement, poison %s| clean %s\n", names[k], q(dp), q(dc))
	}
	if csvPath == "" {
		return nil
	}
	var b strings.Builder
	b.WriteString("id," + strings.Join(names, ",") + "\n")
	for i, id := range t.IDs {
		fmt.Fprintf(&b, "%d", id)
		for _, c := range cols {
			fmt.Fprintf(&b, ",%.2f", c[i])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(csvPath, []byte(b.String()), 0o644)
}
