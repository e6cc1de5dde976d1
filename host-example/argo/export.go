package argo

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Root is the folder inside each step's container that holds its input
// (Root/in) and output (Root/out) artifacts.
const Root = "/tcore"

// The artifacts an export names: the encoder (a workflow input), the
// classifier a stage exports (RoleExport, not set by the pipeline).
const (
	EncoderArtifact = "encoder"
	ModelArtifact   = "clean-model"
	modelFile       = "clean_model.onnx"
)

// Options say what to export.
type Options struct {
	// Pipeline is the pipeline to export; Stages gives the stages' specs
	// (roles, ports), as for a run.
	Pipeline *dag.Pipeline
	Stages   dag.Provider
	// Inputs locate the pipeline's input datasets (its input nodes, e.g.
	// "train") and Encoder the encoder: a key in the cluster's artifact
	// repository, or an http(s) URL. With Template they may be empty:
	// whoever submits the template passes the artifacts.
	Inputs  map[string]string
	Encoder string
	// Image is the container image holding tcore (the CLI, the plugins,
	// the manifest lock and ONNX Runtime).
	Image string
	// Device, Seed and Classes are bound as in tcore run.
	Device  string
	Seed    int64
	Classes int
	// Shards fans each stage that can run sharded (a RoleShard parameter)
	// out over that many tasks, merged by a concat task; 0 or 1: none.
	Shards int
	// NodeSelector and Tolerations go on the steps that run the encoder
	// when Device is cuda (with a GPU limit of one), or on every step when
	// Device is cpu.
	NodeSelector map[string]string
	Tolerations  []Toleration
	// Retries retries a step whose node fails (RetryPolicy OnError).
	Retries int
	// Template writes a WorkflowTemplate named Name; else a Workflow
	// whose generated names start with Name.
	Template bool
	Name     string
}

var nameOK = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// dns turns a node id or file name into a name Argo accepts.
func dns(s string) string {
	s = strings.ToLower(s)
	s = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(s, "-")
	return strings.Trim(s, "-")
}

// Export builds the workflow. Every node of the pipeline becomes a task
// (input nodes become the workflow's input artifacts); files a stage writes
// under "$run/" that another reads (the filtered encoder) travel as
// artifacts too.
func Export(o Options) (*Workflow, error) {
	if o.Image == "" {
		return nil, plugin.BadInputf("argo: no container image given (--image)")
	}
	if o.Name == "" || !nameOK.MatchString(o.Name) {
		return nil, plugin.BadInputf("argo: name %q: want lower-case letters, digits and '-'", o.Name)
	}
	if _, _, err := ort.ParseDevice(o.Device); err != nil {
		return nil, plugin.BadInputf("argo: --device %q: %v", o.Device, err)
	}
	if o.Shards < 0 || o.Retries < 0 {
		return nil, plugin.BadInputf("argo: --shards %d, --retries %d: want 0 or more", o.Shards, o.Retries)
	}
	shape, err := o.Pipeline.Shape(o.Stages)
	if err != nil {
		return nil, err
	}
	e := &exporter{o: o, shape: shape, files: map[string]fileRef{}, gpu: strings.HasPrefix(o.Device, "cuda")}
	if err := e.findFiles(); err != nil {
		return nil, err
	}
	main := Template{Name: "main", DAG: &DAG{}}
	var args Arguments
	needEncoder := false
	for _, id := range shape.Order {
		n := shape.Nodes[id]
		if n.Input != "" {
			loc := o.Inputs[n.Input]
			if loc == "" && !o.Template {
				return nil, plugin.BadInputf("argo: pipeline %q reads input %q: give its location (--input %s=KEY)", o.Pipeline.Name, n.Input, n.Input)
			}
			a, par, err := location(n.Input, loc)
			if err != nil {
				return nil, err
			}
			args.Artifacts, args.Parameters = append(args.Artifacts, a), append(args.Parameters, par)
			main.inputs().Artifacts = append(main.inputs().Artifacts, Artifact{Name: n.Input})
			continue
		}
		tasks, tmpls, enc, err := e.node(id)
		if err != nil {
			return nil, err
		}
		needEncoder = needEncoder || enc
		main.DAG.Tasks = append(main.DAG.Tasks, tasks...)
		e.templates = append(e.templates, tmpls...)
	}
	for name := range o.Inputs {
		if !contains(o.Pipeline.Inputs(), name) {
			return nil, plugin.BadInputf("argo: pipeline %q has no input %q (its inputs: %v)", o.Pipeline.Name, name, o.Pipeline.Inputs())
		}
	}
	if needEncoder {
		if o.Encoder == "" && !o.Template {
			return nil, plugin.BadInputf("argo: pipeline %q runs an encoder: give its location (--encoder KEY)", o.Pipeline.Name)
		}
		a, par, err := location(EncoderArtifact, o.Encoder)
		if err != nil {
			return nil, err
		}
		args.Artifacts, args.Parameters = append(args.Artifacts, a), append(args.Parameters, par)
		main.inputs().Artifacts = append(main.inputs().Artifacts, Artifact{Name: EncoderArtifact})
	}
	wf := &Workflow{APIVersion: "argoproj.io/v1alpha1", Kind: "Workflow",
		Metadata: Metadata{GenerateName: o.Name + "-", Labels: map[string]string{"app.kubernetes.io/name": "tcore", "tcore/pipeline": dns(o.Pipeline.Name)}},
		Spec:     Spec{Entrypoint: main.Name, Templates: append([]Template{main}, e.templates...)}}
	if o.Template {
		wf.Kind, wf.Metadata.Name, wf.Metadata.GenerateName = "WorkflowTemplate", o.Name, ""
	}
	if len(args.Artifacts) > 0 {
		wf.Spec.Arguments = &args
	}
	return wf, nil
}

