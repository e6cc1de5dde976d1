// Package feat holds a whole features/v1 table in memory as plain slices,
// for the stages that need every row (kNN, head training), and builds the
// scores/v1 records they write.
package feat

import (
	"fmt"
	"math"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// Matrix is n rows of D values, row-major.
type Matrix struct {
	Name string
	D    int
	X    []float32
}

// Row returns row i.
func (m *Matrix) Row(i int) []float32 { return m.X[i*m.D : (i+1)*m.D] }

// Table is a features/v1 table in memory.
type Table struct {
	IDs       []uint64
	Labels    []int32
	Embedding Matrix
	Layers    []Matrix // the layer.<name> columns, in order
	// Preprocess is the input normalisation the encoder was given when
	// these features were made (arrowio.PreprocessKey; "" for none).
	Preprocess string
}

// N returns the number of rows.
func (t *Table) N() int { return len(t.IDs) }

// ReadAll reads every batch of r (features/v1). It does not release r.
func ReadAll(r array.RecordReader) (*Table, error) {
	t := &Table{}
	s := r.Schema()
	if v, ok := s.Metadata().GetValue(arrowio.PreprocessKey); ok {
		t.Preprocess = v
	}
	t.Embedding.Name = arrowio.ColEmbedding
	t.Embedding.D = int(s.Field(2).Type.(*arrow.FixedSizeListType).Len())
	for _, l := range arrowio.FeatureLayers(s) {
		t.Layers = append(t.Layers, Matrix{Name: l.Name, D: l.Channels})
	}
	for r.Next() {
		rec := r.Record()
		t.IDs = append(t.IDs, rec.Column(0).(*array.Uint64).Uint64Values()...)
		t.Labels = append(t.Labels, rec.Column(1).(*array.Int32).Int32Values()...)
		for c := 2; c < int(rec.NumCols()); c++ {
			l := rec.Column(c).(*array.FixedSizeList)
			k := int(l.DataType().(*arrow.FixedSizeListType).Len())
			vals := l.ListValues().(*array.Float32).Float32Values()[l.Offset()*k : (l.Offset()+l.Len())*k]
			if c == 2 {
				t.Embedding.X = append(t.Embedding.X, vals...)
			} else {
				t.Layers[c-3].X = append(t.Layers[c-3].X, vals...)
			}
		}
	}
	return t, r.Err()
}

// Classes returns the number of classes (max label + 1) and the row count
// of each.
func (t *Table) Classes() (int, []int) {
	c := 0
	for _, l := range t.Labels {
		c = max(c, int(l)+1)
	}
	return c, CountPer(nil, t.Labels, c)
}

// CountPer returns, for each of nc classes, how many rows of that label
// mask marks (nil mask: every row).
func CountPer(mask []bool, labels []int32, nc int) []int {
	counts := make([]int, nc)
	for i, l := range labels {
		if mask == nil || mask[i] {
			counts[l]++
		}
	}
	return counts
}

// CheckClasses validates labels against a declared class count (0: take
// max label + 1) and requires at least two populated classes. It returns
// the class count.
func (t *Table) CheckClasses(declared int) (int, error) {
	c, counts := t.Classes()
	if declared > 0 {
		for i, l := range t.Labels {
			if int(l) >= declared {
				return 0, plugin.BadInput(&arrowio.DataError{File: "input port features", Column: "label", Row: int64(i),
					Msg: fmt.Sprintf("label %d outside the declared classes 0..%d (sample_id %d)", l, declared-1, t.IDs[i])})
			}
		}
		c = declared
		counts = append(counts, make([]int, declared-len(counts))...)
	}
	populated := 0
	for _, n := range counts {
		if n > 0 {
			populated++
		}
	}
	if populated < 2 {
		return 0, plugin.BadInputf("port \"features\": %d rows of %d class(es); T-Core needs at least two classes", t.N(), populated)
	}
	return c, nil
}

// SameAsLastLayer reports whether the embedding is (numerically) the
// global average pool of the last probed layer, as for most CNNs.
func (t *Table) SameAsLastLayer() bool {
	if len(t.Layers) == 0 {
		return false
	}
	last := t.Layers[len(t.Layers)-1]
	if last.D != t.Embedding.D {
		return false
	}
	var scale, diff float64
	for i, v := range t.Embedding.X {
		scale = max(scale, math.Abs(float64(v)))
		diff = max(diff, math.Abs(float64(v-last.X[i])))
	}
	return diff <= 1e-4*max(scale, 1e-6)
}

// Column is one scores/v1 column: exactly one of F, I, B set.
type Column struct {
	Name string // "<stage>.<column>"
	F    []float32
	I    []int32
	B    []bool
}

// ScoresRecord builds a scores/v1 record from ids and columns.
func ScoresRecord(ids []uint64, cols []Column) (arrow.Record, error) {
	var fields []arrow.Field
	for _, c := range cols {
		switch {
		case c.F != nil:
			fields = append(fields, arrow.Field{Name: c.Name, Type: arrow.PrimitiveTypes.Float32})
		case c.I != nil:
			fields = append(fields, arrow.Field{Name: c.Name, Type: arrow.PrimitiveTypes.Int32})
		case c.B != nil:
			fields = append(fields, arrow.Field{Name: c.Name, Type: arrow.FixedWidthTypes.Boolean})
		default:
			return nil, fmt.Errorf("feat: column %s has no values", c.Name)
		}
	}
	s, err := arrowio.ScoresSchema(fields...)
	if err != nil {
		return nil, err
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	b.Field(0).(*array.Uint64Builder).AppendValues(ids, nil)
	for i, c := range cols {
		switch fb := b.Field(i + 1).(type) {
		case *array.Float32Builder:
			fb.AppendValues(c.F, nil)
		case *array.Int32Builder:
			fb.AppendValues(c.I, nil)
		case *array.BooleanBuilder:
			fb.AppendValues(c.B, nil)
		}
	}
	return b.NewRecord(), nil
}

// Sanitize turns a layer name into a column-name part.
func Sanitize(name string) string { return strings.ReplaceAll(name, " ", "_") }

// Scores reads a scores/v1 stream and returns the named columns in the row
// order of t, joined by sample_id. Every id of t must be there and no
// other (else a bad-input error naming the port and the id).
func Scores(r array.RecordReader, port string, t *Table, names ...string) (map[string]Column, error) {
	pos := make(map[uint64]int, t.N())
	for i, id := range t.IDs {
		pos[id] = i
	}
	out := map[string]Column{}
	seen := make([]bool, t.N())
	idx := map[string]int{}
	s := r.Schema()
	for _, n := range names {
		f := s.FieldIndices(n)
		if len(f) == 0 {
			return nil, plugin.PortError(port, plugin.BadInputf("no column %q (columns: %v)", n, fieldNames(s)))
		}
		idx[n] = f[0]
		c := Column{Name: n}
		switch s.Field(f[0]).Type.ID() {
		case arrow.FLOAT32:
			c.F = make([]float32, t.N())
		case arrow.INT32:
			c.I = make([]int32, t.N())
		case arrow.BOOL:
			c.B = make([]bool, t.N())
		}
		out[n] = c
	}
	var row int64
	for r.Next() {
		rec := r.Record()
		ids := rec.Column(0).(*array.Uint64).Uint64Values()
		for i, id := range ids {
			p, ok := pos[id]
			if !ok {
				return nil, plugin.PortError(port, plugin.BadInput(&arrowio.DataError{File: "input port " + port, Column: arrowio.ColSampleID, Row: row + int64(i),
					Msg: fmt.Sprintf("sample_id %d is not in the features", id)}))
			}
			seen[p] = true
			for n, ci := range idx {
				col := rec.Column(ci)
				c := out[n]
				switch a := col.(type) {
				case *array.Float32:
					c.F[p] = a.Value(i)
				case *array.Int32:
					c.I[p] = a.Value(i)
				case *array.Boolean:
					c.B[p] = a.IsValid(i) && a.Value(i)
				}
			}
		}
		row += rec.NumRows()
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	for i, ok := range seen {
		if !ok {
			return nil, plugin.PortError(port, plugin.BadInputf("sample_id %d of the features has no row here (mismatched sample_ids between ports)", t.IDs[i]))
		}
	}
	return out, nil
}

func fieldNames(s *arrow.Schema) []string {
	var out []string
	for _, f := range s.Fields() {
		out = append(out, f.Name)
	}
	return out
}

// Open reads a whole features/v1 port.
func Open(in plugin.Inputs, port string) (*Table, error) {
	r, err := in.Open(port)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	return ReadAll(r)
}

// OpenScores reads the named columns of a scores/v1 port, joined to t.
func OpenScores(in plugin.Inputs, port string, t *Table, names ...string) (map[string]Column, error) {
	r, err := in.Open(port)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	return Scores(r, port, t, names...)
}

// Bools returns the boolean column name of a port read by OpenScores.
func Bools(in plugin.Inputs, port string, t *Table, name string) ([]bool, error) {
	cols, err := OpenScores(in, port, t, name)
	if err != nil {
		return nil, err
	}
	if cols[name].B == nil {
		return nil, plugin.PortError(port, plugin.BadInputf("column %q is not boolean", name))
	}
	return cols[name].B, nil
}

// WriteScores writes ids and cols as one scores/v1 record to port.
func WriteScores(out plugin.Outputs, port string, ids []uint64, cols []Column) error {
	rec, err := ScoresRecord(ids, cols)
	if err != nil {
		return err
	}
	defer rec.Release()
	w, err := out.Create(port, rec.Schema())
	if err != nil {
		return err
	}
	if err := w.Write(rec); err != nil {
		return err
	}
	return w.Close()
}

// ByClass returns the row indices of each class, by label.
func (t *Table) ByClass() map[int32][]int {
	out := map[int32][]int{}
	for i, l := range t.Labels {
		out[l] = append(out[l], i)
	}
	return out
}

// Verdict is a baseline's per-row decision: a suspicion score (higher is
// more suspect) and whether the row is trusted.
type Verdict struct {
	Score   []float32
	Trusted []bool
}

// WriteVerdict writes v as <stage>.score and <stage>.trusted on the scores
// port, and returns metrics: rows, trusted, and the removed rows per class.
func WriteVerdict(out plugin.Outputs, stage string, t *Table, v Verdict) (plugin.Metrics, error) {
	if err := WriteScores(out, "scores", t.IDs, []Column{{Name: stage + ".score", F: v.Score}, {Name: stage + ".trusted", B: v.Trusted}}); err != nil {
		return nil, err
	}
	removed := map[string]int{}
	kept := 0
	for i, ok := range v.Trusted {
		if ok {
			kept++
		} else {
			removed[fmt.Sprint(t.Labels[i])]++
		}
	}
	return plugin.Metrics{"rows": t.N(), "trusted": kept, "removed_per_class": removed}, nil
}

// LayerMeans returns each probed channel's mean over the selected rows
// (all rows when sel is nil), by layer name.
func (t *Table) LayerMeans(sel []bool) map[string][]float32 {
	out := map[string][]float32{}
	for _, l := range t.Layers {
		m := make([]float64, l.D)
		n := 0
		for i := 0; i < t.N(); i++ {
			if sel != nil && !sel[i] {
				continue
			}
			n++
			for c := 0; c < l.D; c++ {
				m[c] += float64(l.X[i*l.D+c])
			}
		}
		v := make([]float32, l.D)
		for c := range v {
			v[c] = float32(m[c] / float64(max(n, 1)))
		}
		out[l.Name] = v
	}
	return out
}

// OpenProbed is Open for stages that need the probed layers, not only the
// embedding.
func OpenProbed(in plugin.Inputs, port string) (*Table, error) {
	t, err := Open(in, port)
	if err != nil {
		return nil, err
	}
	if len(t.Layers) == 0 {
		return nil, plugin.PortError(port, plugin.BadInputf("no probed layers: embed with layers [\"auto\"]"))
	}
	return t, nil
}
