// Package pipelines holds the pipelines built into the tcore CLI, as JSON.
package pipelines

import (
	"bytes"
	"embed"
	"errors"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
)

//go:embed *.json
var files embed.FS

// Names lists the built-in pipelines.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(out)
	return out
}

// Get returns the built-in pipeline name, or false.
func Get(name string) (*dag.Pipeline, bool) {
	b, err := files.ReadFile(name + ".json")
	if err != nil {
		return nil, false
	}
	p, err := dag.ParsePipeline(bytes.NewReader(b), name+".json")
	if err != nil {
		panic("pipelines: built-in " + name + ": " + err.Error())
	}
	return p, true
}

// Resolve returns a built-in pipeline by name, or loads a pipeline file.
func Resolve(nameOrFile string) (*dag.Pipeline, error) {
	if p, ok := Get(nameOrFile); ok {
		return p, nil
	}
	if _, err := os.Stat(nameOrFile); errors.Is(err, fs.ErrNotExist) {
		return nil, plugin.BadInputf("pipeline %q: neither a built-in (%s) nor a file", nameOrFile, strings.Join(Names(), ", "))
	}
	return dag.LoadPipeline(nameOrFile)
}
