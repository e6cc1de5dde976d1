// Package testplugin holds the stage that the plugin tests run as a real
// plugin process: it echoes every input port to the output port of the same
// name and can be told to fail in the ways a real stage might.
package testplugin

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// Echo copies its inputs to its outputs.
type Echo struct{}

// MarkerEnv names an environment variable: when set, the plugin binary
// writes its PID to that file as soon as it starts (tests use it to tell
// whether a refused binary ever ran, and to kill a running one).
const MarkerEnv = "TCORE_TEST_MARKER"

var ports = []struct {
	name string
	kind arrowio.Kind
}{
	{"images", arrowio.KindImages},
	{"features", arrowio.KindFeatures},
	{"scores", arrowio.KindScores},
	{"channels", arrowio.KindChannels},
	{"truth", arrowio.KindTruth},
}

// Spec implements plugin.Stage.
func (Echo) Spec() plugin.Spec {
	s := plugin.Spec{Name: "echo", Version: "1.0.0"}
	for _, p := range ports {
		s.Inputs = append(s.Inputs, plugin.PortSpec{Name: p.name, Kind: p.kind, Optional: true})
		s.Outputs = append(s.Outputs, plugin.PortSpec{Name: p.name, Kind: p.kind, Optional: true})
	}
	s.Params = plugin.ParamsOf(params{AfterBatches: 1})
	return s
}

type params struct {
	Fail         string `json:"fail" enum:"|panic|exit|hang|error" doc:"fail this way after after_batches (empty: do not fail)"`
	AfterBatches int    `json:"after_batches" range:"[1,)" doc:"batches echoed before failing"`
	Reverse      bool   `json:"reverse" doc:"read the ports in reverse order"`
	Sink         bool   `json:"sink" doc:"read the inputs, write nothing"`
	Note         string `json:"note" role:"output" doc:"write the rows echoed to this file (a file output, as a filtered encoder is)"`
}

// Run implements plugin.Stage.
func (e Echo) Run(ctx context.Context, raw json.RawMessage, in plugin.Inputs, out plugin.Outputs, progress plugin.Progress) (plugin.Metrics, error) {
	var p params
	if err := plugin.DecodeParams(e.Spec(), raw, &p); err != nil {
		return nil, err
	}
	order := slices.Clone(ports)
	if p.Reverse {
		slices.Reverse(order)
	}
	batches := 0
	rows := map[string]int64{}
	for _, port := range order {
		r, err := in.Open(port.name)
		if errors.Is(err, plugin.ErrNotConnected) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := copyPort(ctx, r, out, port.name, &p, &batches, rows); err != nil {
			r.Release()
			return nil, plugin.PortError(port.name, err)
		}
		r.Release()
		progress.Report(plugin.Event{Done: int64(batches), Unit: "batches"})
	}
	if p.Note != "" {
		b, _ := json.Marshal(rows)
		if err := os.WriteFile(p.Note, b, 0o644); err != nil {
			return nil, err
		}
	}
	return plugin.Metrics{"batches": batches, "rows": rows}, nil
}

func copyPort(ctx context.Context, r array.RecordReader, out plugin.Outputs, port string, p *params, batches *int, rows map[string]int64) error {
	var w plugin.RecordWriter = discard{}
	if !p.Sink {
		var err error
		if w, err = out.Create(port, r.Schema()); err != nil {
			return err
		}
	}
	for r.Next() {
		if err := w.Write(r.Record()); err != nil {
			return err
		}
		rows[port] += r.Record().NumRows()
		*batches++
		if *batches >= p.AfterBatches {
			switch p.Fail {
			case "panic":
				panic("echo: deliberate panic")
			case "exit":
				os.Exit(7)
			case "hang":
				// A hung stage ignores its context: only killing the
				// process ends it.
				time.Sleep(time.Hour)
			case "error":
				return errors.New("deliberate failure")
			}
		}
	}
	if err := r.Err(); err != nil {
		return err
	}
	return w.Close()
}

type discard struct{}

func (discard) Write(arrow.Record) error { return nil }
func (discard) Close() error             { return nil }
