package plugin

import (
	"encoding/binary"
	"errors"
	"io"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

// frameCodec is gRPC's proto codec with a faster path for the messages that
// carry frames, the bulk of a run's bytes. It writes and reads the same
// protobuf wire format (Frame is field 2 of both HostMessage and
// PluginMessage; port 1, data 2, eof 3, path 4), but decodes a frame's data with one
// copy straight out of gRPC's receive buffers instead of two (materialise,
// then unmarshal), and encodes it without proto's reflection. Every other
// message goes through the proto codec.
type frameCodec struct{ fallback encoding.CodecV2 }

func newFrameCodec() encoding.CodecV2 {
	return frameCodec{fallback: encoding.GetCodecV2(proto.Name)}
}

// Name is "proto": the wire format is protobuf, and go-plugin's own services
// on the same connection keep working.
func (frameCodec) Name() string { return proto.Name }

func frameOf(v any) *stagepb.Frame {
	switch m := v.(type) {
	case *stagepb.HostMessage:
		return m.GetFrame()
	case *stagepb.PluginMessage:
		return m.GetFrame()
	}
	return nil
}

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f := frameOf(v)
	if f == nil {
		return c.fallback.Marshal(v)
	}
	inner := 0
	if f.Port != "" {
		inner += 1 + uvarintLen(uint64(len(f.Port))) + len(f.Port)
	}
	if len(f.Data) > 0 {
		inner += 1 + uvarintLen(uint64(len(f.Data))) + len(f.Data)
	}
	if f.Eof {
		inner += 2
	}
	if f.Path != "" {
		inner += 1 + uvarintLen(uint64(len(f.Path))) + len(f.Path)
	}
	size := 1 + uvarintLen(uint64(inner)) + inner
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	b := (*buf)[:0]
	b = append(b, 0x12)
	b = binary.AppendUvarint(b, uint64(inner))
	if f.Port != "" {
		b = append(b, 0x0a)
		b = binary.AppendUvarint(b, uint64(len(f.Port)))
		b = append(b, f.Port...)
	}
	if len(f.Data) > 0 {
		b = append(b, 0x12)
		b = binary.AppendUvarint(b, uint64(len(f.Data)))
		b = append(b, f.Data...)
	}
	if f.Eof {
		b = append(b, 0x18, 1)
	}
	if f.Path != "" {
		b = append(b, 0x22)
		b = binary.AppendUvarint(b, uint64(len(f.Path)))
		b = append(b, f.Path...)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

var errNotFrame = errors.New("not a frame")

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	var setFrame func(*stagepb.Frame)
	switch m := v.(type) {
	case *stagepb.HostMessage:
		setFrame = func(f *stagepb.Frame) { m.Msg = &stagepb.HostMessage_Frame{Frame: f} }
	case *stagepb.PluginMessage:
		setFrame = func(f *stagepb.Frame) { m.Msg = &stagepb.PluginMessage_Frame{Frame: f} }
	default:
		return c.fallback.Unmarshal(data, v)
	}
	f, err := readFrame(data)
	if err == errNotFrame {
		return c.fallback.Unmarshal(data, v)
	}
	if err != nil {
		return err
	}
	setFrame(f)
	return nil
}

// readFrame decodes a message whose only field is a Frame, or returns
// errNotFrame.
func readFrame(data mem.BufferSlice) (*stagepb.Frame, error) {
	r := data.Reader()
	defer r.Close()
	if tag, err := r.ReadByte(); err != nil || tag != 0x12 {
		return nil, errNotFrame
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || int(n) != r.Remaining() {
		return nil, errNotFrame
	}
	f := &stagepb.Frame{}
	for r.Remaining() > 0 {
		tag, err := r.ReadByte()
		if err != nil {
			return nil, errNotFrame
		}
		switch tag {
		case 0x0a, 0x12, 0x22:
			l, err := binary.ReadUvarint(r)
			if err != nil || int(l) > r.Remaining() {
				return nil, errNotFrame
			}
			b := make([]byte, l)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, err
			}
			switch tag {
			case 0x0a:
				f.Port = string(b)
			case 0x12:
				f.Data = b
			default:
				f.Path = string(b)
			}
		case 0x18:
			x, err := binary.ReadUvarint(r)
			if err != nil {
				return nil, errNotFrame
			}
			f.Eof = x != 0
		default:
			return nil, errNotFrame
		}
	}
	return f, nil
}