func (t *Template) inputs() *IO {
	if t.Inputs == nil {
		t.Inputs = &IO{}
	}
	return t.Inputs
}

func (t *Template) outputs() *IO {
	if t.Outputs == nil {
		t.Outputs = &IO{}
	}
	return t.Outputs
}

// location is a workflow argument artifact located by the workflow
// parameter of the same name, whose value is loc: a key in the cluster's
// artifact repository, or an http(s) URL. An empty loc leaves the value to
// whoever submits a template (`argo submit --from workflowtemplate/NAME -p
// train=KEY`); the artifact is then looked up by key.
func location(name, loc string) (Artifact, Parameter, error) {
	a := Artifact{Name: name}
	p := Parameter{Name: name, Value: strings.TrimPrefix(loc, "/")}
	ref := "{{workflow.parameters." + name + "}}"
	switch {
	case strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://"):
		a.HTTP, p.Value = &HTTPArtifact{URL: ref}, loc
	case strings.Contains(loc, "://"):
		return a, p, plugin.BadInputf("argo: %s at %q: want a key in the cluster's artifact repository or an http(s) URL", name, loc)
	default:
		a.S3 = &S3Artifact{Key: ref}
	}
	return a, p, nil
}

// fileRef is a "$run/<file>" a stage exports and others read.
type fileRef struct {
	producer, param string
}

type exporter struct {
	o         Options
	shape     *dag.Shape
	files     map[string]fileRef // by file name under $run
	templates []Template
	gpu       bool
}

// findFiles finds the "$run/..." files stages export (RoleExport
// parameters the pipeline sets).
func (e *exporter) findFiles() error {
	for _, id := range e.shape.Order {
		n := e.shape.Nodes[id]
		if n.Stage == "" {
			continue
		}
		params, err := nodeParams(n)
		if err != nil {
			return err
		}
		for _, ps := range e.shape.Specs[id].Params {
			f, ok := runFile(params[ps.Name])
			if !ok || (ps.Role != plugin.RoleOutput && ps.Role != plugin.RoleExport) {
				continue
			}
			if prev, dup := e.files[f]; dup {
				return plugin.BadInputf("argo: $run/%s is exported by both %s and %s", f, prev.producer, id)
			}
			e.files[f] = fileRef{producer: id, param: ps.Name}
		}
	}
	return nil
}

func nodeParams(n *dag.Node) (map[string]json.RawMessage, error) {
	params := map[string]json.RawMessage{}
	if len(n.Params) > 0 {
		if err := json.Unmarshal(n.Params, &params); err != nil {
			return nil, plugin.BadInputf("node %q: params: %v", n.ID, err)
		}
	}
	return params, nil
}

// runFile returns f for the JSON string "$run/f".
func runFile(v json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(v, &s) != nil || !strings.HasPrefix(s, "$run/") {
		return "", false
	}
	f := strings.TrimPrefix(s, "$run/")
	return f, f != "" && !strings.Contains(f, "/")
}

