package filter

import (
	"github.com/apache/arrow/go/v17/arrow"

	"github.com/tcore-dev/tcore/plugin"
)

// heldOutputs holds what a pass of the filter writes until it is known
// whether that pass stands (planted_patch "gated": a pass whose mask would
// leave every input to the filtered encoder is dropped and the scan's own
// call runs instead). It retains every record written; flush writes them to
// the real outputs in the order the ports were created, release drops them.
type heldOutputs struct {
	ports []*heldPort
}

type heldPort struct {
	name   string
	schema *arrow.Schema
	recs   []arrow.Record
	closed bool
}

// Create implements plugin.Outputs.
func (h *heldOutputs) Create(port string, schema *arrow.Schema) (plugin.RecordWriter, error) {
	for _, p := range h.ports {
		if p.name == port {
			return nil, plugin.BadInputf("output port %q created twice", port)
		}
	}
	p := &heldPort{name: port, schema: schema}
	h.ports = append(h.ports, p)
	return p, nil
}

// Write implements plugin.RecordWriter: it retains rec.
func (p *heldPort) Write(rec arrow.Record) error {
	rec.Retain()
	p.recs = append(p.recs, rec)
	return nil
}

// Close implements plugin.RecordWriter.
func (p *heldPort) Close() error {
	p.closed = true
	return nil
}

// flush writes every closed port's records to out and releases them.
func (h *heldOutputs) flush(out plugin.Outputs) error {
	defer h.release()
	for _, p := range h.ports {
		if !p.closed {
			continue
		}
		w, err := out.Create(p.name, p.schema)
		if err != nil {
			return err
		}
		for _, r := range p.recs {
			if err := w.Write(r); err != nil {
				w.Close()
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// release drops every held record.
func (h *heldOutputs) release() {
	for _, p := range h.ports {
		for _, r := range p.recs {
			r.Release()
		}
		p.recs = nil
	}
	h.ports = nil
}
