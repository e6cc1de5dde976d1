// Command tcore-garbage is a plugin written without tcore's SDK, as a
// plugin in another language would be: it speaks the Stage gRPC service
// itself and answers every run with a malformed output stream, for the
// host's fault-injection tests. $TCORE_TEST_GARBAGE picks the fault:
// "bytes" (the default) sends bytes that are no Arrow IPC stream, "schema"
// sends a well-formed stream of the wrong table kind.
package main

import (
	"bytes"
	"context"
	"os"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

func main() {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: plugin.Handshake,
		Plugins:         goplugin.PluginSet{"stage": &adapter{}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

type adapter struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (adapter) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	stagepb.RegisterStageServer(s, server{})
	return nil
}

func (adapter) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

type server struct {
	stagepb.UnimplementedStageServer
}

func (server) Describe(context.Context, *stagepb.DescribeRequest) (*stagepb.StageSpec, error) {
	s := testplugin.Garbage.Spec
	port := &stagepb.PortSpec{Name: s.Outputs[0].Name, Kind: string(s.Outputs[0].Kind)}
	in := &stagepb.PortSpec{Name: s.Inputs[0].Name, Kind: string(s.Inputs[0].Kind), Optional: true}
	return &stagepb.StageSpec{Name: s.Name, Version: s.Version, Inputs: []*stagepb.PortSpec{in}, Outputs: []*stagepb.PortSpec{port}}, nil
}

func (server) Run(stream stagepb.Stage_RunServer) error {
	if _, err := stream.Recv(); err != nil { // Start
		return err
	}
	data := []byte("this is not an Arrow IPC stream, and it goes on for a while ..........")
	if os.Getenv("TCORE_TEST_GARBAGE") == "schema" {
		data = wrongKind()
	}
	for _, f := range []*stagepb.Frame{{Port: "images", Data: data}, {Port: "images", Eof: true}} {
		if err := stream.Send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Frame{Frame: f}}); err != nil {
			return err
		}
	}
	return stream.Send(&stagepb.PluginMessage{Msg: &stagepb.PluginMessage_Done{Done: &stagepb.Done{MetricsJson: "{}"}}})
}

// wrongKind is an Arrow IPC stream of one row with a lone float column:
// well formed, but no images/v1 table.
func wrongKind() []byte {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Float32}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Float32Builder).Append(1)
	rec := b.NewRecord()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	_ = w.Write(rec)
	_ = w.Close()
	return buf.Bytes()
}
