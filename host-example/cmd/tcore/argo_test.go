package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/host-example/argo"
	"github.com/tcore-dev/tcore/internal/ortlib"
	"github.com/tcore-dev/tcore/stages/kit/testenc"
)

// runStep runs one tcore command line in this process; it fails the test
// on a non-zero exit.
func runStep(t *testing.T, args ...string) string {
	t.Helper()
	var so, se bytes.Buffer
	if code := run(args, &so, &se); code != 0 {
		t.Fatalf("tcore %s: exit %d: %s", strings.Join(args, " "), code, se.String())
	}
	return so.String()
}

// localArgo executes an exported workflow's tasks in dependency order with
// the commands and artifact paths its YAML gives: each task gets a folder
// standing for its container's argo.Root, its input artifacts are copied
// to their paths there, `{{inputs.parameters.X}}` takes the task's
// argument, and the command (tcore stage ...) runs in this process with
// --in-process added. repo holds the workflow's input artifacts by key. It
// returns each task's output artifacts by name.
func localArgo(t *testing.T, wf *argo.Workflow, repo, work string) map[string]map[string]string {
	t.Helper()
	tmpl := map[string]argo.Template{}
	for _, x := range wf.Spec.Templates {
		tmpl[x.Name] = x
	}
	main := tmpl[wf.Spec.Entrypoint]
	wfParams := map[string]string{}
	for _, p := range wf.Spec.Arguments.Parameters {
		wfParams[p.Name] = p.Value
	}
	wfArgs := map[string]string{}
	for _, a := range wf.Spec.Arguments.Artifacts {
		key := a.S3.Key
		for k, v := range wfParams {
			key = strings.ReplaceAll(key, "{{workflow.parameters."+k+"}}", v)
		}
		wfArgs[a.Name] = filepath.Join(repo, key)
	}
	outputs := map[string]map[string]string{}
	ref := regexp.MustCompile(`^\{\{(?:inputs\.artifacts\.([a-z0-9-]+)|tasks\.([a-z0-9-]+)\.outputs\.artifacts\.([a-z0-9-]+))\}\}$`)
	done := map[string]bool{}
	for len(done) < len(main.DAG.Tasks) {
		progressed := false
		for _, task := range main.DAG.Tasks {
			ready := !done[task.Name]
			for _, d := range task.Dependencies {
				ready = ready && done[d]
			}
			if !ready {
				continue
			}
			root := filepath.Join(work, task.Name)
			local := func(p string) string { return strings.Replace(p, argo.Root, root, 1) }
			x := tmpl[task.Template]
			from := map[string]string{}
			params := map[string]string{}
			if task.Arguments != nil {
				for _, a := range task.Arguments.Artifacts {
					m := ref.FindStringSubmatch(a.From)
					switch {
					case m == nil:
						t.Fatalf("task %s: artifact %s from %q: not a reference this runner knows", task.Name, a.Name, a.From)
					case m[1] != "":
						from[a.Name] = wfArgs[m[1]]
					default:
						if !done[m[2]] {
							t.Fatalf("task %s reads %s of %s, which it does not depend on", task.Name, m[3], m[2])
						}
						from[a.Name] = outputs[m[2]][m[3]]
					}
				}
				for _, p := range task.Arguments.Parameters {
					params[p.Name] = p.Value
				}
			}
			if x.Inputs != nil {
				for _, a := range x.Inputs.Artifacts {
					src, ok := from[a.Name]
					if !ok || src == "" {
						t.Fatalf("task %s: input artifact %s has no source", task.Name, a.Name)
					}
					copyFile(t, src, local(a.Path))
				}
			}
			var args []string
			for _, s := range append(x.Container.Command[1:], x.Container.Args...) {
				for k, v := range params {
					s = strings.ReplaceAll(s, "{{inputs.parameters."+k+"}}", v)
				}
				if strings.Contains(s, "{{") {
					t.Fatalf("task %s: %q left unresolved", task.Name, s)
				}
				args = append(args, strings.ReplaceAll(s, argo.Root+"/", root+"/"))
			}
			if x.Container.Command[0] != "tcore" || args[0] != "stage" {
				t.Fatalf("task %s runs %v, not tcore stage", task.Name, x.Container.Command)
			}
			if args[1] != "concat" {
				args = append(args, "--in-process")
			}
			runStep(t, args...)
			outputs[task.Name] = map[string]string{}
			for _, a := range x.Outputs.Artifacts {
				p := local(a.Path)
				if _, err := os.Stat(p); err != nil {
					t.Fatalf("task %s: output artifact %s: %v", task.Name, a.Name, err)
				}
				outputs[task.Name][a.Name] = p
			}
			done[task.Name] = true
			progressed = true
		}
		if !progressed {
			t.Fatalf("tasks left that can never run: the DAG has a cycle or a missing dependency")
		}
	}
	return outputs
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameFile(t *testing.T, what, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Errorf("%s: %s (%d bytes) and %s (%d bytes) differ", what, a, len(x), b, len(y))
	}
}

