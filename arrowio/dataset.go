package arrowio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/metadata"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

// ClassesKey is the schema metadata key under which images/v1 tables carry
// their class names (a JSON array), when the source names them.
const ClassesKey = "tcore.classes"

// PreprocessKey is the metadata key, on features/v1 tables and on the ONNX
// models tcore writes, under which the input normalisation given to the
// encoder is recorded (a JSON object: mean, std, bgr): once given to embed,
// every stage that runs the encoder, and the exported classifier, applies
// it inside the graph.
const PreprocessKey = "tcore.preprocess"

// WithMeta returns s with key set to value in its metadata.
func WithMeta(s *arrow.Schema, key, value string) *arrow.Schema {
	md := s.Metadata()
	keys, vals := append([]string(nil), md.Keys()...), append([]string(nil), md.Values()...)
	if i := md.FindKey(key); i >= 0 {
		vals[i] = value
	} else {
		keys, vals = append(keys, key), append(vals, value)
	}
	m := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(s.Fields(), &m)
}

// DefaultBatchRows is the number of rows per record batch that readers
// produce unless told otherwise.
const DefaultBatchRows = 1024

// ReadOptions tunes OpenDataset. The zero value finds columns by the rules of
// docs/ARCHITECTURE.md and reads DefaultBatchRows rows per batch.
type ReadOptions struct {
	// ImageCol and LabelCol override the column detection.
	ImageCol, LabelCol string
	// BatchRows is the number of rows per batch (default DefaultBatchRows).
	BatchRows int
	// Alloc allocates the batches (default memory.DefaultAllocator).
	Alloc memory.Allocator
	// Classes, when set, are the class names of another set in label
	// order (a training folder's): an image folder's class sub-folders are
	// labelled by them, so a test folder that lacks a class keeps every
	// other label; a sub-folder not among them is an error.
	Classes []string
}

func (o ReadOptions) withDefaults() ReadOptions {
	if o.BatchRows <= 0 {
		o.BatchRows = DefaultBatchRows
	}
	if o.Alloc == nil {
		o.Alloc = memory.DefaultAllocator
	}
	return o
}

// Format is a dataset's storage format.
type Format string

// The formats OpenDataset reads.
const (
	FormatParquet   Format = "parquet"
	FormatIPCFile   Format = "arrow-file"
	FormatIPCStream Format = "arrow-stream"
	FormatFolder    Format = "image-folder"
)

// DetectFormat tells the format of path from what it is (a folder) or its
// first bytes.
func DetectFormat(path string) (Format, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("arrowio: %w", err)
	}
	if st.IsDir() {
		return FormatFolder, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	head := make([]byte, 8)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("PAR1")):
		return FormatParquet, nil
	case bytes.HasPrefix(head, []byte("ARROW1")):
		return FormatIPCFile, nil
	case bytes.HasPrefix(head, []byte{0xff, 0xff, 0xff, 0xff}):
		return FormatIPCStream, nil
	}
	return "", dataErr(path, "", -1, "not a Parquet file, an Arrow IPC file or stream, or a folder")
}

