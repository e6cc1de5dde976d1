package arrowio

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v17/parquet/metadata"
	flatbuffers "github.com/google/flatbuffers/go"
)

// Arrow's IPC readers size their slices by the vector lengths a schema's
// flatbuffer declares, unchecked: a 600-byte stream declaring a hundred
// million fields made the reader allocate 4 GiB and spend 20 s clearing it
// (found by FuzzOpenDataset). checkIPCSchemas reads the schemas of an IPC
// file or stream before Arrow does and refuses vector lengths that the
// message could not hold.

// maxSchemaBytes bounds a schema message: tcore's tables have a handful of
// fields, and the widest real Arrow schemas are a few MiB.
const maxSchemaBytes = 64 << 20

// checkIPCSchemas checks the schema message at the start of an IPC stream
// (format FormatIPCStream) or of an IPC file and the one in its footer.
func checkIPCSchemas(r io.ReaderAt, size int64, format Format) error {
	start := int64(0)
	if format == FormatIPCFile {
		start = 8 // "ARROW1" and padding
		if size < 8+10 {
			return errors.New("too short for an Arrow IPC file")
		}
		tail := make([]byte, 10)
		if _, err := r.ReadAt(tail, size-10); err != nil {
			return err
		}
		n := int64(binary.LittleEndian.Uint32(tail))
		if n <= 0 || n > size-18 || n > maxSchemaBytes {
			return fmt.Errorf("footer of %d bytes in a file of %d", n, size)
		}
		footer := make([]byte, n)
		if _, err := r.ReadAt(footer, size-10-n); err != nil {
			return err
		}
		if err := checkFlat(footer, checkFooter); err != nil {
			return fmt.Errorf("footer: %w", err)
		}
	}
	head := make([]byte, 8)
	if _, err := r.ReadAt(head, start); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // no schema message: Arrow's reader says so
		}
		return err
	}
	off, n := start+8, int64(binary.LittleEndian.Uint32(head[4:]))
	if binary.LittleEndian.Uint32(head) != 0xFFFFFFFF { // the pre-1.0 prefix
		off, n = start+4, int64(binary.LittleEndian.Uint32(head))
	}
	if n == 0 {
		return nil
	}
	if n < 0 || n > size-off || n > maxSchemaBytes {
		return fmt.Errorf("schema message of %d bytes in a file of %d", n, size)
	}
	msg := make([]byte, n)
	if _, err := r.ReadAt(msg, off); err != nil {
		return err
	}
	if err := checkFlat(msg, checkMessage); err != nil {
		return fmt.Errorf("schema message: %w", err)
	}
	return nil
}

// checkStoredArrowSchema checks the IPC schema a Parquet file keeps,
// base64-encoded, under "ARROW:schema", decoding it as pqarrow does.
func checkStoredArrowSchema(kv metadata.KeyValueMetadata) error {
	if kv == nil {
		return nil
	}
	enc := kv.FindValue("ARROW:schema")
	if enc == nil {
		return nil
	}
	var raw []byte
	var err error
	if len(*enc)%4 == 0 {
		raw, err = base64.StdEncoding.DecodeString(*enc)
	}
	if len(raw) == 0 || err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(*enc); err != nil {
			return err
		}
	}
	return checkIPCSchemas(bytes.NewReader(raw), int64(len(raw)), FormatIPCStream)
}

// flat walks one flatbuffer, counting the tables it visits so that shared
// sub-tables cannot multiply the work.
type flat struct {
	buf    []byte
	visits int
}

// checkFlat runs check over the flatbuffer buf; an out-of-range offset
// (a panic inside the flatbuffers accessors) is an error.
func checkFlat(buf []byte, check func(*flat, flatbuffers.Table) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed flatbuffer: %v", p)
		}
	}()
	if len(buf) < 8 {
		return fmt.Errorf("%d bytes: too short", len(buf))
	}
	f := &flat{buf: buf}
	return check(f, flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)})
}

// vector returns the length and start of the vector in field slot of t
// (0, 0 when absent), refusing a length the buffer cannot hold at
// elemSize bytes an element.
func (f *flat) vector(t flatbuffers.Table, slot, elemSize int, what string) (int, flatbuffers.UOffsetT, error) {
	o := flatbuffers.UOffsetT(t.Offset(flatbuffers.VOffsetT(4 + 2*slot)))
	if o == 0 {
		return 0, 0, nil
	}
	n := t.VectorLen(o)
	if n < 0 || n*elemSize > len(f.buf) {
		return 0, 0, fmt.Errorf("%s: %d entries declared in %d bytes", what, n, len(f.buf))
	}
	return n, t.Vector(o), nil
}

// table returns the table in field slot of t.
func (f *flat) table(t flatbuffers.Table, slot int) (flatbuffers.Table, bool) {
	o := flatbuffers.UOffsetT(t.Offset(flatbuffers.VOffsetT(4 + 2*slot)))
	if o == 0 {
		return flatbuffers.Table{}, false
	}
	return flatbuffers.Table{Bytes: f.buf, Pos: t.Indirect(o + t.Pos)}, true
}

// elem returns table i of the vector of tables that starts at start.
func (f *flat) elem(t flatbuffers.Table, start flatbuffers.UOffsetT, i int) flatbuffers.Table {
	return flatbuffers.Table{Bytes: f.buf, Pos: t.Indirect(start + flatbuffers.UOffsetT(4*i))}
}

// The slots (field indices) of Arrow's Message.fbs, Schema.fbs and File.fbs.
const (
	messageHeaderType, messageHeader, messageMetadata = 1, 2, 4
	schemaFields, schemaMetadata                      = 1, 2
	fieldChildren, fieldMetadata                      = 5, 6
	footerSchema, footerDictionaries, footerBatches   = 1, 2, 3
	headerSchema                                      = 1 // MessageHeader.Schema
	blockSize                                         = 24
)

func checkMessage(f *flat, m flatbuffers.Table) error {
	if _, _, err := f.vector(m, messageMetadata, 4, "custom metadata"); err != nil {
		return err
	}
	if m.GetByteSlot(flatbuffers.VOffsetT(4+2*messageHeaderType), 0) != headerSchema {
		return nil // not a schema: Arrow's reader says what it expected
	}
	s, ok := f.table(m, messageHeader)
	if !ok {
		return nil
	}
	return checkSchema(f, s)
}

func checkFooter(f *flat, ft flatbuffers.Table) error {
	for _, slot := range []int{footerDictionaries, footerBatches} {
		if _, _, err := f.vector(ft, slot, blockSize, "record batch blocks"); err != nil {
			return err
		}
	}
	s, ok := f.table(ft, footerSchema)
	if !ok {
		return nil
	}
	return checkSchema(f, s)
}

func checkSchema(f *flat, s flatbuffers.Table) error {
	if _, _, err := f.vector(s, schemaMetadata, 4, "schema metadata"); err != nil {
		return err
	}
	return f.fields(s, schemaFields, 0)
}

// fields checks the vector of Field tables in slot of t, and their
// children, to a bounded depth.
func (f *flat) fields(t flatbuffers.Table, slot, depth int) error {
	if depth > 64 {
		return errors.New("fields nested deeper than 64 levels")
	}
	n, start, err := f.vector(t, slot, 4, "fields")
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if f.visits++; f.visits > len(f.buf)/4 {
			return errors.New("more fields than the message can hold")
		}
		field := f.elem(t, start, i)
		if _, _, err := f.vector(field, fieldMetadata, 4, "field metadata"); err != nil {
			return err
		}
		if err := f.fields(field, fieldChildren, depth+1); err != nil {
			return err
		}
	}
	return nil
}
