// Command tcore-spectral serves the spectral baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/spectral"
)

func main() { plugin.Serve(spectral.New()) }
