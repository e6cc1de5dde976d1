// Command tcore-fineprune serves the fineprune baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/fineprune"
)

func main() { plugin.Serve(fineprune.New()) }
