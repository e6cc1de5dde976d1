package main

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/plugin"
)

// The repository's manifest.json must describe every stage the CLI knows,
// exactly as the stage describes itself. go generate ./host-example/builtin
// rewrites it.
func TestManifestMatchesStages(t *testing.T) {
	path := filepath.Join("..", "..", "..", "manifest.json")
	stages := inProcess()
	names := make([]string, 0, len(stages))
	for n := range stages {
		names = append(names, n)
	}
	sort.Strings(names)
	cat, err := plugin.LoadCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Entries()) != len(names) {
		t.Fatalf("manifest lists %d stages, the CLI knows %v (go generate ./host-example/builtin rewrites it)", len(cat.Entries()), names)
	}
	for _, n := range names {
		e, ok := cat.Entry(n)
		if !ok {
			t.Fatalf("stage %s missing from manifest.json", n)
		}
		if err := e.Matches(stages[n].Spec()); err != nil {
			t.Errorf("%v (go generate ./host-example/builtin rewrites manifest.json)", err)
		}
		if e.Binary != "bin/tcore-"+n || !strings.HasSuffix(e.Package, "/cmd/tcore-"+n) {
			t.Errorf("stage %s: binary %s, package %s", n, e.Binary, e.Package)
		}
	}
}