// OpenDataset opens a dataset and returns a reader of its record batches.
//
// A file or folder of images (Parquet with an image-bytes column, an Arrow
// IPC file or stream without tcore metadata, or root/<class>/<file>) is read
// as images/v1: the image column is the only binary (or struct {bytes, path})
// column, else the one named "image" or "img"; the label is "label" or
// "labels" of any integer width; a "sample_id" column is used as is, else the
// row index is the id (for a folder: the sorted path order). An Arrow IPC
// file or stream whose schema names a tcore kind is returned as that kind.
// Rows are validated as they are read; errors name path, column and row.
//
// The caller must Release the reader.
func OpenDataset(ctx context.Context, path string, opt ReadOptions) (array.RecordReader, error) {
	opt = opt.withDefaults()
	format, err := DetectFormat(path)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		opt.Alloc = boundedAlloc{opt.Alloc, allocLimit(st.Size())}
	}
	var src array.RecordReader
	var closer io.Closer
	switch format {
	case FormatFolder:
		return openFolder(path, opt)
	case FormatParquet:
		src, closer, err = openParquet(ctx, path, opt)
	case FormatIPCFile, FormatIPCStream:
		src, closer, err = openIPC(path, format, opt)
	}
	if err != nil {
		return nil, err
	}
	if k, ok := KindOf(src.Schema()); ok {
		// A tcore table's columns are fixed: a column override that
		// names another column would be silently ignored.
		for _, o := range []struct{ flag, col, want string }{{"image-col", opt.ImageCol, ColImage}, {"label-col", opt.LabelCol, ColLabel}} {
			if o.col != "" && o.col != o.want {
				src.Release()
				closer.Close()
				return nil, dataErr(path, o.col, -1, "a tcore %s table: its columns are fixed (%s, %s), so --%s %q does not apply (drop it)", k, ColImage, ColLabel, o.flag, o.col)
			}
		}
		if err := ValidateSchema(src.Schema(), k); err != nil {
			src.Release()
			closer.Close()
			return nil, relocate(err, path)
		}
		return &checked{src: src, closer: closer, v: NewValidator(k, path), refs: 1}, nil
	}
	conv, err := newImageConverter(src.Schema(), path, opt)
	if err != nil {
		src.Release()
		closer.Close()
		return nil, err
	}
	return &checked{src: src, closer: closer, conv: conv, v: NewValidator(KindImages, path), refs: 1}, nil
}

func relocate(err error, file string) error {
	if de, ok := err.(*DataError); ok && de.File == "" {
		c := *de
		c.File = file
		return &c
	}
	return err
}

func openParquet(ctx context.Context, path string, opt ReadOptions) (array.RecordReader, io.Closer, error) {
	// Page buffers come from the bounded allocator too: a page header
	// declares its uncompressed size before anything checks it.
	pf, err := guard(func() (*file.Reader, error) {
		return file.OpenParquetFile(path, false, file.WithReadProps(parquet.NewReaderProperties(opt.Alloc)))
	})
	if err != nil {
		return nil, nil, dataErr(path, "", -1, "malformed Parquet file: %v", err)
	}
	// pqarrow opens the column chunks in goroutines of its own, where a
	// panic cannot be recovered: their extents are checked here first.
	f, err := os.Open(path)
	if err != nil {
		pf.Close()
		return nil, nil, fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		pf.Close()
		return nil, nil, fmt.Errorf("arrowio: %w", err)
	}
	if _, err := guard(func() (struct{}, error) { return struct{}{}, checkChunks(pf, f, st.Size()) }); err != nil {
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Parquet file: %v", err)
	}
	// pqarrow decodes the Arrow schema stored in the key-value metadata
	// with Arrow's IPC reader, which trusts its flatbuffer's lengths.
	if err := checkStoredArrowSchema(pf.MetaData().KeyValueMetadata()); err != nil {
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Parquet file: its ARROW:schema metadata: %v", err)
	}
	fr, err := guard(func() (*pqarrow.FileReader, error) {
		return pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: int64(opt.BatchRows)}, opt.Alloc)
	})
	if err != nil {
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Parquet file: %v", err)
	}
	rr, err := guard(func() (pqarrow.RecordReader, error) { return fr.GetRecordReader(ctx, nil, nil) })
	if err != nil {
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Parquet file: %v", err)
	}
	// The record reader's schema drops the file's key-value metadata
	// (class names, tcore.schema); the file reader's schema has it.
	full, err := fr.Schema()
	if err != nil {
		rr.Release()
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Parquet schema: %v", err)
	}
	ew := &errWrap{RecordReader: rr, file: path, what: "Parquet", schema: cleanSchema(full)}
	if fs, idx, err := restoredSchema(ew.schema); err != nil {
		rr.Release()
		pf.Close()
		return nil, nil, dataErr(path, "", -1, "%v", err)
	} else if fs != nil {
		ew.schema, ew.fsl = fs, idx
	}
	return ew, pf, nil
}