func fileArtifact(f string) string { return "file-" + dns(f) }

// node returns the tasks and templates of stage node id, and whether it
// reads the workflow's encoder.
func (e *exporter) node(id string) ([]Task, []Template, bool, error) {
	n := e.shape.Nodes[id]
	spec := e.shape.Specs[id]
	params, err := nodeParams(n)
	if err != nil {
		return nil, nil, false, err
	}
	name := dns(id)
	t := Template{Name: name, Container: &Container{Image: e.o.Image, Command: []string{"tcore", "stage", n.Stage}}}
	task := Task{Name: name, Template: name, Arguments: &Arguments{}}
	deps := map[string]bool{}
	for _, d := range e.shape.Deps[id] {
		if e.shape.Nodes[d].Stage != "" {
			deps[dns(d)] = true
		}
	}
	args := &t.Container.Args
	// Input ports, in the spec's order.
	for _, ps := range spec.Inputs {
		src, ok := e.shape.In[id][ps.Name]
		if !ok {
			continue
		}
		sn, sp, _ := dag.SplitRef(src)
		from := fmt.Sprintf("{{tasks.%s.outputs.artifacts.%s}}", dns(sn), sp)
		if in := e.shape.Nodes[sn].Input; in != "" {
			from = fmt.Sprintf("{{inputs.artifacts.%s}}", in)
		}
		path := Root + "/in/" + ps.Name
		t.inputs().Artifacts = append(t.inputs().Artifacts, Artifact{Name: ps.Name, Path: path})
		task.Arguments.Artifacts = append(task.Arguments.Artifacts, Artifact{Name: ps.Name, From: from})
		*args = append(*args, "--in", ps.Name+"="+path)
	}
	for _, ps := range spec.Outputs {
		path := Root + "/out/" + ps.Name + ".arrow"
		t.outputs().Artifacts = append(t.outputs().Artifacts, Artifact{Name: ps.Name, Path: path, Archive: &Archive{None: &struct{}{}}})
		*args = append(*args, "--out", ps.Name+"="+path)
	}
	usesEncoder, shardable, runsModel := false, false, false
	// Parameters: roles bound as tcore run binds them, the pipeline's
	// values as --param, "$run/" files as artifacts.
	for _, ps := range spec.Params {
		v, set := params[ps.Name]
		if f, ok := runFile(v); ok {
			ref, known := e.files[f]
			switch {
			case ref.producer == id && ref.param == ps.Name:
				path := Root + "/out/" + f
				t.outputs().Artifacts = append(t.outputs().Artifacts, Artifact{Name: fileArtifact(f), Path: path, Archive: &Archive{None: &struct{}{}}})
				v, _ = json.Marshal(path)
			case !known:
				return nil, nil, false, plugin.BadInputf("argo: node %q: parameter %q reads $run/%s, which no stage of the pipeline exports", id, ps.Name, f)
			default:
				path := Root + "/in/" + f
				t.inputs().Artifacts = append(t.inputs().Artifacts, Artifact{Name: fileArtifact(f), Path: path})
				task.Arguments.Artifacts = append(task.Arguments.Artifacts, Artifact{Name: fileArtifact(f),
					From: fmt.Sprintf("{{tasks.%s.outputs.artifacts.%s}}", dns(ref.producer), fileArtifact(f))})
				deps[dns(ref.producer)] = true
				v, _ = json.Marshal(path)
			}
			*args = append(*args, "--param", ps.Name+"="+string(v))
			if ps.Role == plugin.RoleEncoder {
				runsModel = true
			}
			continue
		}
		if set {
			if ps.Role == plugin.RoleEncoder {
				runsModel = true
			}
			*args = append(*args, "--param", ps.Name+"="+string(v))
			continue
		}
		switch ps.Role {
		case plugin.RoleEncoder:
			if usesEncoder {
				continue // --encoder binds every encoder parameter of the stage
			}
			path := Root + "/in/encoder.onnx"
			t.inputs().Artifacts = append(t.inputs().Artifacts, Artifact{Name: EncoderArtifact, Path: path})
			task.Arguments.Artifacts = append(task.Arguments.Artifacts, Artifact{Name: EncoderArtifact, From: "{{inputs.artifacts." + EncoderArtifact + "}}"})
			*args = append(*args, "--encoder", path)
			usesEncoder, runsModel = true, true
		case plugin.RoleExport:
			path := Root + "/out/" + modelFile
			t.outputs().Artifacts = append(t.outputs().Artifacts, Artifact{Name: ModelArtifact, Path: path, Archive: &Archive{None: &struct{}{}}})
			*args = append(*args, "--export", path)
		case plugin.RoleSeed:
			*args = append(*args, "--seed", strconv.FormatInt(e.o.Seed, 10))
		case plugin.RoleClasses:
			if e.o.Classes > 0 {
				*args = append(*args, "--classes", strconv.Itoa(e.o.Classes))
			}
		case plugin.RoleShard:
			shardable = true
		}
		if ps.Role == plugin.RoleDevice {
			runsModel = true
		}
	}
	if runsModel {
		*args = append(*args, "--device", e.o.Device)
	}
	e.place(&t, runsModel)
	if len(task.Arguments.Artifacts) == 0 {
		task.Arguments = nil
	}
	task.Dependencies = sortedSet(deps)
	if !shardable || e.o.Shards < 2 {
		return []Task{task}, []Template{t}, usesEncoder, nil
	}
	return e.shard(id, spec, t, task, usesEncoder)
}

