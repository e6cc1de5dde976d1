package argo_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/host-example/argo"
	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
)

func options(t *testing.T, pipeline string) argo.Options {
	t.Helper()
	p, ok := pipelines.Get(pipeline)
	if !ok {
		t.Fatalf("no built-in pipeline %q", pipeline)
	}
	return argo.Options{Pipeline: p, Stages: dag.InProcess(builtin.Stages()), Image: "tcore:test", Device: "cpu", Seed: 1,
		Inputs: map[string]string{"train": "data/train.parquet"}, Encoder: "models/enc.onnx", Name: "tcore-" + pipeline, Retries: 2}
}

func tasks(wf *argo.Workflow) map[string]argo.Task {
	m := map[string]argo.Task{}
	for _, t := range wf.Spec.Templates[0].DAG.Tasks {
		m[t.Name] = t
	}
	return m
}

func templates(wf *argo.Workflow) map[string]argo.Template {
	m := map[string]argo.Template{}
	for _, t := range wf.Spec.Templates {
		m[t.Name] = t
	}
	return m
}

// The tcore pipeline's export: a task per stage node with the node graph as
// dependencies (plus bootstrap after filter, whose filtered encoder it
// reads), embed fanned out when asked, a GPU only where the encoder runs.
func TestExportTCore(t *testing.T) {
	cases := []struct {
		name   string
		shards int
		device string
		want   map[string][]string // task -> dependencies
	}{
		{"cpu, unsharded", 1, "cpu", map[string][]string{"embed": nil, "sift": {"embed"}, "expand": {"embed", "sift"},
			"filter": {"embed", "expand"}, "bootstrap": {"embed", "expand", "filter"}}},
		{"cuda, 4 shards", 4, "cuda", map[string][]string{"embed-shard-0": nil, "embed-shard-1": nil, "embed-shard-2": nil, "embed-shard-3": nil,
			"embed": {"embed-shard-0", "embed-shard-1", "embed-shard-2", "embed-shard-3"}, "sift": {"embed"}, "expand": {"embed", "sift"},
			"filter": {"embed", "expand"}, "bootstrap": {"embed", "expand", "filter"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t, "tcore")
			o.Shards, o.Device = tc.shards, tc.device
			o.NodeSelector = map[string]string{"pool": "gpu"}
			wf, err := argo.Export(o)
			if err != nil {
				t.Fatal(err)
			}
			got := tasks(wf)
			if len(got) != len(tc.want) {
				t.Fatalf("%d tasks, want %d: %v", len(got), len(tc.want), got)
			}
			for name, deps := range tc.want {
				if fmt.Sprint(got[name].Dependencies) != fmt.Sprint(deps) {
					t.Errorf("task %s depends on %v, want %v", name, got[name].Dependencies, deps)
				}
			}
			tm := templates(wf)
			for name, x := range tm {
				if x.Container == nil {
					continue
				}
				gpu := x.Container.Resources != nil && x.Container.Resources.Limits["nvidia.com/gpu"] == "1"
				runsEncoder := strings.Contains(strings.Join(x.Container.Args, " "), "--device")
				if gpu != (tc.device == "cuda" && runsEncoder) {
					t.Errorf("template %s: GPU limit %v, runs the encoder %v, device %s", name, gpu, runsEncoder, tc.device)
				}
				if sel := x.NodeSelector["pool"] == "gpu"; sel != (runsEncoder || tc.device == "cpu") {
					t.Errorf("template %s: node selector %v", name, x.NodeSelector)
				}
				if x.RetryStrategy == nil || x.RetryStrategy.Limit != 2 || x.RetryStrategy.RetryPolicy != "OnError" {
					t.Errorf("template %s: retries %+v", name, x.RetryStrategy)
				}
			}
			for _, name := range []string{"expand", "filter", "bootstrap"} {
				if x := tm[name]; !strings.Contains(strings.Join(x.Container.Args, " "), "--seed 1") {
					t.Errorf("template %s: no --seed 1 in %v", name, x.Container.Args)
				}
			}
			boot := got["bootstrap"]
			var fromFilter bool
			for _, a := range boot.Arguments.Artifacts {
				fromFilter = fromFilter || a.From == "{{tasks.filter.outputs.artifacts.file-filtered-encoder-onnx}}"
			}
			if !fromFilter {
				t.Errorf("bootstrap does not take the filtered encoder from filter: %+v", boot.Arguments.Artifacts)
			}
		})
	}
}

