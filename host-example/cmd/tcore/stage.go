package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/host-example/runner"
	"github.com/tcore-dev/tcore/plugin"
)

// concatStage is the host's own step that merges a sharded stage's
// outputs (arrowio.Concat); it is no plugin.
const concatStage = "concat"

// portFlag collects repeated PORT=FILE flags, in order.
type portFlag struct {
	name  string
	pairs [][2]string
}

func (p *portFlag) String() string { return "" }

func (p *portFlag) Set(v string) error {
	port, file, ok := strings.Cut(v, "=")
	if !ok || port == "" || file == "" {
		return fmt.Errorf("--%s %q: want PORT=FILE", p.name, v)
	}
	p.pairs = append(p.pairs, [2]string{port, file})
	return nil
}

// byPort maps ports to files, refusing a port given twice.
func (p *portFlag) byPort() (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range p.pairs {
		if prev, dup := m[kv[0]]; dup {
			return nil, usagef("stage: --%s %s given twice (%s and %s)", p.name, kv[0], prev, kv[1])
		}
		m[kv[0]] = kv[1]
	}
	return m, nil
}

// paramFlag collects repeated k=v parameters; v is JSON when it parses as
// JSON, else a string.
type paramFlag map[string]json.RawMessage

func (p paramFlag) String() string { return "" }

func (p paramFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("--param %q: want NAME=VALUE", v)
	}
	if !json.Valid([]byte(val)) {
		b, _ := json.Marshal(val)
		val = string(b)
	}
	p[k] = json.RawMessage(val)
	return nil
}

const stageUsage = `usage: tcore stage NAME --in PORT=FILE ... --out PORT=FILE ... [flags]
       tcore stage concat --in part=FILE --in part=FILE ... --out table=FILE

Runs one stage as a standalone step: the same plugin, checks and outputs
(byte for byte) as the stage's node in a 'tcore run' folder. Prints what it
wrote as JSON. 'concat' merges the outputs of a sharded stage (--shard i/n)
in share order.
`

func cmdStage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, stageUsage)
			return flag.ErrHelp
		}
		return usagef("stage: name the stage first\n\n%s", stageUsage)
	}
	name := args[0]
	var c runConfig
	ins, outs := &portFlag{name: "in"}, &portFlag{name: "out"}
	params := paramFlag{}
	var paramsFile, export, shard string
	fs := flag.NewFlagSet("stage", flag.ContinueOnError)
	c.common.register(fs)
	fs.Var(ins, "in", "PORT=FILE: an input port's table (Parquet, Arrow IPC or image folder); repeat per port")
	fs.Var(outs, "out", "PORT=FILE: where an output port's table goes (Arrow IPC file); repeat per port")
	fs.StringVar(&paramsFile, "params", "", "stage parameters: a JSON object file")
	fs.Var(params, "param", "NAME=VALUE: one stage parameter (VALUE is JSON, else a string); overrides --params")
	fs.StringVar(&c.encoder, "encoder", "", "pre-trained encoder (ONNX), for stages that run one")
	fs.StringVar(&export, "export", "", "where a stage that exports a model writes it")
	fs.Int64Var(&c.seed, "seed", 1, "random seed")
	fs.IntVar(&c.classes, "classes", 0, "number of classes (default: the largest training label + 1)")
	fs.StringVar(&shard, "shard", "", "i/n: run the i-th of n shares of the rows (stages that can; merge with 'tcore stage concat')")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the stage inside this process instead of as its plugin")
	fs.StringVar(&c.imageCol, "image-col", "", "image column of the input datasets (default: detected)")
	fs.StringVar(&c.labelCol, "label-col", "", "label column of the input datasets (default: label or labels)")
	if err := parse(fs, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			describeStage(stdout, name)
		}
		return err
	}
	out, err := outs.byPort()
	if err != nil {
		return err
	}
	if name == concatStage {
		return stageConcat(ctx, ins, out, stdout)
	}
	in, err := ins.byPort()
	if err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if c.classes < 0 {
		return usagef("stage: --classes %d: want a positive number of classes (or 0)", c.classes)
	}
	raw, err := stageParams(paramsFile, params)
	if err != nil {
		return err
	}
	b := dag.Bindings{Encoder: c.encoder, Device: c.device, Seed: &c.seed, Export: export, Classes: c.classes}
	if shard != "" {
		i, n, err := arrowio.ParseShard(shard)
		if err != nil {
			return usagef("stage: --%v", err)
		}
		b.Shard = []int{i, n}
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	stages, err := c.provider(log)
	if err != nil {
		return err
	}
	if b.Shard != nil {
		if !hasShardRole(stages, name) {
			return usagef("stage: --shard: stage %s cannot run sharded (no parameter with the shard role)", name)
		}
	}
	st := &runner.Step{Stage: name, Params: raw, Bindings: b, In: in, Out: out, Stages: stages,
		Read: arrowio.ReadOptions{ImageCol: c.imageCol, LabelCol: c.labelCol}, StageTimeout: c.timeout}
	res, err := st.Execute(log.WithContext(ctx))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// stageParams merges the --params file and the --param flags.
func stageParams(file string, flags paramFlag) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, usagef("stage: --params: %v", err)
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, usagef("stage: --params %s: want a JSON object of parameters: %v", file, err)
		}
	}
	for k, v := range flags {
		m[k] = v
	}
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