func openIPC(path string, format Format, opt ReadOptions) (array.RecordReader, io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("arrowio: %w", err)
	}
	if st, err := f.Stat(); err == nil {
		if err := checkIPCSchemas(f, st.Size(), format); err != nil {
			f.Close()
			return nil, nil, dataErr(path, "", -1, "malformed Arrow IPC data: %v", err)
		}
	}
	if format == FormatIPCStream {
		r, err := guard(func() (*ipc.Reader, error) { return ipc.NewReader(f, ipc.WithAllocator(opt.Alloc)) })
		if err != nil {
			f.Close()
			return nil, nil, dataErr(path, "", -1, "malformed Arrow IPC stream: %v", err)
		}
		return &errWrap{RecordReader: r, file: path, what: "Arrow IPC"}, f, nil
	}
	fr, err := guard(func() (*ipc.FileReader, error) { return ipc.NewFileReader(f, ipc.WithAllocator(opt.Alloc)) })
	if err != nil {
		f.Close()
		return nil, nil, dataErr(path, "", -1, "malformed Arrow IPC file: %v", err)
	}
	return &fileRecords{fr: fr, file: path, refs: 1}, f, nil
}

// guard runs open, turning a decoder's panic on malformed input into an
// error: Arrow's IPC readers index flatbuffers unchecked, and a corrupted
// Parquet page fails a CRC check or an index bound inside the decoder.
func guard[T any](open func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			if tl, ok := p.(*tooLarge); ok {
				err = tl
				return
			}
			err = fmt.Errorf("the decoder failed: %v", p)
		}
	}()
	return open()
}

// errWrap names the file in errors of a source reader.
type errWrap struct {
	array.RecordReader
	file, what string
	schema     *arrow.Schema // overrides RecordReader.Schema when set
	rec        arrow.Record  // the current batch, re-labelled with schema
	fsl        map[int]int32 // list columns to turn back into fixed-size lists
	rows       int64
	err        error
}

// cleanSchema drops per-field metadata (Parquet's field ids) and keeps the
// schema's own.
func cleanSchema(s *arrow.Schema) *arrow.Schema {
	fields := make([]arrow.Field, s.NumFields())
	for i, f := range s.Fields() {
		f.Metadata = arrow.Metadata{}
		fields[i] = f
	}
	md := s.Metadata()
	return arrow.NewSchema(fields, &md)
}

func (e *errWrap) Next() bool {
	if e.err != nil {
		return false
	}
	if e.rec != nil {
		e.rec.Release()
		e.rec = nil
	}
	more, err := guard(func() (bool, error) { return e.RecordReader.Next(), nil })
	if err != nil {
		e.err = dataErr(e.file, "", -1, "malformed %s data after row %d: %v", e.what, e.rows, err)
		return false
	}
	if !more {
		return false
	}
	r := e.RecordReader.Record()
	switch {
	case e.fsl != nil:
		rec, err := fromLists(r, e.schema, e.fsl, e.file, e.rows)
		if err != nil {
			e.err = err
			return false
		}
		e.rec = rec
	case e.schema != nil:
		e.rec = array.NewRecord(e.schema, r.Columns(), r.NumRows())
	}
	e.rows += r.NumRows()
	return true
}

func (e *errWrap) Record() arrow.Record {
	if e.rec != nil {
		return e.rec
	}
	return e.RecordReader.Record()
}

func (e *errWrap) Release() {
	if e.rec != nil {
		e.rec.Release()
		e.rec = nil
	}
	e.RecordReader.Release()
}

func (e *errWrap) Schema() *arrow.Schema {
	if e.schema != nil {
		return e.schema
	}
	return e.RecordReader.Schema()
}

func (e *errWrap) Err() error {
	if e.err != nil {
		return e.err
	}
	if err := e.RecordReader.Err(); err != nil && err != io.EOF {
		return dataErr(e.file, "", -1, "malformed %s data: %v", e.what, err)
	}
	return nil
}

// fileRecords iterates the batches of an IPC file.
type fileRecords struct {
	fr   *ipc.FileReader
	file string
	i    int
	rec  arrow.Record
	err  error
	refs int64
}

