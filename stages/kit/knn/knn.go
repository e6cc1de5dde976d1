// Package knn finds exact k nearest neighbours by cosine similarity, for N
// up to a few hundred thousand rows: blocked matrix products, either in ONNX
// Runtime (MatMul + TopK graphs; the default, it also runs on a GPU) or in
// Go. It also turns neighbour lists into label agreement.
//
// # Formula
//
// Rows are standardised per dimension (z-scores over all rows) and scaled to
// unit length, so that the dot product is the cosine similarity of the
// standardised features. For row i the neighbours are the k rows j != i of
// highest similarity; ties are broken by the lower index.
package knn

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/advancedclimatesystems/gonnx/onnx"
	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/tcore-dev/tcore/stages/kit/onnxgraph"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Engine selects the implementation.
type Engine string

// The engines.
const (
	EngineORT Engine = "ort"
	EngineGo  Engine = "go"
)

// Options tunes Neighbors.
type Options struct {
	Engine Engine // default EngineORT
	// Block is the number of query rows per product (default 512).
	Block int
	ORT   ort.Options
}

// Standardize returns the rows of x (n rows of d values) standardised per
// dimension and scaled to unit length. Constant dimensions become 0; a row
// that is all zero stays zero. x is not modified.
func Standardize(x []float32, n, d int) []float32 {
	if len(x) != n*d {
		panic(fmt.Sprintf("knn: Standardize: len(x)=%d, want %d", len(x), n*d))
	}
	mean := make([]float64, d)
	sq := make([]float64, d)
	for i := 0; i < n; i++ {
		row := x[i*d : (i+1)*d]
		for j, v := range row {
			mean[j] += float64(v)
			sq[j] += float64(v) * float64(v)
		}
	}
	inv := make([]float64, d)
	for j := range mean {
		mean[j] /= float64(n)
		v := sq[j]/float64(n) - mean[j]*mean[j]
		if v > 1e-12 {
			inv[j] = 1 / math.Sqrt(v)
		}
	}
	out := make([]float32, len(x))
	for i := 0; i < n; i++ {
		row := out[i*d : (i+1)*d]
		var norm float64
		for j := range row {
			z := (float64(x[i*d+j]) - mean[j]) * inv[j]
			row[j] = float32(z)
			norm += z * z
		}
		if norm > 0 {
			s := float32(1 / math.Sqrt(norm))
			for j := range row {
				row[j] *= s
			}
		}
	}
	return out
}

// Neighbors returns, for each of the n rows of x (d values each, already
// standardised), the indices of its k nearest other rows, nearest first
// (n*k values).
func Neighbors(x []float32, n, d, k int, opt Options) ([]int32, error) {
	if k <= 0 || k >= n {
		return nil, fmt.Errorf("knn: k=%d, want 0 < k < n=%d", k, n)
	}
	if opt.Block <= 0 {
		opt.Block = 512
	}
	switch opt.Engine {
	case EngineGo:
		return neighborsGo(x, n, d, k, opt.Block), nil
	case "", EngineORT:
		return neighborsORT(x, n, d, k, opt)
	}
	return nil, fmt.Errorf("knn: unknown engine %q", opt.Engine)
}

// Agreement returns, for each row, the fraction of its k neighbours whose
// label equals its own.
func Agreement(nb []int32, labels []int32, k int) []float32 {
	n := len(labels)
	out := make([]float32, n)
	for i := 0; i < n; i++ {
		same := 0
		for _, j := range nb[i*k : (i+1)*k] {
			if labels[j] == labels[i] {
				same++
			}
		}
		out[i] = float32(same) / float32(k)
	}
	return out
}

// topK keeps the k+1 best (similarity, index) pairs, best first; ties by
// lower index.
type topK struct {
	v []float32
	i []int32
}

func (t *topK) push(v float32, i int32) {
	k := len(t.v)
	if v < t.v[k-1] || (v == t.v[k-1] && i > t.i[k-1]) {
		return
	}
	p := k - 1
	for p > 0 && (v > t.v[p-1] || (v == t.v[p-1] && i < t.i[p-1])) {
		t.v[p], t.i[p] = t.v[p-1], t.i[p-1]
		p--
	}
	t.v[p], t.i[p] = v, i
}

// dropSelf writes the k best indices other than self into dst.
func dropSelf(dst []int32, idx []int32, self int32) {
	o := 0
	for _, j := range idx {
		if j == self || o == len(dst) {
			continue
		}
		dst[o] = j
		o++
	}
}