func hasShardRole(stages dag.Provider, name string) bool {
	spec, ok := stages.Spec(name)
	if !ok {
		return true // Execute names the unknown stage
	}
	for _, p := range spec.Params {
		if p.Role == "shard" {
			return true
		}
	}
	return false
}

// stageConcat merges shares: --in part=FILE in share order, --out
// table=FILE.
func stageConcat(ctx context.Context, ins *portFlag, out map[string]string, stdout io.Writer) error {
	var parts []string
	for _, kv := range ins.pairs {
		if kv[0] != "part" {
			return usagef("stage concat: --in %s=...: its input port is \"part\", once per share in share order", kv[0])
		}
		parts = append(parts, kv[1])
	}
	if len(parts) == 0 {
		return usagef("stage concat: give the shares, --in part=FILE once per share in share order")
	}
	dst, ok := out["table"]
	if !ok || len(out) != 1 {
		keys := make([]string, 0, len(out))
		for k := range out {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return usagef("stage concat: its one output is --out table=FILE (got %v)", keys)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	wr, err := arrowio.Concat(ctx, parts, dst)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(runner.StepResult{Stage: concatStage, Outputs: map[string]dag.Output{
		"table": {Path: dst, Rows: wr.Rows, Bytes: wr.Bytes, SHA256: wr.SHA256}}})
}

// describeStage prints a built-in stage's ports and parameters (after the
// flags, for `tcore stage NAME -h`).
func describeStage(w io.Writer, name string) {
	if name == concatStage {
		fmt.Fprintf(w, "\nstage concat (the host's own): input part (once per share, in share order), output table\n")
		return
	}
	if spec, ok := inProcess().Spec(name); ok {
		fmt.Fprintln(w)
		printSpec(w, spec)
	}
}

// printSpec prints a stage's ports and parameters: types, defaults,
// roles, ranges and docs.
func printSpec(w io.Writer, spec plugin.Spec) {
	fmt.Fprintf(w, "stage %s %s\n", spec.Name, spec.Version)
	for _, ports := range []struct {
		what string
		ps   []plugin.PortSpec
	}{{"input", spec.Inputs}, {"output", spec.Outputs}} {
		for _, p := range ports.ps {
			opt := ""
			if p.Optional {
				opt = ", optional"
			}
			fmt.Fprintf(w, "  %s %-10s %s%s: %s\n", ports.what, p.Name, p.Kind, opt, p.Doc)
		}
	}
	for _, p := range spec.Params {
		extra := ""
		if p.Role != "" {
			extra += ", role " + string(p.Role)
		}
		if p.Range != "" {
			extra += ", range " + p.Range
		}
		if len(p.Enum) > 0 {
			extra += ", one of " + strings.Join(p.Enum, "|")
		}
		fmt.Fprintf(w, "  param  %-16s %s = %s%s: %s\n", p.Name, p.Type, p.Default, extra, p.Doc)
	}
	if spec.NeedsAllRows {
		fmt.Fprintf(w, "  (holds every input row before it writes: cannot stream or shard)\n")
	}
}