func TestExportRefuses(t *testing.T) {
	cases := []struct {
		name string
		edit func(*argo.Options)
		want string
	}{
		{"no image", func(o *argo.Options) { o.Image = "" }, "no container image"},
		{"a name Argo refuses", func(o *argo.Options) { o.Name = "T_Core" }, `name "T_Core"`},
		{"no training set", func(o *argo.Options) { o.Inputs = nil }, `reads input "train": give its location`},
		{"an input the pipeline lacks", func(o *argo.Options) { o.Inputs["test"] = "x" }, `has no input "test"`},
		{"no encoder", func(o *argo.Options) { o.Encoder = "" }, "runs an encoder: give its location"},
		{"an s3 URL", func(o *argo.Options) { o.Encoder = "s3://bucket/enc.onnx" }, "want a key in the cluster's artifact repository or an http(s) URL"},
		{"a device", func(o *argo.Options) { o.Device = "tpu" }, `--device "tpu"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t, "tcore")
			tc.edit(&o)
			if _, err := argo.Export(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	// A template leaves the locations to whoever submits it.
	o := options(t, "tcore")
	o.Template, o.Inputs, o.Encoder = true, nil, ""
	wf, err := argo.Export(o)
	if err != nil || wf.Kind != "WorkflowTemplate" || wf.Metadata.Name != o.Name {
		t.Fatalf("template: %v, %+v", err, wf)
	}
	// A file read under $run that no stage exports.
	p, _ := pipelines.Get("tcore")
	bad := *p
	bad.Nodes = append([]dag.Node(nil), p.Nodes...)
	for i, n := range bad.Nodes {
		if n.ID == "filter" {
			bad.Nodes[i].Params = []byte(`{"export": "$run/other.onnx"}`)
		}
	}
	o = options(t, "tcore")
	o.Pipeline = &bad
	if _, err := argo.Export(o); err == nil || !strings.Contains(err.Error(), "reads $run/filtered_encoder.onnx, which no stage of the pipeline exports") {
		t.Fatalf("a $run file without producer: %v", err)
	}
}

// Example exports the built-in tcore pipeline with embed in two shards.
func Example() {
	p, _ := pipelines.Get("tcore")
	wf, err := argo.Export(argo.Options{Pipeline: p, Stages: dag.InProcess(builtin.Stages()), Image: "tcore:0.1",
		Inputs: map[string]string{"train": "datasets/train.parquet"}, Encoder: "models/encoder.onnx",
		Device: "cuda", Seed: 1, Shards: 2, Retries: 2, Name: "tcore"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range wf.Spec.Templates[0].DAG.Tasks {
		fmt.Println(t.Name, t.Dependencies)
	}
	y, _ := wf.YAML()
	os.Stdout.Write(y[:strings.Index(string(y), "  templates:")])
	// Output:
	// embed-shard-0 []
	// embed-shard-1 []
	// embed [embed-shard-0 embed-shard-1]
	// sift [embed]
	// expand [embed sift]
	// filter [embed expand]
	// bootstrap [embed expand filter]
	// # Written by tcore export argo.
	// apiVersion: "argoproj.io/v1alpha1"
	// kind: "Workflow"
	// metadata:
	//   generateName: "tcore-"
	//   labels:
	//     app.kubernetes.io/name: "tcore"
	//     tcore/pipeline: "tcore"
	// spec:
	//   entrypoint: "main"
	//   arguments:
	//     parameters:
	//     - name: "train"
	//       value: "datasets/train.parquet"
	//     - name: "encoder"
	//       value: "models/encoder.onnx"
	//     artifacts:
	//     - name: "train"
	//       s3:
	//         key: "{{workflow.parameters.train}}"
	//     - name: "encoder"
	//       s3:
	//         key: "{{workflow.parameters.encoder}}"
}
