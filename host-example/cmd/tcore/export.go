package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/argo"
	"github.com/tcore-dev/tcore/host-example/pipelines"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// kvFlag collects repeated KEY=VALUE flags.
type kvFlag struct {
	name string
	m    map[string]string
}

func (k *kvFlag) String() string { return "" }

func (k *kvFlag) Set(v string) error {
	key, val, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return fmt.Errorf("--%s %q: want KEY=VALUE", k.name, v)
	}
	if _, dup := k.m[key]; dup {
		return fmt.Errorf("--%s %s given twice", k.name, key)
	}
	k.m[key] = val
	return nil
}

// tolerationFlag collects --toleration KEY[=VALUE]:EFFECT.
type tolerationFlag []argo.Toleration

func (t *tolerationFlag) String() string { return "" }

func (t *tolerationFlag) Set(v string) error {
	kv, effect, ok := strings.Cut(v, ":")
	switch effect {
	case "NoSchedule", "PreferNoSchedule", "NoExecute":
	default:
		ok = false
	}
	if !ok || kv == "" {
		return fmt.Errorf("--toleration %q: want KEY[=VALUE]:EFFECT, EFFECT one of NoSchedule, PreferNoSchedule, NoExecute", v)
	}
	tl := argo.Toleration{Key: kv, Operator: "Exists", Effect: effect}
	if k, val, has := strings.Cut(kv, "="); has {
		tl.Key, tl.Operator, tl.Value = k, "Equal", val
	}
	*t = append(*t, tl)
	return nil
}

const exportUsage = `usage: tcore export argo [flags]

Writes the pipeline as an Argo Workflow (--template: a WorkflowTemplate):
one DAG whose tasks run 'tcore stage' in the tcore container image, with
the datasets, the encoder and every table between stages as artifacts.
`

func cmdExport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "argo" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, exportUsage)
			return flag.ErrHelp
		}
		return usagef("export: the one target is argo: tcore export argo [flags]")
	}
	o := argo.Options{}
	inputs := &kvFlag{name: "input", m: map[string]string{}}
	selector := &kvFlag{name: "node-selector", m: map[string]string{}}
	var tol tolerationFlag
	var pipeline, out, train, format string
	fs := flag.NewFlagSet("export argo", flag.ContinueOnError)
	fs.StringVar(&pipeline, "pipeline", "tcore", "built-in pipeline ("+strings.Join(pipelines.Names(), ", ")+") or a pipeline JSON file")
	fs.StringVar(&train, "train", "", "the training dataset: a key in the cluster's artifact repository, or an http(s) URL (same as --input train=...)")
	fs.Var(inputs, "input", "NAME=KEY: where a pipeline input lives (artifact repository key or http(s) URL); repeat per input")
	fs.StringVar(&o.Encoder, "encoder", "", "the encoder (ONNX): artifact repository key or http(s) URL")
	fs.StringVar(&o.Image, "image", "tcore:latest", "container image holding tcore (see the README's Dockerfile)")
	fs.StringVar(&o.Device, "device", "cpu", "cpu, or cuda: the steps that run the encoder ask for one nvidia.com/gpu")
	fs.Int64Var(&o.Seed, "seed", 1, "random seed")
	fs.IntVar(&o.Classes, "classes", 0, "number of classes (default: the largest training label + 1)")
	fs.IntVar(&o.Shards, "shards", 1, "fan each stage that can run sharded (embed) out over this many tasks, merged by a concat task")
	fs.Var(selector, "node-selector", "KEY=VALUE: node selector of the encoder steps (all steps with --device cpu); repeat")
	fs.Var(&tol, "toleration", "KEY[=VALUE]:EFFECT: toleration of the encoder steps (all steps with --device cpu); repeat")
	fs.IntVar(&o.Retries, "retries", 2, "retries of a step whose node fails (pod lost or evicted); 0: none")
	fs.BoolVar(&o.Template, "template", false, "write a WorkflowTemplate that users submit with their own artifacts")
	fs.StringVar(&o.Name, "name", "", "the template's name, or the workflow's name prefix (default: tcore-PIPELINE)")
	fs.StringVar(&out, "out", "", "file to write (default: standard output)")
	fs.StringVar(&format, "format", "yaml", "yaml, or json (the same object; kubectl and argo take either)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if _, _, err := ort.ParseDevice(o.Device); err != nil {
		return usagef("export argo: --device %q: want cpu, cuda or cuda:N (%v)", o.Device, err)
	}
	p, err := pipelines.Resolve(pipeline)
	if err != nil {
		return err
	}
	o.Pipeline, o.Stages = p, inProcess()
	o.Inputs = inputs.m
	if train != "" {
		if v, dup := o.Inputs["train"]; dup && v != train {
			return usagef("export argo: --train and --input train= disagree")
		}
		o.Inputs["train"] = train
	}
	if len(selector.m) > 0 {
		o.NodeSelector = selector.m
	}
	o.Tolerations = tol
	if o.Name == "" {
		o.Name = strings.ToLower(p.Name)
		if !strings.HasPrefix(o.Name, "tcore") {
			o.Name = "tcore-" + o.Name
		}
	}
	wf, err := argo.Export(o)
	if err != nil {
		return err
	}
	var b []byte
	switch format {
	case "yaml":
		b, err = wf.YAML()
	case "json":
		b, err = json.MarshalIndent(wf, "", "  ")
		b = append(b, '\n')
	default:
		return usagef("export argo: --format %q: want yaml or json", format)
	}
	if err != nil {
		return err
	}
	if out == "" {
		_, err = stdout.Write(b)
		return err
	}
	if err := arrowio.WriteFileAtomic(out, b); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%s %q: %d tasks)\n", out, wf.Kind, o.Name, len(wf.Spec.Templates[0].DAG.Tasks))
	return nil
}
