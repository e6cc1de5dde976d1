package testplugin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin"
)

// Binary is a stage whose plugin binary a test needs.
type Binary struct {
	Spec plugin.Spec
	// Package is the import path of the binary's main package.
	Package string
}

// EchoBinary is the echo test stage's binary.
var EchoBinary = Binary{Spec: Echo{}.Spec(), Package: "github.com/tcore-dev/tcore/internal/testplugin/cmd/tcore-echo"}

// Setup builds the binaries into dir/bin with the go tool, writes
// dir/manifest.json naming them and locks their sha256s. It returns the
// manifest's path. Tests call it from TestMain: real plugin processes, no
// dependence on a prior `make`.
func Setup(dir string, bins ...Binary) (string, error) {
	var entries []plugin.Entry
	for _, b := range bins {
		name := "tcore-" + b.Spec.Name
		out := filepath.Join(dir, "bin", name)
		cmd := exec.Command("go", "build", "-o", out, b.Package)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("testplugin: building %s: %w", b.Package, err)
		}
		entries = append(entries, plugin.EntryFor(b.Spec, "bin/"+name, b.Package))
	}
	return WriteManifest(dir, entries...)
}

// WriteManifest writes dir/manifest.json naming entries and locks the
// sha256s of their binaries. It returns the manifest's path.
func WriteManifest(dir string, entries ...plugin.Entry) (string, error) {
	path := filepath.Join(dir, "manifest.json")
	if err := plugin.WriteManifest(path, plugin.Manifest{Protocol: plugin.ProtocolVersion, Stages: entries}); err != nil {
		return "", err
	}
	c, err := plugin.LoadCatalog(path)
	if err != nil {
		return "", err
	}
	if _, err := c.WriteLock(); err != nil {
		return "", err
	}
	return path, nil
}

// Garbage is a plugin built without the SDK (cmd/tcore-garbage) whose only
// output port gets a malformed stream.
var Garbage = Binary{
	Spec: plugin.Spec{Name: "garbage", Version: "1.0.0",
		Inputs:  []plugin.PortSpec{{Name: "images", Kind: arrowio.KindImages, Optional: true}},
		Outputs: []plugin.PortSpec{{Name: "images", Kind: arrowio.KindImages}}},
	Package: "github.com/tcore-dev/tcore/internal/testplugin/cmd/tcore-garbage",
}