// The exported workflow, run task by task through tcore stage with its
// own commands and artifact paths (embed in three shards merged by
// concat), gives the run's clean_model.onnx byte for byte, and every
// table between the stages equals the run folder's node file.
func TestArgoExportRunsLikeARun(t *testing.T) {
	endToEnd(t)
	ortlib.Init(t)
	dir := t.TempDir()
	enc, train, _, _ := scenarioOf(t, dir, testenc.Collapse(5), 66, patchTrigger)
	argoLikeRun(t, dir, enc, train, smallTCore(t, dir))
}

// The same on the demo data (testdata/demo: 2,000 CIFAR-10 images and the
// backdoored demo encoder) with the built-in tcore pipeline: minutes, so
// only when TCORE_ARGO_DEMO=1.
func TestArgoExportRunsLikeARunOnDemoData(t *testing.T) {
	if os.Getenv("TCORE_ARGO_DEMO") != "1" {
		t.Skip("set TCORE_ARGO_DEMO=1 (the built-in tcore pipeline on the demo data, twice: minutes)")
	}
	ortlib.Init(t)
	demo := filepath.Join("..", "..", "..", "testdata", "demo")
	argoLikeRun(t, t.TempDir(), filepath.Join(demo, "enc_badencoder.onnx"), filepath.Join(demo, "train.parquet"), "tcore")
}

// argoLikeRun runs the pipeline with tcore run, exports it with embed in
// three shards, runs the export's tasks (localArgo) and compares.
func argoLikeRun(t *testing.T, dir, enc, train, pipe string) {
	t.Helper()
	runStep(t, "run", "--in-process", "--pipeline", pipe, "--encoder", enc, "--train", train, "--out", filepath.Join(dir, "run"))

	repo := filepath.Join(dir, "repo")
	copyFile(t, train, filepath.Join(repo, "data", "train.parquet"))
	copyFile(t, enc, filepath.Join(repo, "models", "enc.onnx"))
	wfFile := filepath.Join(dir, "wf.json")
	runStep(t, "export", "argo", "--pipeline", pipe, "--train", "data/train.parquet", "--encoder", "models/enc.onnx",
		"--shards", "3", "--format", "json", "--out", wfFile)
	var wf argo.Workflow
	b, _ := os.ReadFile(wfFile)
	if err := json.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	out := localArgo(t, &wf, repo, filepath.Join(dir, "argo"))

	run := filepath.Join(dir, "run")
	sameFile(t, "clean_model.onnx", filepath.Join(run, "clean_model.onnx"), out["bootstrap"][argo.ModelArtifact])
	sameFile(t, "filtered encoder", filepath.Join(run, "filtered_encoder.onnx"), out["filter"]["file-filtered-encoder-onnx"])
	for node, ports := range map[string][]string{"embed": {"features"}, "sift": {"scores"}, "expand": {"scores"},
		"filter": {"features", "scores", "augment", "channels"}, "bootstrap": {"scores"}} {
		for _, p := range ports {
			sameFile(t, fmt.Sprintf("%s.%s", node, p), filepath.Join(run, "nodes", node, p+".arrow"), out[node][p])
		}
	}
	if len(out) != 8 { // 3 embed shards, concat (named embed), sift, expand, filter, bootstrap
		t.Errorf("%d tasks ran, want 8", len(out))
	}
}

// endToEnd skips a test that runs whole pipelines in this process under
// the race detector: their time goes to the stages' numerics (ten times
// slower there, minutes each), while the host's concurrency they share
// with the fault, stage and exit-status tests is raced there. They run in
// the plain pass.
func endToEnd(t *testing.T) {
	t.Helper()
	if raceOn {
		t.Skip("whole pipelines in process: run in the plain pass, not under -race")
	}
}
