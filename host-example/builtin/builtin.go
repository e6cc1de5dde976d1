// Package builtin lists the stages that ship with tcore, for the hosts that
// run them in process (tcore --in-process) and for the manifest, which
// `go generate ./host-example/builtin` writes from their specs.
package builtin

//go:generate go run ../cmd/gen-manifest -out ../../manifest.json

import (
	"sort"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/abl"
	"github.com/tcore-dev/tcore/stages/actclust"
	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/clp"
	"github.com/tcore-dev/tcore/stages/ct"
	"github.com/tcore-dev/tcore/stages/embed"
	"github.com/tcore-dev/tcore/stages/evaluate"
	"github.com/tcore-dev/tcore/stages/expand"
	"github.com/tcore-dev/tcore/stages/filter"
	"github.com/tcore-dev/tcore/stages/fineprune"
	"github.com/tcore-dev/tcore/stages/poison"
	"github.com/tcore-dev/tcore/stages/sift"
	"github.com/tcore-dev/tcore/stages/spectral"
	"github.com/tcore-dev/tcore/stages/stats"
)

// Stages returns every built-in stage by name.
func Stages() map[string]plugin.Stage {
	out := map[string]plugin.Stage{}
	for _, s := range []plugin.Stage{stats.New(), embed.New(), sift.New(), expand.New(), filter.New(), bootstrap.New(),
		poison.New(), evaluate.New(), spectral.New(), actclust.New(), ct.New(), abl.New(), clp.New(), fineprune.New()} {
		out[s.Spec().Name] = s
	}
	return out
}

// Manifest returns the manifest of the built-in stages, in name order: each
// stage's spec, its binary bin/tcore-NAME and the package that builds it.
func Manifest() plugin.Manifest {
	stages := Stages()
	names := make([]string, 0, len(stages))
	for n := range stages {
		names = append(names, n)
	}
	sort.Strings(names)
	m := plugin.Manifest{Protocol: plugin.ProtocolVersion}
	for _, n := range names {
		m.Stages = append(m.Stages, plugin.EntryFor(stages[n].Spec(), "bin/tcore-"+n, "./stages/"+n+"/cmd/tcore-"+n))
	}
	return m
}
