package synth

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/feat"
)

// RunVerdict runs a baseline stage in process on the set (features port;
// seeds, when given, on the seeds port as sift.seed) and returns its
// <stage>.trusted column by row.
func RunVerdict(t testing.TB, st plugin.Stage, params string, s *Set, seeds []bool) ([]bool, plugin.Metrics, error) {
	t.Helper()
	rec := s.Record()
	defer rec.Release()
	in := plugin.NewTables()
	defer in.Release()
	in.Put("features", rec.Schema(), rec)
	if seeds != nil {
		sr, err := feat.ScoresRecord(s.Table.IDs, []feat.Column{{Name: "sift.seed", B: seeds}})
		if err != nil {
			t.Fatal(err)
		}
		in.Put("seeds", sr.Schema(), sr)
		sr.Release()
	}
	out := plugin.NewTables()
	defer out.Release()
	name := st.Spec().Name
	m, err := plugin.Local(st).Run(context.Background(), json.RawMessage(params), in, out, nil)
	if err != nil {
		return nil, m, err
	}
	var trusted []bool
	for _, r := range out.Get("scores").Records {
		c := r.Column(r.Schema().FieldIndices(name + ".trusted")[0]).(*array.Boolean)
		for i := 0; i < c.Len(); i++ {
			trusted = append(trusted, c.Value(i))
		}
	}
	return trusted, m, nil
}

// Purity returns how many rows are selected and how many of them are
// poison.
func (s *Set) Purity(selected []bool) (n, poisoned int) {
	for i, ok := range selected {
		if ok {
			n++
			if s.IsPoison[i] {
				poisoned++
			}
		}
	}
	return n, poisoned
}
