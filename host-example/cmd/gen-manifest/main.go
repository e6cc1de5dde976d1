// Command gen-manifest writes manifest.json from the built-in stages' specs
// (go generate ./host-example/builtin).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tcore-dev/tcore/host-example/builtin"
	"github.com/tcore-dev/tcore/plugin"
)

func main() {
	out := flag.String("out", "manifest.json", "where to write the manifest")
	flag.Parse()
	if err := plugin.WriteManifest(*out, builtin.Manifest()); err != nil {
		fmt.Fprintln(os.Stderr, "gen-manifest:", err)
		os.Exit(1)
	}
}
