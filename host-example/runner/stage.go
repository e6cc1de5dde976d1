package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
)

// Step is one stage run as a standalone step (`tcore stage`): files in,
// files out, the contract an orchestrator calls. It goes through the same
// DAG runner as a run (a pipeline of one input node per input port and the
// stage's node), so the same plugin binary runs under the same checks, and
// each output file is byte for byte the node's port file in a run folder
// given the same inputs, parameters and settings.
type Step struct {
	// Stage names the stage; Params is a JSON object of its parameters
	// (nil: the defaults). Bindings fill the parameters the stage gives a
	// role (encoder, device, seed, export, classes, shard), as in a run.
	Stage    string
	Params   json.RawMessage
	Bindings dag.Bindings
	// In maps input ports to files (Parquet, Arrow IPC, image folders:
	// whatever a run's datasets may be); Out maps output ports to the
	// Arrow IPC files to write. Outputs not named are not kept.
	In, Out map[string]string
	Stages  dag.Provider
	// Observer follows the stage (progress), or nil; Read tunes how the
	// inputs are read.
	Observer dag.Observer
	Read     arrowio.ReadOptions
	// StageTimeout, when positive, bounds the stage's run.
	StageTimeout time.Duration
}

// StepResult is what a step wrote.
type StepResult struct {
	Stage   string                `json:"stage"`
	Outputs map[string]dag.Output `json:"outputs"` // Path: the file written
	Metrics plugin.Metrics        `json:"metrics"`
	Seconds float64               `json:"seconds"`
}

// Execute checks the step against the stage's spec, runs it in a
// temporary run folder beside the first output and moves the named outputs
// into place. On error no output file is written.
func (s *Step) Execute(ctx context.Context) (*StepResult, error) {
	spec, ok := s.Stages.Spec(s.Stage)
	if !ok {
		names := append([]string(nil), s.Stages.Names()...)
		sort.Strings(names)
		return nil, plugin.BadInputf("unknown stage %q (stages: %s)", s.Stage, strings.Join(names, ", "))
	}
	if err := checkPorts(spec, s.In, s.Out); err != nil {
		return nil, err
	}
	p := &dag.Pipeline{Name: "stage " + s.Stage}
	node := dag.Node{ID: s.Stage, Stage: s.Stage, Params: s.Params}
	inputs := map[string]string{}
	for _, port := range sortedKeys(s.In) {
		id := "in-" + port
		p.Nodes = append(p.Nodes, dag.Node{ID: id, Input: port})
		p.Edges = append(p.Edges, dag.Edge{From: id + "." + dag.InputPort, To: s.Stage + "." + port})
		inputs[port] = s.In[port]
	}
	p.Nodes = append(p.Nodes, node)
	if err := p.Bind(s.Stages, s.Bindings); err != nil {
		return nil, err
	}
	first := s.Out[sortedKeys(s.Out)[0]]
	for _, port := range sortedKeys(s.Out) {
		if err := os.MkdirAll(filepath.Dir(s.Out[port]), 0o755); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(first), ".tcore-stage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	res, err := (&dag.Runner{Stages: s.Stages, Observer: s.Observer, Read: s.Read, NodeTimeout: s.StageTimeout}).Run(ctx, p, inputs, tmp)
	if err != nil {
		return nil, err
	}
	nr := res.Nodes[s.Stage]
	out := &StepResult{Stage: s.Stage, Outputs: map[string]dag.Output{}, Metrics: nr.Metrics, Seconds: nr.Seconds}
	for _, port := range sortedKeys(s.Out) {
		if _, ok := res.OutputPath(s.Stage, port); !ok {
			return nil, fmt.Errorf("stage %s wrote no %q output", s.Stage, port)
		}
		o := nr.Outputs[port]
		o.Path = s.Out[port]
		out.Outputs[port] = o
	}
	// Every output exists: only now are they moved into place.
	for _, port := range sortedKeys(s.Out) {
		src, _ := res.OutputPath(s.Stage, port)
		if err := move(src, s.Out[port]); err != nil {
			return nil, fmt.Errorf("output %q: %w", port, err)
		}
	}
	return out, nil
}

// checkPorts refuses ports the stage does not have and required inputs
// not given, naming the stage's ports.
func checkPorts(spec plugin.Spec, in, out map[string]string) error {
	names := func(ps []plugin.PortSpec) string {
		var n []string
		for _, p := range ps {
			n = append(n, p.Name)
		}
		return strings.Join(n, ", ")
	}
	has := func(ps []plugin.PortSpec, name string) bool {
		for _, p := range ps {
			if p.Name == name {
				return true
			}
		}
		return false
	}
	for port, file := range in {
		if !has(spec.Inputs, port) {
			return plugin.BadInputf("stage %s has no input port %q (its inputs: %s)", spec.Name, port, names(spec.Inputs))
		}
		if file == "" {
			return plugin.BadInputf("--in %s=: no file given", port)
		}
	}
	for _, ps := range spec.Inputs {
		if _, ok := in[ps.Name]; !ok && !ps.Optional {
			return plugin.BadInputf("stage %s needs --in %s=FILE (%s)", spec.Name, ps.Name, ps.Doc)
		}
	}
	if len(out) == 0 {
		return plugin.BadInputf("stage %s: name at least one output, --out PORT=FILE (its outputs: %s)", spec.Name, names(spec.Outputs))
	}
	seen := map[string]string{}
	for _, port := range sortedKeys(out) {
		file := out[port]
		if !has(spec.Outputs, port) {
			return plugin.BadInputf("stage %s has no output port %q (its outputs: %s)", spec.Name, port, names(spec.Outputs))
		}
		if file == "" {
			return plugin.BadInputf("--out %s=: no file given", port)
		}
		abs, _ := filepath.Abs(file)
		if prev, dup := seen[abs]; dup {
			return plugin.BadInputf("--out %s and --out %s name the same file %s", prev, port, file)
		}
		seen[abs] = port
		for inPort, inFile := range in {
			if a, _ := filepath.Abs(inFile); a == abs {
				return plugin.BadInputf("--out %s would overwrite --in %s (%s)", port, inPort, file)
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// move renames src to dst, copying (atomically) across file systems.
func move(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// copyFile copies src to dst atomically (dst appears whole or not at all).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	af, err := arrowio.CreateAtomic(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(af, in); err != nil {
		af.Abort()
		return err
	}
	return af.Commit()
}
