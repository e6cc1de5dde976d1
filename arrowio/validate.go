package arrowio

import (
	"math"
	"unsafe"

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
	ids    idSet
}

// NewValidator returns a Validator for a stream of kind k; source (a file
// or port name) goes into error messages.
func NewValidator(k Kind, source string) *Validator {
	return &Validator{kind: k, source: source}
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
				if prev, dup := v.ids.add(id, v.rows+int64(i)); dup {
					return dataErr(v.source, f.Name, v.rows+int64(i), "sample_id %d repeats row %d", id, prev)
				}
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
	all := vals.Float32Values()
	if off+l.Len()*dim > len(all) {
		return dataErr(v.source, name, v.rows, "%d values for %d rows of %d: the file is malformed", len(all)-off, l.Len(), dim)
	}
	raw := all[off : off+l.Len()*dim]
	if vals.NullN() > 0 {
		for j := range raw {
			if vals.IsNull(off + j) {
				return dataErr(v.source, name, v.rows+int64(j/dim), "value %d is null", j%dim)
			}
		}
	}
	if j := firstNonFinite(raw); j >= 0 {
		return dataErr(v.source, name, v.rows+int64(j/dim), "value %d is %v", j%dim, raw[j])
	}
	return nil
}

// firstNonFinite returns the index of the first NaN or infinity in xs, or
// -1. It tests the exponent bits of two values at a time: for the bits b of
// a float32 without its sign, b + 0x00800000 reaches bit 31 exactly when the
// exponent is all ones (NaN or infinity).
func firstNonFinite(xs []float32) int {
	const (
		mask = 0x7fffffff7fffffff
		add  = 0x0080000000800000
		top  = 0x8000000080000000
	)
	pairs := len(xs) / 2
	if pairs > 0 {
		u := unsafe.Slice((*uint64)(unsafe.Pointer(&xs[0])), pairs)
		const block = 256
		for start := 0; start < pairs; start += block {
			end := min(start+block, pairs)
			var acc uint64
			for _, w := range u[start:end] {
				acc |= (w & mask) + add
			}
			if acc&top != 0 {
				for j := 2 * start; j < 2*end; j++ {
					if f := float64(xs[j]); math.IsNaN(f) || math.IsInf(f, 0) {
						return j
					}
				}
			}
		}
	}
	for j := 2 * pairs; j < len(xs); j++ {
		if f := float64(xs[j]); math.IsNaN(f) || math.IsInf(f, 0) {
			return j
		}
	}
	return -1
}

func (v *Validator) locate(err error) error {
	if de, ok := err.(*DataError); ok && de.File == "" {
		c := *de
		c.File = v.source
		return &c
	}
	return err
}

// idSet remembers the row of each sample_id seen. Ids below denseLimit (the
// usual 0..N-1) live in a slice indexed by id, the rest in a map.
type idSet struct {
	dense  []int64 // row+1, 0 = unseen
	sparse map[uint64]int64
}

const denseLimit = 1 << 24

func (s *idSet) add(id uint64, row int64) (prev int64, dup bool) {
	if id < denseLimit {
		if id >= uint64(len(s.dense)) {
			n := max(2*len(s.dense), int(id)+1, 1024)
			grown := make([]int64, min(n, denseLimit))
			copy(grown, s.dense)
			s.dense = grown
		}
		if p := s.dense[id]; p != 0 {
			return p - 1, true
		}
		s.dense[id] = row + 1
		return 0, false
	}
	if s.sparse == nil {
		s.sparse = map[uint64]int64{}
	}
	if p, ok := s.sparse[id]; ok {
		return p, true
	}
	s.sparse[id] = row
	return 0, false
}
