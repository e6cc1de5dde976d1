package arrowio

import (
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
)

// MetaKey is the schema metadata key that names a table's kind.
const MetaKey = "tcore.schema"

// Kind names a table kind and its version, e.g. "features/v1".
type Kind string

// The table kinds.
const (
	KindImages   Kind = "images/v1"
	KindFeatures Kind = "features/v1"
	KindScores   Kind = "scores/v1"
	KindChannels Kind = "channels/v1"
	KindTruth    Kind = "truth/v1"
)

// Kinds lists every table kind.
var Kinds = []Kind{KindImages, KindFeatures, KindScores, KindChannels, KindTruth}

// Column names shared by several kinds.
const (
	ColSampleID  = "sample_id"
	ColLabel     = "label"
	ColImage     = "image"
	ColEmbedding = "embedding"
	// LayerPrefix starts the name of a probed-layer column of features/v1.
	LayerPrefix = "layer."
)

// KindOf returns the kind named in s's metadata, and false when s names
// none.
func KindOf(s *arrow.Schema) (Kind, bool) {
	if s == nil {
		return "", false
	}
	v, ok := s.Metadata().GetValue(MetaKey)
	if !ok {
		return "", false
	}
	return Kind(v), true
}

func withKind(k Kind, fields []arrow.Field, extra map[string]string) *arrow.Schema {
	keys := []string{MetaKey}
	vals := []string{string(k)}
	for key, v := range extra {
		if key == MetaKey {
			continue
		}
		keys = append(keys, key)
		vals = append(vals, v)
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md)
}

var (
	fSampleID = arrow.Field{Name: ColSampleID, Type: arrow.PrimitiveTypes.Uint64}
	fLabel    = arrow.Field{Name: ColLabel, Type: arrow.PrimitiveTypes.Int32}
)

// ImagesSchema returns the images/v1 schema.
func ImagesSchema() *arrow.Schema {
	return withKind(KindImages, []arrow.Field{
		fSampleID, fLabel,
		{Name: ColImage, Type: arrow.BinaryTypes.Binary},
	}, nil)
}

// Layer names one probed layer of a features/v1 table and its channel count.
type Layer struct {
	Name     string
	Channels int
}

// FeaturesSchema returns the features/v1 schema for embeddings of dim values
// and the given probed layers (columns "layer.<name>"). It panics when a
// dimension is not positive or a layer name is empty.
func FeaturesSchema(dim int, layers []Layer) *arrow.Schema {
	if dim <= 0 {
		panic(fmt.Sprintf("arrowio: FeaturesSchema: dim=%d, want > 0", dim))
	}
	fields := []arrow.Field{fSampleID, fLabel,
		{Name: ColEmbedding, Type: arrow.FixedSizeListOf(int32(dim), arrow.PrimitiveTypes.Float32)}}
	for _, l := range layers {
		if l.Name == "" || l.Channels <= 0 {
			panic(fmt.Sprintf("arrowio: FeaturesSchema: bad layer %+v", l))
		}
		fields = append(fields, arrow.Field{Name: LayerPrefix + l.Name,
			Type: arrow.FixedSizeListOf(int32(l.Channels), arrow.PrimitiveTypes.Float32)})
	}
	return withKind(KindFeatures, fields, nil)
}

// FeatureLayers returns the probed layers of a features/v1 schema, in column
// order.
func FeatureLayers(s *arrow.Schema) []Layer {
	var out []Layer
	for _, f := range s.Fields() {
		if name, ok := strings.CutPrefix(f.Name, LayerPrefix); ok {
			if t, ok := f.Type.(*arrow.FixedSizeListType); ok {
				out = append(out, Layer{Name: name, Channels: int(t.Len())})
			}
		}
	}
	return out
}

// ScoresSchema returns a scores/v1 schema with sample_id followed by cols,
// each named "<stage>.<column>" and of type float32, int32 or bool. It
// returns an error naming the column when one is not.
func ScoresSchema(cols ...arrow.Field) (*arrow.Schema, error) {
	fields := append([]arrow.Field{fSampleID}, cols...)
	s := withKind(KindScores, fields, nil)
	if err := ValidateSchema(s, KindScores); err != nil {
		return nil, err
	}
	return s, nil
}

// ChannelsSchema returns the channels/v1 schema.
func ChannelsSchema() *arrow.Schema {
	return withKind(KindChannels, []arrow.Field{
		{Name: "layer", Type: arrow.BinaryTypes.String},
		{Name: "channel", Type: arrow.PrimitiveTypes.Int32},
		{Name: "keep", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "score", Type: arrow.PrimitiveTypes.Float32},
		{Name: "signal", Type: arrow.BinaryTypes.String},
	}, nil)
}

