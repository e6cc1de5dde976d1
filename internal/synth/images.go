package synth

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/plugin"
)

// EmbeddedImages makes n seeded noise images of size x size (labels i %
// classes) and embeds them with the embed stage under the encoder at
// path, probing its layers: the inputs a channel-filtering stage takes
// (ports images and features).
func EmbeddedImages(t testing.TB, embed plugin.Stage, path string, n, size, classes int) *plugin.Tables {
	t.Helper()
	var imgs [][]byte
	var labels []int32
	for i := 0; i < n; i++ {
		imgs, labels = append(imgs, tabletest.PNG(size, size, uint64(i))), append(labels, int32(i%classes))
	}
	return EmbeddedImagesOf(t, embed, path, imgs, labels)
}

// EmbeddedImagesOf is EmbeddedImages for given images (PNG or JPEG bytes)
// and labels; sample_id is the index.
func EmbeddedImagesOf(t testing.TB, embed plugin.Stage, path string, imgs [][]byte, labels []int32) *plugin.Tables {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrowio.ImagesSchema())
	for i := range imgs {
		b.Field(0).(*array.Uint64Builder).Append(uint64(i))
		b.Field(1).(*array.Int32Builder).Append(labels[i])
		b.Field(2).(*array.BinaryBuilder).Append(imgs[i])
	}
	rec := b.NewRecord()
	b.Release()
	defer rec.Release()
	in := plugin.NewTables()
	in.Put("images", rec.Schema(), rec)
	out := plugin.NewTables()
	defer out.Release()
	params, _ := json.Marshal(map[string]any{"encoder": path})
	if _, err := plugin.Local(embed).Run(context.Background(), params, in, out, nil); err != nil {
		t.Fatal(err)
	}
	f := out.Get("features")
	in.Put("features", f.Schema, f.Records...)
	return in
}
