package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
)

// batchInputs serves its records on the features port.
type batchInputs []arrow.Record

func (r batchInputs) Open(port string) (array.RecordReader, error) {
	if port != "features" {
		return nil, plugin.ErrNotConnected
	}
	return array.NewRecordReader(r[0].Schema(), r)
}

// countOutputs counts the rows written and drops them.
type countOutputs struct{ rows atomic.Int64 }

func (c *countOutputs) Create(string, *arrow.Schema) (plugin.RecordWriter, error) { return c, nil }
func (c *countOutputs) Write(rec arrow.Record) error {
	c.rows.Add(rec.NumRows())
	return nil
}
func (c *countOutputs) Close() error { return nil }

// BenchmarkBoundary moves features/v1 batches (4096 rows x 256 float32, 4
// MiB each) into the echo stage, in process and in a plugin process (every
// byte over the gRPC stream, or the input by path and the output through a
// file, as tcore run moves them): one-way
// (the stage reads and validates every batch, writes nothing) and
// round-trip (every batch comes back and is validated by the host). MB/s
// counts each batch once.
func BenchmarkBoundary(b *testing.B) {
	const rows, dim, batches = 4096, 256, 64
	s := arrowio.FeaturesSchema(dim, nil)
	_, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindFeatures, rows, rows, dim, 1)
	// Batches share the label and embedding columns; each has its own ids
	// (sample_ids are unique across a stream).
	in := make(batchInputs, batches)
	for i := range in {
		ib := array.NewUint64Builder(memory.DefaultAllocator)
		for j := 0; j < rows; j++ {
			ib.Append(uint64(i*rows + j))
		}
		ids := ib.NewArray()
		in[i] = array.NewRecord(s, []arrow.Array{ids, recs[0].Column(1), recs[0].Column(2)}, rows)
	}
	bytesPerBatch := int64(rows) * (8 + 4 + dim*4)
	// The same batches in a file, as a run's node output is.
	tabs := plugin.NewTables()
	tabs.Put("features", s, in...)
	files := asFiles(b, b.TempDir(), tabs, "features")
	tabs.Release()
	for _, mode := range []string{"in-process", "plugin", "plugin-files"} {
		for _, dir := range []string{"one-way", "round-trip"} {
			b.Run(mode+"/"+dir, func(b *testing.B) {
				var st plugin.Stage = plugin.Local(testplugin.Echo{})
				var ins plugin.Inputs = in
				switch mode {
				case "plugin": // every byte over the gRPC stream
					st = launchEchoWith(b, plugin.LaunchOptions{StreamOnly: true})
				case "plugin-files": // the input by path, the output through a file
					st, ins = launchEcho(b), files
				}
				params := json.RawMessage(`{"sink": true}`)
				wantRows := int64(0)
				if dir == "round-trip" {
					params, wantRows = nil, rows*batches
				}
				b.SetBytes(bytesPerBatch * batches)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					out := &countOutputs{}
					m, err := st.Run(context.Background(), params, ins, out, nil)
					if err != nil {
						b.Fatal(err)
					}
					if out.rows.Load() != wantRows || m["rows"].(map[string]any)["features"].(float64) != rows*batches {
						b.Fatal(fmt.Sprintf("rows %d, metrics %v", out.rows.Load(), m))
					}
				}
			})
		}
	}
}
