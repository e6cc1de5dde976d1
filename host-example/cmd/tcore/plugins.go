package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

func cmdPlugins(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("plugins: want list, describe NAME, verify or lock")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintln(stdout, "tcore plugins list|describe NAME|verify|lock [flags]: the manifest's plugins, one plugin's ports and parameters, their checksums against manifest.lock.json, or a new lock")
		return nil
	}
	var name string
	if args[0] == "describe" {
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return usagef("plugins describe: name the stage (tcore plugins list shows them)")
		}
		name, args = args[1], append([]string{args[0]}, args[2:]...)
	}
	var c common
	fs := flag.NewFlagSet("plugins "+args[0], flag.ContinueOnError)
	c.register(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	cat, err := loadCatalog(c.manifest)
	if err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list":
		for _, e := range cat.Entries() {
			state := "not built"
			if sum, err := plugin.FileSHA256(e.Path); err == nil {
				switch {
				case e.SHA256 == "":
					state = "built, not locked"
				case sum == e.SHA256:
					state = "ok " + sum[:12]
				default:
					state = "CHANGED since locked"
				}
			}
			var ins, outs []string
			for _, p := range e.Inputs {
				ins = append(ins, p.Name+":"+string(p.Kind))
			}
			for _, p := range e.Outputs {
				outs = append(outs, p.Name+":"+string(p.Kind))
			}
			fmt.Fprintf(stdout, "%-10s %-8s %-22s in[%s] out[%s]\n", e.Name, e.Version, state, strings.Join(ins, " "), strings.Join(outs, " "))
		}
		return nil
	case "describe":
		for _, e := range cat.Entries() {
			if e.Name == name {
				printSpec(stdout, plugin.Spec{Name: e.Name, Version: e.Version, Inputs: e.Inputs, Outputs: e.Outputs, Params: e.Params, NeedsAllRows: e.NeedsAllRows})
				return nil
			}
		}
		var names []string
		for _, e := range cat.Entries() {
			names = append(names, e.Name)
		}
		return usagef("plugins describe: no stage %q in the manifest (stages: %s)", name, strings.Join(names, ", "))
	case "verify":
		failed := 0
		for _, r := range cat.Verify(ctx, plugin.LaunchOptions{Log: log}) {
			if r.OK {
				fmt.Fprintf(stdout, "ok      %s\n", r.Name)
			} else {
				failed++
				fmt.Fprintf(stdout, "FAILED  %s: %v\n", r.Name, r.Err)
			}
		}
		if failed > 0 {
			return fmt.Errorf("plugins verify: %d of %d stages failed", failed, len(cat.Entries()))
		}
		return nil
	case "lock":
		lock, err := cat.WriteLock()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "locked %d plugin binaries\n", len(lock.Binaries))
		return nil
	}
	return usagef("plugins: unknown subcommand %q (want list, describe NAME, verify or lock)", args[0])
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tcore plugin protocol %d\n", plugin.ProtocolVersion)
	if err := ort.Init(c.ortLib); err != nil {
		fmt.Fprintf(stdout, "onnxruntime: %v\n", err)
		return nil
	}
	fmt.Fprintf(stdout, "onnxruntime %s\n", ort.Version())
	return nil
}
