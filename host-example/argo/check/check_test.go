package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	wfv1 "github.com/argoproj/argo-workflows/v4/pkg/apis/workflow/v1alpha1"
	"github.com/argoproj/argo-workflows/v4/util/logging"
	"github.com/argoproj/argo-workflows/v4/workflow/validate"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/tcore-dev/tcore/host-example/argo"
	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
)

// strictSchema compiles the JSON schema Argo Workflows publishes
// (api/jsonschema/schema.json of the argo-workflows module this test
// depends on, read from the module cache, not copied), patched at test
// time in two ways: every object type with declared properties refuses
// other fields (the published schema lets unknown fields through, so a
// typo would pass), and IntOrString takes integers as well as strings (the
// published schema types it as a string only, though Kubernetes and Argo
// take both).
func strictSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/argoproj/argo-workflows/v4").Output()
	if err != nil {
		t.Fatalf("finding the argo-workflows module: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "api", "jsonschema", "schema.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	defs := doc["definitions"].(map[string]any)
	strict := 0
	for _, d := range defs {
		m := d.(map[string]any)
		if _, has := m["properties"]; has {
			if _, set := m["additionalProperties"]; !set {
				m["additionalProperties"] = false
				strict++
			}
		}
	}
	defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = map[string]any{"type": []any{"string", "integer"}}
	t.Logf("schema %s: %d definitions, %d made strict", path, len(defs), strict)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("argo.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("argo.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// exports are the workflows the test checks: the tcore pipeline as
// exported for CPU and for CUDA with four embed shards, as a
// WorkflowTemplate, and every other built-in pipeline.
func exports(t *testing.T) map[string]*argo.Workflow {
	t.Helper()
	stages := dag.InProcess(builtin.Stages())
	out := map[string]*argo.Workflow{}
	add := func(name, pipeline string, edit func(*argo.Options)) {
		p, ok := pipelines.Get(pipeline)
		if !ok {
			t.Fatalf("no pipeline %q", pipeline)
		}
		o := argo.Options{Pipeline: p, Stages: stages, Image: "tcore:test", Device: "cpu", Seed: 1, Retries: 2,
			Inputs: map[string]string{}, Encoder: "models/encoder.onnx", Name: "tcore-" + strings.TrimPrefix(pipeline, "tcore")}
		o.Name = strings.TrimSuffix(o.Name, "-")
		for _, in := range p.Inputs() {
			o.Inputs[in] = "datasets/" + in + ".parquet"
		}
		if edit != nil {
			edit(&o)
		}
		wf, err := argo.Export(o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = wf
	}
	add("tcore", "tcore", nil)
	add("tcore, cuda, 4 shards", "tcore", func(o *argo.Options) {
		o.Device, o.Shards = "cuda", 4
		o.NodeSelector = map[string]string{"nvidia.com/gpu.present": "true"}
		o.Tolerations = []argo.Toleration{{Key: "nvidia.com/gpu", Operator: "Exists", Effect: "NoSchedule"}}
	})
	add("tcore template", "tcore", func(o *argo.Options) { o.Template, o.Inputs, o.Encoder = true, nil, "" })
	for _, name := range pipelines.Names() {
		if name != "tcore" {
			add(name, name, nil)
		}
	}
	return out
}

// asJSON is the workflow as generic JSON.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// argoValidate parses the workflow strictly into Argo's own types (an
// unknown field is an error) and runs Argo's validator in lint mode.
func argoValidate(doc []byte) error {
	ctx := logging.WithLogger(context.Background(), logging.NewSlogLogger(logging.Error, logging.Text))
	var kind struct{ Kind string }
	if err := json.Unmarshal(doc, &kind); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(doc))
	d.DisallowUnknownFields()
	if kind.Kind == "WorkflowTemplate" {
		var wt wfv1.WorkflowTemplate
		if err := d.Decode(&wt); err != nil {
			return fmt.Errorf("strict parsing: %w", err)
		}
		return validate.ValidateWorkflowTemplate(ctx, nil, nil, &wt, nil, validate.ValidateOpts{Lint: true})
	}
	var wf wfv1.Workflow
	if err := d.Decode(&wf); err != nil {
		return fmt.Errorf("strict parsing: %w", err)
	}
	return validate.ValidateWorkflow(ctx, nil, nil, &wf, nil, validate.ValidateOpts{Lint: true})
}

// Every export is accepted by the strict schema and by Argo's validator,
// and its YAML says what its JSON says.
func TestExportsAreValidArgo(t *testing.T) {
	schema := strictSchema(t)
	for name, wf := range exports(t) {
		t.Run(name, func(t *testing.T) {
			y, err := wf.YAML()
			if err != nil {
				t.Fatal(err)
			}
			doc, err := yaml.YAMLToJSON(y)
			if err != nil {
				t.Fatalf("the YAML does not parse: %v\n%s", err, y)
			}
			var fromYAML any
			json.Unmarshal(doc, &fromYAML)
			if !reflect.DeepEqual(fromYAML, asJSON(t, wf)) {
				t.Fatalf("the YAML and the JSON of the workflow differ:\n%s", y)
			}
			if err := schema.Validate(fromYAML); err != nil {
				t.Errorf("schema: %v", err)
			}
			if err := argoValidate(doc); err != nil {
				t.Errorf("argo validate: %v", err)
			}
		})
	}
}

// Broken workflows are refused: the checks can fail.
func TestBrokenWorkflowsAreRefused(t *testing.T) {
	schema := strictSchema(t)
	good := asJSON(t, exports(t)["tcore"]).(map[string]any)
	tasks := func(w map[string]any) []any {
		main := w["spec"].(map[string]any)["templates"].([]any)[0].(map[string]any)
		return main["dag"].(map[string]any)["tasks"].([]any)
	}
	task := func(w map[string]any, name string) map[string]any {
		for _, x := range tasks(w) {
			if m := x.(map[string]any); m["name"] == name {
				return m
			}
		}
		t.Fatalf("no task %s", name)
		return nil
	}
	cases := []struct {
		name       string
		edit       func(w map[string]any)
		schemaToo  bool // the schema sees it too (it cannot see references)
		wantArgo   string
		wantSchema string
	}{
		{"missing dependency (sift reads embed's output without waiting for it)", func(w map[string]any) {
			delete(task(w, "sift"), "dependencies")
		}, false, "embed", ""},
		{"dependency on a task that does not exist", func(w map[string]any) {
			task(w, "sift")["dependencies"] = []any{"embedd"}
		}, false, "embedd", ""},
		{"typo in a field", func(w map[string]any) {
			s := task(w, "sift")
			s["dependancies"] = s["dependencies"]
		}, true, "dependancies", "dependancies"},
		{"task that names no template", func(w map[string]any) {
			delete(task(w, "expand"), "template")
		}, false, "expand", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := asJSON(t, good).(map[string]any)
			tc.edit(w)
			doc, _ := json.Marshal(w)
			err := argoValidate(doc)
			if err == nil || !strings.Contains(err.Error(), tc.wantArgo) {
				t.Errorf("argo validate: %v, want an error naming %q", err, tc.wantArgo)
			}
			t.Logf("argo validate: %v", err)
			serr := schema.Validate(w)
			if tc.schemaToo && (serr == nil || !strings.Contains(serr.Error(), tc.wantSchema)) {
				t.Errorf("schema: %v, want an error naming %q", serr, tc.wantSchema)
			}
			if serr != nil {
				t.Logf("schema: %v", strings.ReplaceAll(serr.Error(), "\n", " "))
			}
		})
	}
}
