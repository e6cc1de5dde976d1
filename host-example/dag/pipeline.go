// Package dag runs tcore pipelines: a DAG of stage nodes wired output port
// to input port, executed in topological order with independent nodes in
// parallel. Every node's outputs are kept in the run folder as Arrow IPC
// files; they are the cache (a node whose stage, parameters and inputs are
// unchanged is not run again) and what a user inspects after a failure. A
// node that fails or is interrupted leaves none of its files behind.
package dag

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tcore-dev/tcore/plugin"
)

// Pipeline is a DAG of nodes, as JSON:
//
//	{"name": "stats",
//	 "nodes": [{"id": "train", "input": "train"},
//	           {"id": "stats", "stage": "stats", "params": {"min_per_class": 1}}],
//	 "edges": [{"from": "train.table", "to": "stats.images"}]}
//
// A node runs a stage (Stage, with Params) or reads one of the run's input
// datasets (Input, the name the run binds to a file). An input node has one
// output port, "table".
type Pipeline struct {
	Name  string `json:"name"`
	Doc   string `json:"doc,omitempty"`
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one node of a pipeline.
type Node struct {
	ID     string          `json:"id"`
	Stage  string          `json:"stage,omitempty"`
	Input  string          `json:"input,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	// After lists nodes that must finish first although no edge says so
	// (a stage that reads a file another writes, such as a filtered
	// encoder named in its params).
	After []string `json:"after,omitempty"`
}

// Edge connects an output port to an input port, each written "node.port".
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// InputPort is the output port of an input node.
const InputPort = "table"

// ParsePipeline reads a pipeline from JSON; unknown fields are errors.
func ParsePipeline(r io.Reader, source string) (*Pipeline, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var p Pipeline
	if err := dec.Decode(&p); err != nil {
		return nil, plugin.BadInputf("pipeline %s: %v", source, err)
	}
	return &p, nil
}

// LoadPipeline reads a pipeline file.
func LoadPipeline(path string) (*Pipeline, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, plugin.BadInputf("pipeline: %v", err)
	}
	return ParsePipeline(bytes.NewReader(b), path)
}

func splitRef(ref string) (node, port string, ok bool) {
	i := strings.LastIndexByte(ref, '.')
	if i <= 0 || i == len(ref)-1 {
		return "", "", false
	}
	return ref[:i], ref[i+1:], true
}

// Inputs returns the names of the run inputs the pipeline needs.
func (p *Pipeline) Inputs() []string {
	var out []string
	for _, n := range p.Nodes {
		if n.Input != "" {
			out = append(out, n.Input)
		}
	}
	sort.Strings(out)
	return out
}

// plan is a validated pipeline.
type plan struct {
	nodes map[string]*Node
	specs map[string]plugin.Spec // by node id (stage nodes)
	// in[node][port] = "from-node.port"
	in    map[string]map[string]string
	order []string // topological order
}

// Validate checks the pipeline against the stages the provider offers: ids
// unique, each node either a stage or an input, stages known, edges between
// existing ports of matching table kinds, each input port fed at most once,
// every required input connected, parameters known, no cycles.
func (p *Pipeline) validate(stages Provider) (*plan, error) {
	bad := func(format string, args ...any) error {
		return plugin.BadInputf("pipeline %q: "+format, append([]any{p.Name}, args...)...)
	}
	pl := &plan{nodes: map[string]*Node{}, specs: map[string]plugin.Spec{}, in: map[string]map[string]string{}}
	if len(p.Nodes) == 0 {
		return nil, bad("no nodes")
	}
	for i := range p.Nodes {
		n := &p.Nodes[i]
		if n.ID == "" || strings.ContainsAny(n.ID, "./\\ ") {
			return nil, bad("node %d: id %q must be non-empty without '.', '/', '\\' or spaces", i, n.ID)
		}
		if _, dup := pl.nodes[n.ID]; dup {
			return nil, bad("node id %q used twice", n.ID)
		}
		if (n.Stage == "") == (n.Input == "") {
			return nil, bad("node %q: set exactly one of \"stage\" and \"input\"", n.ID)
		}
		pl.nodes[n.ID] = n
		pl.in[n.ID] = map[string]string{}
		if n.Stage != "" {
			spec, ok := stages.Spec(n.Stage)
			if !ok {
				return nil, bad("node %q: unknown stage %q (known: %s)", n.ID, n.Stage, strings.Join(stages.Names(), ", "))
			}
			if err := plugin.CheckParams(spec, n.Params); err != nil {
				return nil, bad("node %q (stage %s): %v", n.ID, n.Stage, err)
			}
			pl.specs[n.ID] = spec
		} else if len(n.Params) > 0 {
			return nil, bad("node %q: an input node takes no params", n.ID)
		}
	}
	for _, e := range p.Edges {
		fn, fp, ok1 := splitRef(e.From)
		tn, tp, ok2 := splitRef(e.To)
		if !ok1 || !ok2 {
			return nil, bad("edge %q -> %q: write ports as node.port", e.From, e.To)
		}
		from, ok := pl.nodes[fn]
		if !ok {
			return nil, bad("edge from %q: no node %q", e.From, fn)
		}
		to, ok := pl.nodes[tn]
		if !ok {
			return nil, bad("edge to %q: no node %q", e.To, tn)
		}
		if to.Input != "" {
			return nil, bad("edge to %q: input node %q has no input ports", e.To, tn)
		}
		tps, ok := pl.specs[tn].Port(tp, false)
		if !ok {
			return nil, bad("edge to %q: stage %s has no input port %q", e.To, to.Stage, tp)
		}
		if from.Input != "" {
			if fp != InputPort {
				return nil, bad("edge from %q: an input node's port is %q", e.From, InputPort)
			}
		} else {
			fps, ok := pl.specs[fn].Port(fp, true)
			if !ok {
				return nil, bad("edge from %q: stage %s has no output port %q", e.From, from.Stage, fp)
			}
			if fps.Kind != tps.Kind {
				return nil, bad("edge %q -> %q: %s output into a %s input", e.From, e.To, fps.Kind, tps.Kind)
			}
		}
		if prev, dup := pl.in[tn][tp]; dup {
			return nil, bad("input %q is fed twice (%s and %s)", e.To, prev, e.From)
		}
		pl.in[tn][tp] = e.From
	}
	for _, n := range p.Nodes {
		for _, a := range n.After {
			if _, ok := pl.nodes[a]; !ok || a == n.ID {
				return nil, bad("node %q: \"after\" names %q, not another node", n.ID, a)
			}
		}
	}
	for id, spec := range pl.specs {
		for _, ps := range spec.Inputs {
			if _, ok := pl.in[id][ps.Name]; !ok && !ps.Optional {
				return nil, bad("node %q: required input port %q is not connected", id, ps.Name)
			}
		}
	}
	// Kahn's algorithm, in node order for determinism.
	indeg := map[string]int{}
	for id := range pl.nodes {
		indeg[id] = len(pl.deps(id))
	}
	done := map[string]bool{}
	for len(pl.order) < len(p.Nodes) {
		progressed := false
		for _, n := range p.Nodes {
			if done[n.ID] || indeg[n.ID] > 0 {
				continue
			}
			done[n.ID] = true
			pl.order = append(pl.order, n.ID)
			progressed = true
			for _, m := range p.Nodes {
				for _, dep := range pl.deps(m.ID) {
					if dep == n.ID {
						indeg[m.ID]--
					}
				}
			}
		}
		if !progressed {
			var left []string
			for _, n := range p.Nodes {
				if !done[n.ID] {
					left = append(left, n.ID)
				}
			}
			return nil, bad("cycle among nodes %v", left)
		}
	}
	return pl, nil
}

// deps returns the ids of the nodes n reads from or waits for.
func (pl *plan) deps(id string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, src := range pl.in[id] {
		n, _, _ := splitRef(src)
		add(n)
	}
	for _, a := range pl.nodes[id].After {
		add(a)
	}
	sort.Strings(out)
	return out
}

// String describes an edge.
func (e Edge) String() string { return fmt.Sprintf("%s -> %s", e.From, e.To) }

// Bindings are the run settings a host gives the stage parameters of a
// pipeline, by role (plugin.Role), never by parameter name. A parameter the
// pipeline sets keeps its value.
type Bindings struct {
	// Encoder is the run's encoder (RoleEncoder); "" binds nothing, and a
	// node that needs one and has none in the pipeline is an error.
	Encoder string
	// Device is the execution device (RoleDevice); "" binds nothing.
	Device string
	// Seed is the random seed (RoleSeed); nil binds nothing.
	Seed *int64
	// Export is where the run's classifier goes (RoleExport); "" binds
	// nothing.
	Export string
	// Classes is the declared number of classes (RoleClasses); 0 binds
	// nothing.
	Classes int
	// Shard is [i, n] for the stages that can run over a share of their
	// rows (RoleShard); nil binds nothing.
	Shard []int
	// RunDir replaces "$run" in the string parameters of the pipeline.
	RunDir string
}

// Bind fills the parameters of p's stage nodes from b, by the roles the
// stages declare. Paths are made absolute (plugin processes run in other
// folders). It changes p.
func (p *Pipeline) Bind(stages Provider, b Bindings) error {
	abs := func(path string) string {
		if path == "" {
			return ""
		}
		a, err := filepath.Abs(path)
		if err != nil {
			return path
		}
		return a
	}
	runDir := abs(b.RunDir)
	for i := range p.Nodes {
		n := &p.Nodes[i]
		if n.Stage == "" {
			continue
		}
		spec, ok := stages.Spec(n.Stage)
		if !ok {
			continue // validate names it
		}
		params := map[string]json.RawMessage{}
		if len(n.Params) > 0 {
			if err := json.Unmarshal(n.Params, &params); err != nil {
				return plugin.BadInputf("pipeline %q: node %q: params: %v", p.Name, n.ID, err)
			}
		}
		for k, v := range params {
			var str string
			if runDir != "" && json.Unmarshal(v, &str) == nil && strings.Contains(str, "$run") {
				params[k], _ = json.Marshal(strings.ReplaceAll(str, "$run", runDir))
			}
		}
		for _, ps := range spec.Params {
			if _, set := params[ps.Name]; set {
				continue
			}
			var v any
			switch ps.Role {
			case plugin.RoleEncoder:
				if b.Encoder == "" {
					return plugin.BadInputf("pipeline %q: node %q (stage %s) needs --encoder (the encoder, an ONNX file)", p.Name, n.ID, n.Stage)
				}
				v = abs(b.Encoder)
			case plugin.RoleDevice:
				if b.Device != "" {
					v = b.Device
				}
			case plugin.RoleSeed:
				if b.Seed != nil {
					v = *b.Seed
				}
			case plugin.RoleExport:
				if b.Export != "" {
					v = abs(b.Export)
				}
			case plugin.RoleClasses:
				if b.Classes > 0 {
					v = b.Classes
				}
			case plugin.RoleShard:
				if b.Shard != nil {
					v = b.Shard
				}
			}
			if v != nil {
				params[ps.Name], _ = json.Marshal(v)
			}
		}
		if len(params) > 0 {
			n.Params, _ = json.Marshal(params)
		}
	}
	return nil
}

// Shape is a validated pipeline as another scheduler needs it: the nodes in
// dependency order, what feeds each stage node's input ports ("node.port"),
// and the nodes each node waits for.
type Shape struct {
	Order []string
	In    map[string]map[string]string
	Deps  map[string][]string
	Nodes map[string]*Node
	Specs map[string]plugin.Spec // by node id (stage nodes)
}

// Shape validates p against the stages and returns its shape.
func (p *Pipeline) Shape(stages Provider) (*Shape, error) {
	pl, err := p.validate(stages)
	if err != nil {
		return nil, err
	}
	s := &Shape{Order: pl.order, In: pl.in, Deps: map[string][]string{}, Nodes: pl.nodes, Specs: pl.specs}
	for _, id := range pl.order {
		s.Deps[id] = pl.deps(id)
	}
	return s, nil
}

// SplitRef splits "node.port".
func SplitRef(ref string) (node, port string, ok bool) { return splitRef(ref) }

// Set overrides stage parameters of p, each keyed "node.param" (tcore run
// --param, a bench scenario's params): the value replaces what the
// pipeline sets. A key that names no stage node of p is an error naming
// it; a parameter the stage does not have is refused when the run checks
// the pipeline, as one written in the file would be. It changes p.
func (p *Pipeline) Set(values map[string]json.RawMessage) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		id, name, ok := strings.Cut(k, ".")
		if !ok || id == "" || name == "" {
			return plugin.BadInputf("parameter %q: want NODE.PARAM (a stage node of pipeline %q and one of its parameters)", k, p.Name)
		}
		var n *Node
		var stageNodes []string
		for i := range p.Nodes {
			if p.Nodes[i].Stage == "" {
				continue
			}
			stageNodes = append(stageNodes, p.Nodes[i].ID)
			if p.Nodes[i].ID == id {
				n = &p.Nodes[i]
			}
		}
		if n == nil {
			return plugin.BadInputf("parameter %q: pipeline %q has no stage node %q (its stage nodes: %s)", k, p.Name, id, strings.Join(stageNodes, ", "))
		}
		params := map[string]json.RawMessage{}
		if len(n.Params) > 0 {
			if err := json.Unmarshal(n.Params, &params); err != nil {
				return plugin.BadInputf("pipeline %q: node %q: params: %v", p.Name, n.ID, err)
			}
		}
		if !json.Valid(values[k]) {
			return plugin.BadInputf("parameter %q: value %s is not JSON", k, values[k])
		}
		params[name] = values[k]
		n.Params, _ = json.Marshal(params)
	}
	return nil
}