func (r *fileRecords) Retain()               { atomic.AddInt64(&r.refs, 1) }
func (r *fileRecords) Schema() *arrow.Schema { return r.fr.Schema() }
func (r *fileRecords) Record() arrow.Record  { return r.rec }
func (r *fileRecords) Err() error            { return r.err }
func (r *fileRecords) Release() {
	if atomic.AddInt64(&r.refs, -1) == 0 {
		if r.rec != nil {
			r.rec.Release()
			r.rec = nil
		}
		r.fr.Close()
	}
}
func (r *fileRecords) Next() bool {
	if r.rec != nil {
		r.rec.Release()
		r.rec = nil
	}
	if r.err != nil || r.i >= r.fr.NumRecords() {
		return false
	}
	rec, err := guard(func() (arrow.Record, error) { return r.fr.Record(r.i) })
	if err != nil {
		r.err = dataErr(r.file, "", -1, "malformed Arrow IPC file, batch %d: %v", r.i, err)
		return false
	}
	rec.Retain()
	r.rec = rec
	r.i++
	return true
}

// checked validates (and converts, when conv is set) the batches of src.
type checked struct {
	src    array.RecordReader
	closer io.Closer
	conv   *imageConverter
	v      *Validator
	rec    arrow.Record
	err    error
	refs   int64
}

func (c *checked) Retain() { atomic.AddInt64(&c.refs, 1) }
func (c *checked) Release() {
	if atomic.AddInt64(&c.refs, -1) == 0 {
		if c.rec != nil {
			c.rec.Release()
			c.rec = nil
		}
		c.src.Release()
		c.closer.Close()
	}
}
func (c *checked) Schema() *arrow.Schema {
	if c.conv != nil {
		return c.conv.schema
	}
	return c.src.Schema()
}
func (c *checked) Record() arrow.Record { return c.rec }
func (c *checked) Err() error           { return c.err }
func (c *checked) Next() bool {
	if c.rec != nil {
		c.rec.Release()
		c.rec = nil
	}
	if c.err != nil {
		return false
	}
	if !c.src.Next() {
		c.err = c.src.Err()
		return false
	}
	rec := c.src.Record()
	if _, err := guard(func() (struct{}, error) { return struct{}{}, checkShape(rec) }); err != nil {
		c.err = dataErr(c.v.source, "", c.v.Rows(), "malformed batch: %v", err)
		return false
	}
	if c.conv != nil {
		out, err := guard(func() (arrow.Record, error) { return c.conv.convert(rec, c.v.Rows()) })
		if err != nil {
			c.err = err
			return false
		}
		rec = out
	} else if want := c.src.Schema(); !rec.Schema().Metadata().Equal(want.Metadata()) && rec.Schema().Equal(want) {
		// Parquet batches come without the file's metadata: put it back.
		rec = array.NewRecord(want, rec.Columns(), rec.NumRows())
	} else {
		rec.Retain()
	}
	// Arrow does not check that a batch's buffers hold what its lengths
	// and offsets say: the checks index them under guard.
	if _, err := guard(func() (struct{}, error) { return struct{}{}, c.v.Check(rec) }); err != nil {
		rec.Release()
		if _, ok := err.(*DataError); !ok {
			err = dataErr(c.v.source, "", c.v.Rows(), "malformed batch: %v", err)
		}
		c.err = err
		return false
	}
	c.rec = rec
	return true
}

// imageConverter turns batches of an arbitrary image table into images/v1.
type imageConverter struct {
	file          string
	schema        *arrow.Schema
	img, lbl, id  int
	imgField      int // field index inside a {bytes, path} struct, or -1
	alloc         memory.Allocator
	labelName     string
	imageName     string
	sampleIDName  string
	sampleIDField arrow.Field
}

func isBinary(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.BINARY, arrow.LARGE_BINARY:
		return true
	}
	return false
}

// structBytes returns the index of the binary "bytes" field of a struct
// type, or -1.
func structBytes(t arrow.DataType) int {
	st, ok := t.(*arrow.StructType)
	if !ok {
		return -1
	}
	i, ok := st.FieldIdx("bytes")
	if !ok || !isBinary(st.Field(i).Type) {
		return -1
	}
	return i
}

