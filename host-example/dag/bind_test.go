package dag_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/pipelines"
)

// Bind fills each stage's parameters by the roles its spec declares, and
// leaves alone what a binding does not set and what the pipeline set.
func TestBindByRole(t *testing.T) {
	seed := int64(9)
	enc, _ := filepath.Abs("enc.onnx")
	cases := []struct {
		name  string
		b     dag.Bindings
		node  string
		param string
		want  any // nil: not set
	}{
		{"encoder", dag.Bindings{Encoder: "enc.onnx"}, "filter", "encoder", enc},
		{"device", dag.Bindings{Encoder: "e", Device: "cuda:1"}, "embed", "device", "cuda:1"},
		{"seed", dag.Bindings{Encoder: "e", Seed: &seed}, "bootstrap", "seed", 9.0},
		{"no seed binds nothing", dag.Bindings{Encoder: "e"}, "bootstrap", "seed", nil},
		{"classes", dag.Bindings{Encoder: "e", Classes: 43}, "sift", "classes", 43.0},
		{"classes reach the head", dag.Bindings{Encoder: "e", Classes: 43}, "bootstrap", "classes", 43.0},
		{"no classes binds nothing", dag.Bindings{Encoder: "e"}, "expand", "classes", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pipelines.Resolve("tcore")
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Bind(dag.InProcess(builtin.Stages()), tc.b); err != nil {
				t.Fatal(err)
			}
			for _, n := range p.Nodes {
				if n.ID != tc.node {
					continue
				}
				params := map[string]any{}
				if len(n.Params) > 0 {
					if err := json.Unmarshal(n.Params, &params); err != nil {
						t.Fatal(err)
					}
				}
				if got, ok := params[tc.param]; tc.want == nil && ok || tc.want != nil && got != tc.want {
					t.Fatalf("node %s param %s = %v (set %v), want %v", n.ID, tc.param, got, ok, tc.want)
				}
				return
			}
			t.Fatalf("no node %q in the tcore pipeline", tc.node)
		})
	}
}

// Set overrides a node's parameter (keeping the others the pipeline
// sets) and refuses keys that name no stage node.
func TestSetParams(t *testing.T) {
	cases := []struct {
		name    string
		values  map[string]json.RawMessage
		node    string
		want    map[string]string // param -> JSON after Set
		wantErr string
	}{
		{"adds a parameter", map[string]json.RawMessage{"embed.mean": json.RawMessage(`[0.5,0.5,0.5]`)}, "embed", map[string]string{"mean": `[0.5,0.5,0.5]`, "layers": `[]`}, ""},
		{"replaces one the pipeline sets", map[string]json.RawMessage{"embed.layers": json.RawMessage(`["auto"]`)}, "embed", map[string]string{"layers": `["auto"]`}, ""},
		{"no such node", map[string]json.RawMessage{"filter.k": json.RawMessage(`1`)}, "", nil, `pipeline "none" has no stage node "filter" (its stage nodes: embed, head)`},
		{"an input node", map[string]json.RawMessage{"train.k": json.RawMessage(`1`)}, "", nil, `has no stage node "train"`},
		{"no dot", map[string]json.RawMessage{"mean": json.RawMessage(`1`)}, "", nil, `want NODE.PARAM`},
		{"not JSON", map[string]json.RawMessage{"embed.mean": json.RawMessage(`[0.5`)}, "", nil, `is not JSON`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pipelines.Resolve("none")
			if err != nil {
				t.Fatal(err)
			}
			err = p.Set(tc.values)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range p.Nodes {
				if n.ID != tc.node {
					continue
				}
				var got map[string]json.RawMessage
				json.Unmarshal(n.Params, &got)
				for k, v := range tc.want {
					if string(got[k]) != v {
						t.Errorf("%s = %s, want %s", k, got[k], v)
					}
				}
			}
		})
	}
}