// TruthSchema returns the truth/v1 schema.
func TruthSchema() *arrow.Schema {
	return withKind(KindTruth, []arrow.Field{
		fSampleID,
		{Name: "is_poison", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "orig_label", Type: arrow.PrimitiveTypes.Int32},
	}, nil)
}

// ValidateSchema checks that s is a schema of kind want: its metadata names
// want and its columns have the names and types the kind prescribes. The
// error is a *DataError naming the first offending column.
func ValidateSchema(s *arrow.Schema, want Kind) error {
	if s == nil {
		return dataErr("", "", -1, "no schema, want %s", want)
	}
	got, ok := KindOf(s)
	if !ok {
		return dataErr("", "", -1, "schema has no %q metadata, want table kind %s", MetaKey, want)
	}
	if got != want {
		return dataErr("", "", -1, "table kind %s, want %s", got, want)
	}
	switch want {
	case KindImages:
		return fixedColumns(s, ImagesSchema())
	case KindChannels:
		return fixedColumns(s, ChannelsSchema())
	case KindTruth:
		return fixedColumns(s, TruthSchema())
	case KindFeatures:
		return validateFeatures(s)
	case KindScores:
		return validateScores(s)
	}
	return dataErr("", "", -1, "unknown table kind %s", want)
}

func fixedColumns(s, want *arrow.Schema) error {
	if s.NumFields() != want.NumFields() {
		names := make([]string, 0, s.NumFields())
		for _, f := range s.Fields() {
			names = append(names, f.Name)
		}
		wnames := make([]string, 0, want.NumFields())
		for _, f := range want.Fields() {
			wnames = append(wnames, f.Name)
		}
		return dataErr("", "", -1, "columns %v, want %v", names, wnames)
	}
	for i, w := range want.Fields() {
		f := s.Field(i)
		if f.Name != w.Name {
			return dataErr("", f.Name, -1, "column %d is %q, want %q", i, f.Name, w.Name)
		}
		if !arrow.TypeEqual(f.Type, w.Type) {
			return dataErr("", f.Name, -1, "type %s, want %s", f.Type, w.Type)
		}
	}
	return nil
}

func checkField(s *arrow.Schema, i int, name string, typ arrow.DataType) error {
	if s.NumFields() <= i {
		return dataErr("", name, -1, "missing column")
	}
	f := s.Field(i)
	if f.Name != name {
		return dataErr("", f.Name, -1, "column %d is %q, want %q", i, f.Name, name)
	}
	if !arrow.TypeEqual(f.Type, typ) {
		return dataErr("", name, -1, "type %s, want %s", f.Type, typ)
	}
	return nil
}

func validateFeatures(s *arrow.Schema) error {
	if err := checkField(s, 0, ColSampleID, arrow.PrimitiveTypes.Uint64); err != nil {
		return err
	}
	if err := checkField(s, 1, ColLabel, arrow.PrimitiveTypes.Int32); err != nil {
		return err
	}
	for i, f := range s.Fields()[2:] {
		if i == 0 && f.Name != ColEmbedding {
			return dataErr("", f.Name, -1, "column 2 is %q, want %q", f.Name, ColEmbedding)
		}
		if i > 0 && (!strings.HasPrefix(f.Name, LayerPrefix) || len(f.Name) == len(LayerPrefix)) {
			return dataErr("", f.Name, -1, "unexpected column: features/v1 allows only %q and %q<name> after label", ColEmbedding, LayerPrefix)
		}
		t, ok := f.Type.(*arrow.FixedSizeListType)
		if !ok || !arrow.TypeEqual(t.Elem(), arrow.PrimitiveTypes.Float32) || t.Len() <= 0 {
			return dataErr("", f.Name, -1, "type %s, want fixed_size_list<float32>", f.Type)
		}
	}
	if s.NumFields() < 3 {
		return dataErr("", ColEmbedding, -1, "missing column")
	}
	return nil
}

func validateScores(s *arrow.Schema) error {
	if err := checkField(s, 0, ColSampleID, arrow.PrimitiveTypes.Uint64); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, f := range s.Fields()[1:] {
		stage, col, ok := strings.Cut(f.Name, ".")
		if !ok || stage == "" || col == "" {
			return dataErr("", f.Name, -1, "scores/v1 columns are named <stage>.<column>")
		}
		if seen[f.Name] {
			return dataErr("", f.Name, -1, "duplicate column")
		}
		seen[f.Name] = true
		switch f.Type.ID() {
		case arrow.FLOAT32, arrow.INT32, arrow.BOOL:
		default:
			return dataErr("", f.Name, -1, "type %s, want float32, int32 or bool", f.Type)
		}
	}
	return nil
}