func isInteger(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func fieldNames(s *arrow.Schema) []string {
	out := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		out[i] = f.Name
	}
	return out
}

func newImageConverter(s *arrow.Schema, file string, opt ReadOptions) (*imageConverter, error) {
	c := &imageConverter{file: file, img: -1, lbl: -1, id: -1, imgField: -1, alloc: opt.Alloc}
	imageOK := func(i int) bool { return isBinary(s.Field(i).Type) || structBytes(s.Field(i).Type) >= 0 }
	if opt.ImageCol != "" {
		idx := s.FieldIndices(opt.ImageCol)
		if len(idx) == 0 {
			return nil, dataErr(file, opt.ImageCol, -1, "no such column (image-col); columns are %v", fieldNames(s))
		}
		if !imageOK(idx[0]) {
			return nil, dataErr(file, opt.ImageCol, -1, "type %s is not image bytes (binary or struct {bytes, path})", s.Field(idx[0]).Type)
		}
		c.img = idx[0]
	} else {
		var cands []int
		for i := range s.Fields() {
			if imageOK(i) {
				cands = append(cands, i)
			}
		}
		switch {
		case len(cands) == 1:
			c.img = cands[0]
		default:
			for _, i := range cands {
				if n := s.Field(i).Name; n == "image" || n == "img" {
					c.img = i
					break
				}
			}
		}
		if c.img < 0 {
			return nil, dataErr(file, "", -1, "cannot tell the image column: want one binary or struct {bytes, path} column, or one named \"image\" or \"img\"; columns are %v (set the image column explicitly)", fieldNames(s))
		}
	}
	c.imgField = structBytes(s.Field(c.img).Type)
	c.imageName = s.Field(c.img).Name

	labelNames := []string{"label", "labels"}
	if opt.LabelCol != "" {
		labelNames = []string{opt.LabelCol}
	}
	for _, n := range labelNames {
		if idx := s.FieldIndices(n); len(idx) > 0 {
			c.lbl = idx[0]
			break
		}
	}
	if c.lbl < 0 {
		return nil, dataErr(file, strings.Join(labelNames, "|"), -1, "no label column; columns are %v", fieldNames(s))
	}
	c.labelName = s.Field(c.lbl).Name
	if !isInteger(s.Field(c.lbl).Type) {
		return nil, dataErr(file, c.labelName, -1, "label type %s, want an integer type", s.Field(c.lbl).Type)
	}
	if idx := s.FieldIndices(ColSampleID); len(idx) > 0 {
		c.id = idx[0]
		if !isInteger(s.Field(c.id).Type) {
			return nil, dataErr(file, ColSampleID, -1, "type %s, want an integer type", s.Field(c.id).Type)
		}
	}
	var extra map[string]string
	if names := classNames(s); names != "" {
		extra = map[string]string{ClassesKey: names}
	}
	c.schema = withKind(KindImages, ImagesSchema().Fields(), extra)
	return c, nil
}

// classNames returns the class names a source schema carries, as a JSON
// array, or "". Sources write them as a JSON array or comma-separated.
func classNames(s *arrow.Schema) string {
	for _, key := range []string{ClassesKey, "class_names"} {
		v, ok := s.Metadata().GetValue(key)
		if !ok || v == "" {
			continue
		}
		var names []string
		if json.Unmarshal([]byte(v), &names) != nil {
			names = strings.Split(v, ",")
			for i := range names {
				names[i] = strings.TrimSpace(names[i])
			}
		}
		if len(names) > 0 {
			b, _ := json.Marshal(names)
			return string(b)
		}
	}
	return ""
}

// intAt returns element i of an integer array as int64, and false when it
// does not fit in an int64.
func intAt(a arrow.Array, i int) (int64, bool) {
	switch a := a.(type) {
	case *array.Int8:
		return int64(a.Value(i)), true
	case *array.Int16:
		return int64(a.Value(i)), true
	case *array.Int32:
		return int64(a.Value(i)), true
	case *array.Int64:
		return a.Value(i), true
	case *array.Uint8:
		return int64(a.Value(i)), true
	case *array.Uint16:
		return int64(a.Value(i)), true
	case *array.Uint32:
		return int64(a.Value(i)), true
	case *array.Uint64:
		v := a.Value(i)
		return int64(v), v <= math.MaxInt64
	}
	panic("arrowio: intAt on a non-integer array")
}

