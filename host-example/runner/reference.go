package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/report"
)

// ReferenceDir is the folder of a run folder where the reference head is
// trained (its own node cache; reused while nothing it reads changes).
const ReferenceDir = "reference"

// referencePipeline returns the `none` baseline over p's own embedding:
// p's input and embed nodes (same bound parameters, so the same cache
// keys) and one head on every row. It returns nil when p has no single
// embed node fed by an input, or is itself no more than embed and a head.
func referencePipeline(p *dag.Pipeline) *dag.Pipeline {
	var embed *dag.Node
	other := false
	for i := range p.Nodes {
		switch n := &p.Nodes[i]; {
		case n.Stage == "embed":
			if embed != nil {
				return nil
			}
			embed = n
		case n.Stage != "" && n.Stage != "bootstrap":
			other = true
		}
	}
	if embed == nil || !other {
		return nil
	}
	var input *dag.Node
	for _, e := range p.Edges {
		node, port, _ := dag.SplitRef(e.To)
		if node != embed.ID || port != "images" {
			continue
		}
		from, _, _ := dag.SplitRef(e.From)
		for i := range p.Nodes {
			if p.Nodes[i].ID == from && p.Nodes[i].Input != "" {
				input = &p.Nodes[i]
			}
		}
	}
	if input == nil {
		return nil
	}
	return &dag.Pipeline{
		Name:  "none",
		Doc:   "the reference of " + p.Name + ": one head on every training row over the same embedding",
		Nodes: []dag.Node{*input, *embed, {ID: "head", Stage: "bootstrap"}},
		Edges: []dag.Edge{{From: input.ID + ".table", To: embed.ID + ".images"}, {From: embed.ID + ".features", To: "head.features"}},
	}
}

// reference trains and evaluates the `none` baseline beside a finished
// run of the bound pipeline p (see Run.Reference). The run's input and
// embed nodes are linked into ReferenceDir, so only the head runs.
func (r *Run) reference(ctx context.Context, p *dag.Pipeline, res *dag.Result, b dag.Bindings, classes int) (*report.Reference, error) {
	ref := referencePipeline(p)
	if ref == nil || r.Test == "" {
		return nil, nil
	}
	start := time.Now()
	dir := filepath.Join(res.Dir, ReferenceDir)
	for _, n := range ref.Nodes[:2] {
		if err := linkTree(filepath.Join(res.Dir, "nodes", n.ID), filepath.Join(dir, "nodes", n.ID)); err != nil {
			return nil, err
		}
	}
	b.Export = filepath.Join(dir, "clean_model.onnx")
	b.RunDir = dir
	if err := ref.Bind(r.Stages, b); err != nil {
		return nil, err
	}
	inputs := map[string]string{ref.Nodes[0].Input: r.Train}
	if _, err := (&dag.Runner{Stages: r.Stages, Observer: r.Observer, Read: r.Read, NodeTimeout: r.StageTimeout}).Run(ctx, ref, inputs, dir); err != nil {
		return nil, fmt.Errorf("reference (none): %w", err)
	}
	ev, err := Eval{Model: b.Export, Data: r.Test, Device: b.Device, Read: r.testRead, Spec: r.Spec, Classes: classes}.Run(ctx)
	if err != nil {
		return nil, fmt.Errorf("reference (none): evaluating on %s: %w", r.Test, err)
	}
	return &report.Reference{ACC: &ev.ACC, ASR: ev.ASR, Model: b.Export, Seconds: time.Since(start).Seconds()}, nil
}

// linkTree makes dst a copy of the folder src, by hard links where the
// file system allows (the run's node files can be large), else by copies.
// Files already in dst are replaced.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		os.Remove(to)
		if os.Link(path, to) == nil {
			return nil
		}
		return copyFile(path, to)
	})
}
