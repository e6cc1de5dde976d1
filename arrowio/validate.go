package arrowio

import (
	"math"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// Validator checks the rows of one table stream of a given kind, batch after
// batch: no nulls in required columns, unique sample_ids, non-negative
// labels, finite features. It keeps the ids it has seen, so one Validator
// serves one stream. The zero value is not usable; call NewValidator.
type Validator struct {
	kind   Kind
	source string
	rows   int64
	seen   map[uint64]int64
}

// NewValidator returns a Validator for a stream of kind k; source (a file
// or port name) goes into error messages.
func NewValidator(k Kind, source string) *Validator {
	return &Validator{kind: k, source: source, seen: make(map[uint64]int64)}
}

// Rows returns the number of rows checked so far.
func (v *Validator) Rows() int64 { return v.rows }

// Check validates the schema and rows of rec. Row numbers in errors count
// from the start of the stream. Check does not retain rec.
func (v *Validator) Check(rec arrow.Record) error {
	if err := ValidateSchema(rec.Schema(), v.kind); err != nil {
		return v.locate(err)
	}
	n := rec.NumRows()
	defer func() { v.rows += n }()
	s := rec.Schema()
	for c, f := range s.Fields() {
		col := rec.Column(c)
		if col.NullN() > 0 && v.required(f.Name) {
			for i := 0; i < col.Len(); i++ {
				if col.IsNull(i) {
					return dataErr(v.source, f.Name, v.rows+int64(i), "null value")
				}
			}
		}
		switch f.Name {
		case ColSampleID:
			if v.kind == KindChannels {
				break
			}
			ids := col.(*array.Uint64).Uint64Values()
			for i, id := range ids {
				if prev, dup := v.seen[id]; dup {
					return dataErr(v.source, f.Name, v.rows+int64(i), "sample_id %d repeats row %d", id, prev)
				}
				v.seen[id] = v.rows + int64(i)
			}
		case ColLabel, "orig_label", "channel":
			for i, l := range col.(*array.Int32).Int32Values() {
				if l < 0 && col.IsValid(i) {
					return dataErr(v.source, f.Name, v.rows+int64(i), "negative value %d", l)
				}
			}
		case ColImage:
			b := col.(*array.Binary)
			for i := 0; i < b.Len(); i++ {
				if b.ValueLen(i) == 0 {
					return dataErr(v.source, f.Name, v.rows+int64(i), "empty image")
				}
			}
		}
		if v.kind == KindFeatures && c >= 2 {
			if err := v.finite(f.Name, col.(*array.FixedSizeList)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *Validator) required(col string) bool {
	if v.kind == KindScores {
		return col == ColSampleID
	}
	return true
}

func (v *Validator) finite(name string, l *array.FixedSizeList) error {
	vals := l.ListValues().(*array.Float32)
	dim := int(l.DataType().(*arrow.FixedSizeListType).Len())
	off := l.Offset() * dim
	raw := vals.Float32Values()[off : off+l.Len()*dim]
	if vals.NullN() > 0 {
		for j := range raw {
			if vals.IsNull(off + j) {
				return dataErr(v.source, name, v.rows+int64(j/dim), "value %d is null", j%dim)
			}
		}
	}
	for j, x := range raw {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return dataErr(v.source, name, v.rows+int64(j/dim), "value %d is %v", j%dim, x)
		}
	}
	return nil
}

func (v *Validator) locate(err error) error {
	if de, ok := err.(*DataError); ok && de.File == "" {
		c := *de
		c.File = v.source
		return &c
	}
	return err
}