type binaryValues interface {
	arrow.Array
	Value(int) []byte
}

func (c *imageConverter) convert(rec arrow.Record, start int64) (arrow.Record, error) {
	n := int(rec.NumRows())
	b := array.NewRecordBuilder(c.alloc, c.schema)
	defer b.Release()
	ids := b.Field(0).(*array.Uint64Builder)
	lbls := b.Field(1).(*array.Int32Builder)
	imgs := b.Field(2).(*array.BinaryBuilder)
	ids.Reserve(n)
	lbls.Reserve(n)
	imgs.Reserve(n)

	lcol := rec.Column(c.lbl)
	icol := rec.Column(c.img)
	var bin binaryValues
	if c.imgField >= 0 {
		st := icol.(*array.Struct)
		bin = st.Field(c.imgField).(binaryValues)
	} else {
		bin = icol.(binaryValues)
	}
	var idcol arrow.Array
	if c.id >= 0 {
		idcol = rec.Column(c.id)
	}
	for i := 0; i < n; i++ {
		row := start + int64(i)
		if idcol != nil {
			if idcol.IsNull(i) {
				return nil, dataErr(c.file, ColSampleID, row, "null value")
			}
			v, ok := intAt(idcol, i)
			if !ok || v < 0 {
				return nil, dataErr(c.file, ColSampleID, row, "sample_id must be a non-negative integer")
			}
			ids.UnsafeAppend(uint64(v))
		} else {
			ids.UnsafeAppend(uint64(row))
		}
		if lcol.IsNull(i) {
			return nil, dataErr(c.file, c.labelName, row, "null label")
		}
		l, ok := intAt(lcol, i)
		if !ok || l < 0 || l > math.MaxInt32 {
			return nil, dataErr(c.file, c.labelName, row, "label %d out of range 0..%d", l, math.MaxInt32)
		}
		lbls.UnsafeAppend(int32(l))
		if icol.IsNull(i) || bin.IsNull(i) {
			return nil, dataErr(c.file, c.imageName, row, "null image")
		}
		imgs.Append(bin.Value(i))
	}
	return b.NewRecord(), nil
}

// openFolder reads root/<class>/<file> as images/v1: classes are the sorted
// sub-folder names (label = index; or opt.Classes, by name), rows are in
// sorted path order. Class folders may be symbolic links.
func openFolder(root string, opt ReadOptions) (array.RecordReader, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	var classes []string
	for _, e := range entries {
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 { // a linked class folder counts
			st, err := os.Stat(filepath.Join(root, e.Name()))
			isDir = err == nil && st.IsDir()
		}
		if isDir && !strings.HasPrefix(e.Name(), ".") {
			classes = append(classes, e.Name())
		}
	}
	sort.Strings(classes)
	if len(classes) == 0 {
		return nil, dataErr(root, "", -1, "image folder has no class sub-folders (want root/<class>/<image>)")
	}
	labelOf := map[string]int32{}
	for i, c := range classes {
		labelOf[c] = int32(i)
	}
	if len(opt.Classes) > 0 {
		labelOf = map[string]int32{}
		for i, c := range opt.Classes {
			labelOf[c] = int32(i)
		}
		for _, c := range classes {
			if _, ok := labelOf[c]; !ok {
				return nil, dataErr(filepath.Join(root, c), "", -1, "class folder %q is not one of the training classes %v", c, opt.Classes)
			}
		}
		classes = opt.Classes
	}
	type item struct {
		path  string
		label int32
	}
	var items []item
	for cl, li := range labelOf {
		files, err := os.ReadDir(filepath.Join(root, cl))
		if len(opt.Classes) > 0 && errors.Is(err, fs.ErrNotExist) {
			continue // a training class this folder lacks
		}
		if err != nil {
			return nil, fmt.Errorf("arrowio: %w", err)
		}
		for _, f := range files {
			if f.IsDir() || strings.HasPrefix(f.Name(), ".") {
				continue
			}
			items = append(items, item{filepath.Join(cl, f.Name()), li})
		}
	}
	if len(items) == 0 {
		return nil, dataErr(root, "", -1, "image folder has class sub-folders %v but no images in them (files starting with a dot are skipped)", classes)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].path < items[j].path })
	names, _ := json.Marshal(classes)
	schema := withKind(KindImages, ImagesSchema().Fields(), map[string]string{ClassesKey: string(names)})
	next := 0
	gen := func() (arrow.Record, error) {
		if next >= len(items) {
			return nil, io.EOF
		}
		end := min(next+opt.BatchRows, len(items))
		b := array.NewRecordBuilder(opt.Alloc, schema)
		defer b.Release()
		for i := next; i < end; i++ {
			p := filepath.Join(root, items[i].path)
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("arrowio: %w", err)
			}
			if _, _, err := DecodeConfig(data); err != nil {
				return nil, dataErr(p, ColImage, int64(i), "%v", err)
			}
			b.Field(0).(*array.Uint64Builder).Append(uint64(i))
			b.Field(1).(*array.Int32Builder).Append(items[i].label)
			b.Field(2).(*array.BinaryBuilder).Append(data)
		}
		next = end
		return b.NewRecord(), nil
	}
	return &genReader{schema: schema, gen: gen, refs: 1, v: NewValidator(KindImages, root)}, nil
}

