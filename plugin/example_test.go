package plugin_test

import (
	"context"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/internal/tabletest"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/stats"
)

// A stage runs in process through Local, with the same checks as in a
// plugin process; Tables holds its inputs and outputs in memory.
func ExampleLocal() {
	schema, recs := tabletest.Make(memory.DefaultAllocator, arrowio.KindImages, 30, 10, 0, 1)
	in := plugin.NewTables()
	defer in.Release()
	in.Put("images", schema, recs...)
	for _, r := range recs {
		r.Release()
	}
	out := plugin.NewTables()
	defer out.Release()

	m, err := plugin.Local(stats.New()).Run(context.Background(), []byte(`{"min_per_class": 1}`), in, out, nil)
	fmt.Println(m["rows"], err, out.Get("scores").Rows())

	_, err = plugin.Local(stats.New()).Run(context.Background(), []byte(`{"min_per_clas": 1}`), in, out, nil)
	fmt.Println(err)
	// Output:
	// 30 <nil> 30
	// stage "stats": bad input: unknown parameter "min_per_clas" (known: min_per_class)
}
