package dag

import (
	"context"
	"os"
	"sort"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/plugin"
)

// Provider gives the runner its stages.
type Provider interface {
	// Names lists the stages offered.
	Names() []string
	// Spec returns the spec of a stage, without starting it.
	Spec(name string) (plugin.Spec, bool)
	// Fingerprint identifies the stage's code for the cache (a binary's
	// sha256, or the version of an in-process stage).
	Fingerprint(name string) string
	// Start readies the stage for one run; stop releases it (ends its
	// process). Cancelling ctx also ends it.
	Start(ctx context.Context, name string) (st plugin.Stage, stop func(), err error)
}

// Plugins offers the stages of a manifest, each run as a plugin process.
type Plugins struct {
	Catalog *plugin.Catalog
	Log     zerolog.Logger
	// Env is added to every plugin process's environment (the ONNX
	// Runtime library: ort.Env).
	Env []string
}

var _ Provider = Plugins{}

// Names implements Provider.
func (p Plugins) Names() []string {
	var out []string
	for _, e := range p.Catalog.Entries() {
		out = append(out, e.Name)
	}
	return out
}

// Spec implements Provider: the manifest's description of the stage.
func (p Plugins) Spec(name string) (plugin.Spec, bool) {
	e, ok := p.Catalog.Entry(name)
	if !ok {
		return plugin.Spec{}, false
	}
	return plugin.Spec{Name: e.Name, Version: e.Version, Inputs: e.Inputs, Outputs: e.Outputs,
		Params: e.Params, NeedsAllRows: e.NeedsAllRows}, true
}

// Fingerprint implements Provider: the binary's sha256 from the lock file.
func (p Plugins) Fingerprint(name string) string {
	e, _ := p.Catalog.Entry(name)
	return e.Version + "+" + e.SHA256
}

// Start implements Provider: it launches the plugin process.
func (p Plugins) Start(ctx context.Context, name string) (plugin.Stage, func(), error) {
	cl, err := p.Catalog.Launch(ctx, name, plugin.LaunchOptions{Log: p.Log, Env: p.Env})
	if err != nil {
		return nil, nil, err
	}
	return cl, cl.Kill, nil
}

// InProcess offers stages that run inside the host (through plugin.Local).
type InProcess map[string]plugin.Stage

var _ Provider = InProcess{}

// Names implements Provider.
func (m InProcess) Names() []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Spec implements Provider.
func (m InProcess) Spec(name string) (plugin.Spec, bool) {
	s, ok := m[name]
	if !ok {
		return plugin.Spec{}, false
	}
	return s.Spec(), true
}

// Fingerprint implements Provider: the stage's version and the sha256 of
// the running executable, so that rebuilt code is not served from the
// cache.
func (m InProcess) Fingerprint(name string) string {
	return InProcessAs{InProcess: m, SHA256: selfHash()}.Fingerprint(name)
}

// InProcessAs is InProcess whose stages take the fingerprints they had in
// another build of the same program: the executable whose sha256 is
// SHA256. A run folder made by that build then serves its nodes to this
// one wherever a stage's version is the same in both, and runs again
// every node of a stage whose version changed (and those after it).
// Stages bump their version whenever their outputs change, so this is how
// a stage's new version is measured on the nodes an earlier build made
// before it, without running the unchanged stages again. A stage whose
// code changed its outputs without a new version would be served stale:
// use it only between builds that keep that rule.
type InProcessAs struct {
	InProcess
	SHA256 string
}

var _ Provider = InProcessAs{}

// Fingerprint implements Provider: the stage's version here and the other
// build's sha256.
func (m InProcessAs) Fingerprint(name string) string {
	return "local+" + m.InProcess[name].Spec().Version + "+" + m.SHA256
}

var selfHash = sync.OnceValue(func() string {
	exe, err := os.Executable()
	if err != nil {
		return "unknown"
	}
	sum, err := plugin.FileSHA256(exe)
	if err != nil {
		return "unknown"
	}
	return sum
})

// Start implements Provider.
func (m InProcess) Start(_ context.Context, name string) (plugin.Stage, func(), error) {
	return plugin.Local(m[name]), func() {}, nil
}
