// Command tcore-clp serves the clp baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/clp"
)

func main() { plugin.Serve(clp.New()) }
