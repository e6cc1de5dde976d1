// Command tcore-ct serves the ct baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/ct"
)

func main() { plugin.Serve(ct.New()) }