// place adds the GPU limit, node selector, tolerations and retries.
func (e *exporter) place(t *Template, runsModel bool) {
	if e.gpu && runsModel {
		t.Container.Resources = &Resources{Limits: map[string]string{"nvidia.com/gpu": "1"}}
	}
	if runsModel || !e.gpu {
		if len(e.o.NodeSelector) > 0 {
			t.NodeSelector = e.o.NodeSelector
		}
		t.Tolerations = e.o.Tolerations
	}
	if e.o.Retries > 0 {
		t.RetryStrategy = &RetryStrategy{Limit: e.o.Retries, RetryPolicy: "OnError"}
	}
}

// shard fans node id out over Shards tasks of one template (the share as
// its parameter) and merges their output with a concat task that keeps
// the node's name, so that downstream tasks read it unchanged.
func (e *exporter) shard(id string, spec plugin.Spec, t Template, task Task, usesEncoder bool) ([]Task, []Template, bool, error) {
	if len(spec.Outputs) != 1 {
		return nil, nil, false, plugin.BadInputf("argo: node %q: a sharded stage must have one output port, %s has %d", id, spec.Name, len(spec.Outputs))
	}
	port := spec.Outputs[0].Name
	name := dns(id)
	t.Name = name + "-shard"
	t.inputs().Parameters = []Parameter{{Name: "shard"}}
	t.Container.Args = append(t.Container.Args, "--shard", "{{inputs.parameters.shard}}")
	var tasks []Task
	cat := Template{Name: name + "-concat", Container: &Container{Image: e.o.Image, Command: []string{"tcore", "stage", "concat"}}}
	catTask := Task{Name: name, Template: cat.Name, Arguments: &Arguments{}}
	for i := 0; i < e.o.Shards; i++ {
		st := task
		st.Name = fmt.Sprintf("%s-shard-%d", name, i)
		st.Template = t.Name
		a := Arguments{Parameters: []Parameter{{Name: "shard", Value: fmt.Sprintf("%d/%d", i, e.o.Shards)}}}
		if task.Arguments != nil {
			a.Artifacts = task.Arguments.Artifacts
		}
		st.Arguments = &a
		tasks = append(tasks, st)
		part := fmt.Sprintf("part-%d", i)
		path := Root + "/in/" + part + ".arrow"
		cat.inputs().Artifacts = append(cat.inputs().Artifacts, Artifact{Name: part, Path: path})
		catTask.Arguments.Artifacts = append(catTask.Arguments.Artifacts, Artifact{Name: part, From: fmt.Sprintf("{{tasks.%s.outputs.artifacts.%s}}", st.Name, port)})
		cat.Container.Args = append(cat.Container.Args, "--in", "part="+path)
		catTask.Dependencies = append(catTask.Dependencies, st.Name)
	}
	out := Root + "/out/" + port + ".arrow"
	cat.Container.Args = append(cat.Container.Args, "--out", "table="+out)
	cat.Outputs = &IO{Artifacts: []Artifact{{Name: port, Path: out, Archive: &Archive{None: &struct{}{}}}}}
	e.place(&cat, false)
	return append(tasks, catTask), []Template{t, cat}, usesEncoder, nil
}

func sortedSet(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
