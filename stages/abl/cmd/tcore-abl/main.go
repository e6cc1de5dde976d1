// Command tcore-abl serves the abl baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/abl"
)

func main() { plugin.Serve(abl.New()) }
