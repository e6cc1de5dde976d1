package plugin

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	gproto "google.golang.org/protobuf/proto"

	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

// The frame codec must speak plain protobuf both ways.
func TestFrameCodecIsProtobuf(t *testing.T) {
	big := bytes.Repeat([]byte{1, 2, 3, 250}, 300000)
	msgs := []gproto.Message{
		&stagepb.HostMessage{Msg: &stagepb.HostMessage_Frame{Frame: &stagepb.Frame{Port: "features", Data: big}}},
		&stagepb.HostMessage{Msg: &stagepb.HostMessage_Frame{Frame: &stagepb.Frame{Port: "images", Eof: true}}},
		&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: &stagepb.Frame{Port: "scores", Data: []byte("x"), Eof: true}}},
		&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: &stagepb.Frame{Port: "features", Eof: true, Path: "/tmp/tcore-x/features.arrows"}}},
		&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: &stagepb.Frame{}}},
		&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Done{Done: &stagepb.Done{MetricsJson: `{"a":1}`}}},
		&stagepb.HostMessage{Msg: &stagepb.HostMessage_Start{Start: &stagepb.Start{ParamsJson: "{}", Ports: []string{"a"}}}},
	}
	c := newFrameCodec()
	for i, m := range msgs {
		out, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		wire := out.Materialize()
		out.Free()
		want, _ := gproto.Marshal(m)
		if !bytes.Equal(wire, want) {
			t.Fatalf("message %d: codec bytes differ from proto.Marshal", i)
		}
		// Decode from many small buffers, as gRPC hands them over.
		var in mem.BufferSlice
		for off := 0; off < len(want); off += 16384 {
			in = append(in, mem.SliceBuffer(want[off:min(off+16384, len(want))]))
		}
		got := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(in, got); err != nil {
			t.Fatal(err)
		}
		if !gproto.Equal(got, m) {
			t.Fatalf("message %d: decoded %v, want %v", i, got, m)
		}
	}
}