// genReader is a RecordReader over a generator function.
type genReader struct {
	schema *arrow.Schema
	gen    func() (arrow.Record, error)
	v      *Validator
	rec    arrow.Record
	err    error
	refs   int64
}

func (g *genReader) Retain()               { atomic.AddInt64(&g.refs, 1) }
func (g *genReader) Schema() *arrow.Schema { return g.schema }
func (g *genReader) Record() arrow.Record  { return g.rec }
func (g *genReader) Err() error            { return g.err }
func (g *genReader) Release() {
	if atomic.AddInt64(&g.refs, -1) == 0 && g.rec != nil {
		g.rec.Release()
		g.rec = nil
	}
}
func (g *genReader) Next() bool {
	if g.rec != nil {
		g.rec.Release()
		g.rec = nil
	}
	if g.err != nil {
		return false
	}
	rec, err := g.gen()
	if err == io.EOF {
		return false
	}
	if err == nil && g.v != nil {
		if err = g.v.Check(rec); err != nil {
			rec.Release()
		}
	}
	if err != nil {
		g.err = err
		return false
	}
	g.rec = rec
	return true
}

// checkChunks checks that every column chunk the footer declares lies
// inside the file (Parquet's reader sizes a buffer by the declared length)
// and that its pages hold what it declares (walkPages).
func checkChunks(pf *file.Reader, r io.ReaderAt, size int64) error {
	md := pf.MetaData()
	for g := 0; g < pf.NumRowGroups(); g++ {
		rg := md.RowGroup(g)
		for c := 0; c < rg.NumColumns(); c++ {
			col, err := rg.ColumnChunk(c)
			if err != nil {
				return err
			}
			start := col.DataPageOffset()
			if col.HasDictionaryPage() && col.DictionaryPageOffset() > 0 && start > col.DictionaryPageOffset() {
				start = col.DictionaryPageOffset()
			}
			n := col.TotalCompressedSize()
			if start < 0 || n < 0 || start > size || n > size-start {
				return fmt.Errorf("row group %d, column %d: a chunk of %d bytes at offset %d in a file of %d", g, c, n, start, size)
			}
			if col.CryptoMetadata() != nil || md.WriterVersion().LessThan(metadata.Parquet816FixedVersion) {
				continue // encrypted pages, or sizes that leave out a header (PARQUET-816): not walked
			}
			if err := walkPages(r, start, n, col.NumValues()); err != nil {
				return fmt.Errorf("row group %d, column %d: %v", g, c, err)
			}
		}
	}
	return nil
}
