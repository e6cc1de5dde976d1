// Package plugin is the one package that both sides of a tcore stage plugin
// import: the Stage interface, the handshake, the gRPC service that carries
// Arrow IPC streams, the plugin side ([Serve]) and the host side ([Launch],
// [Catalog]), and an in-process runner ([Local]) with the same interface, so
// that a host runs a stage in process or as a plugin process the same way.
//
// # Overview
//
// A stage is a library first: it implements [Stage] (its [Spec] and Run) and
// is unit-tested in process through [Local]. Its plugin binary is a main of
// a few lines:
//
//	func main() { plugin.Serve(stats.New()) }
//
// A host loads the manifest ([LoadCatalog]), launches a stage by name
// ([Catalog.Launch]: the binary's sha256 is checked against the lock file
// before it starts, the connection uses mutual TLS) and calls Run on the
// returned [Client] exactly as it would on a local stage.
//
// # The wire
//
// Run is one bidirectional gRPC stream (see proto/stage.proto). The host
// sends the parameters as JSON, then each connected input port as an Arrow
// IPC stream cut into frames of at most [FrameSize] bytes; the plugin sends
// progress events, its output ports the same way, and ends with metrics or a
// typed error. Frames are bounded and the receiving side buffers a bounded
// number of them per port, so no port is held whole in memory unless the
// stage itself needs all rows.
//
// # Errors
//
// Errors returned by Run are *[Error] values naming the stage, the port (when
// one is involved) and a [Code]. Errors caused by the input (unknown
// parameter, wrong table kind, bad rows) have [CodeBadInput] and match
// [ErrBadInput] with errors.Is.
package plugin
