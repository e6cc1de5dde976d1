// Command tcore is the example host of tcore: it runs pipelines of stage
// plugins over datasets and manages the plugins.
//
//	tcore run --train DATA --out DIR [--pipeline NAME|FILE.json] [--test DATA] ...
//	tcore stage NAME --in PORT=FILE ... --out PORT=FILE ... [--param k=v ...]
//	tcore export argo [--pipeline P] --train KEY --encoder KEY [--shards N] [--device cuda] ...
//	tcore demo
//	tcore plugins list|verify|lock
//	tcore version
//
// Exit status: 0 done, 2 bad input, 1 anything else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

func main() {
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	plugin.CleanupClients()
	os.Exit(code)
}

// usageError is a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `usage: tcore <command> [flags]

commands:
  run       run a pipeline over datasets and write a run folder
  eval      accuracy (and, with --eval, attack success rate) of an ONNX classifier
  demo      BadNets planted in the demo data, none and tcore side by side
  bench     the benchmark matrix of a config: scenarios x pipelines x rates
  stage     one stage as a standalone step: files in, files out
  export    the pipeline as an Argo Workflow (export argo)
  plugins   list | verify | lock the stage plugins of the manifest
  version   print versions

Run 'tcore <command> -h' for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(ctx, args[1:], stdout, stderr)
	case "eval":
		err = cmdEval(ctx, args[1:], stdout, stderr)
	case "stage":
		err = cmdStage(ctx, args[1:], stdout, stderr)
	case "export":
		err = cmdExport(ctx, args[1:], stdout, stderr)
	case "plugins":
		err = cmdPlugins(ctx, args[1:], stdout, stderr)
	case "version":
		err = cmdVersion(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usagef("unknown command %q\n\n%s", args[0], usage)
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "tcore: %v\n", err)
	switch {
	case ctx.Err() != nil:
		return 1
	case isUsage(err) || dag.IsBadInput(err):
		return 2
	}
	return 1
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// common holds the flags every command takes.
type common struct {
	ortLib   string
	device   string
	manifest string
	logLevel string
	timeout  time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.ortLib, "ort-lib", "", "ONNX Runtime shared library (default: $TCORE_ORT_LIB, then the one make fetched)")
	fs.StringVar(&c.device, "device", "cpu", "execution device: cpu or cuda[:N]")
	fs.StringVar(&c.manifest, "manifest", "", "plugin manifest (default: $TCORE_MANIFEST, then manifest.json beside the tcore binary's folder or in the working directory)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.timeout, "stage-timeout", 0, "stop a stage that runs longer than this, e.g. 30m (default: no limit)")
}

func (c *common) logger(stderr io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return zerolog.Nop(), usagef("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: "15:04:05"}).
		Level(lvl).With().Timestamp().Logger(), nil
}

func (c *common) check() error {
	if _, _, err := ort.ParseDevice(c.device); err != nil {
		return usagef("--device %q: want cpu, cuda or cuda:N (%v)", c.device, err)
	}
	if c.timeout < 0 {
		return usagef("--stage-timeout %v: want a positive duration (or 0 for no limit)", c.timeout)
	}
	return nil
}

// describe says what each command does, above its flags in -h.
var describe = map[string]string{
	"run": `Runs a pipeline (default: tcore) over --train with --encoder into the run folder --out:
clean_model.onnx, report.html, report.json, samples.parquet, channels.parquet. With --test it
measures accuracy; with --eval the attack success rate; with --truth the purity of each set.
Finished nodes in --out are reused while their inputs and parameters are unchanged.`,
	"eval":  "Accuracy of an ONNX classifier on a dataset (and, with --eval, the attack success rate), as JSON.",
	"demo":  "Plants BadNets in the demo data and runs the pipelines side by side, writing one report.",
	"bench": "Runs a benchmark config: scenarios x pipelines x rates, resumable, with a table of ACC/ASR.",
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			if d, ok := describe[fs.Name()]; ok {
				fmt.Fprintf(os.Stdout, "usage: tcore %s [flags]\n\n%s\n\nflags:\n", fs.Name(), d)
			}
			fs.PrintDefaults()
			return err
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}