func neighborsGo(x []float32, n, d, k, block int) []int32 {
	out := make([]int32, n*k)
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	next := make(chan int, n/block+1)
	for s := 0; s < n; s += block {
		next <- s
	}
	close(next)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tops := make([]topK, block)
			for i := range tops {
				tops[i] = topK{v: make([]float32, k+1), i: make([]int32, k+1)}
			}
			for s := range next {
				e := min(s+block, n)
				for q := s; q < e; q++ {
					t := &tops[q-s]
					for j := range t.v {
						t.v[j], t.i[j] = float32(math.Inf(-1)), math.MaxInt32
					}
				}
				// Tile over candidates so a candidate row is reused by 4
				// queries while it is in cache.
				for c := 0; c < n; c++ {
					cr := x[c*d : (c+1)*d]
					q := s
					for ; q+4 <= e; q += 4 {
						a0, a1, a2, a3 := dot4(x[q*d:(q+4)*d], cr, d)
						tops[q-s].push(a0, int32(c))
						tops[q+1-s].push(a1, int32(c))
						tops[q+2-s].push(a2, int32(c))
						tops[q+3-s].push(a3, int32(c))
					}
					for ; q < e; q++ {
						tops[q-s].push(dot(x[q*d:(q+1)*d], cr), int32(c))
					}
				}
				for q := s; q < e; q++ {
					dropSelf(out[q*k:(q+1)*k], tops[q-s].i, int32(q))
				}
			}
		}()
	}
	wg.Wait()
	return out
}

func dot(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dot4 returns the dot products of four consecutive rows of q with c.
func dot4(q, c []float32, d int) (float32, float32, float32, float32) {
	q0, q1, q2, q3 := q[:d], q[d:2*d], q[2*d:3*d], q[3*d:4*d]
	var s0, s1, s2, s3 float32
	for i, v := range c[:d] {
		s0 += q0[i] * v
		s1 += q1[i] * v
		s2 += q2[i] * v
		s3 += q3[i] * v
	}
	return s0, s1, s2, s3
}

// knnModel is MatMul(q [b, d], kt [d, n]) then TopK(k+1) along rows.
func knnModel(k int) ([]byte, error) {
	b := onnxgraph.NewBuilder("q", []int64{-1, -1}, 13)
	b.AddInput("kt", []int64{-1, -1})
	s := b.Op("MatMul", "", []string{"q", "kt"})
	kk := b.Int64Const(int64(k + 1))
	b.Outputs("TopK", []string{"values", "indices"}, []string{s, kk}, onnxgraph.IntAttr("axis", 1), onnxgraph.IntAttr("largest", 1), onnxgraph.IntAttr("sorted", 1))
	b.OutputOf("indices", onnx.TensorProto_INT64, 2)
	return b.Model().Bytes()
}

func neighborsORT(x []float32, n, d, k int, opt Options) ([]int32, error) {
	model, err := knnModel(k)
	if err != nil {
		return nil, err
	}
	sess, err := ort.NewRawSession(model, []string{"q", "kt"}, []string{"indices"}, opt.ORT)
	if err != nil {
		return nil, err
	}
	defer sess.Destroy()
	// kt: the transposed matrix, once.
	kt := make([]float32, n*d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			kt[j*n+i] = x[i*d+j]
		}
	}
	ktT, err := ortgo.NewTensor(ortgo.NewShape(int64(d), int64(n)), kt)
	if err != nil {
		return nil, err
	}
	defer ktT.Destroy()
	out := make([]int32, n*k)
	for s := 0; s < n; s += opt.Block {
		e := min(s+opt.Block, n)
		q, err := ortgo.NewTensor(ortgo.NewShape(int64(e-s), int64(d)), x[s*d:e*d])
		if err != nil {
			return nil, err
		}
		outs := []ortgo.Value{nil}
		err = sess.Run([]ortgo.Value{q, ktT}, outs)
		q.Destroy()
		if err != nil {
			return nil, fmt.Errorf("knn: %w", err)
		}
		idx, ok := outs[0].(*ortgo.Tensor[int64])
		if !ok {
			outs[0].Destroy()
			return nil, errors.New("knn: TopK indices are not int64")
		}
		data := idx.GetData()
		row := make([]int32, k+1)
		for q := s; q < e; q++ {
			for j := 0; j <= k; j++ {
				row[j] = int32(data[(q-s)*(k+1)+j])
			}
			// TopK orders ties arbitrarily: make the self entry go, and
			// keep the order by similarity.
			dropSelf(out[q*k:(q+1)*k], row, int32(q))
		}
		outs[0].Destroy()
	}
	return out, nil
}
