// Command tcore-expand serves the expand stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/expand"
)

func main() { plugin.Serve(expand.New()) }
