// Command tcore-sift serves the sift stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/sift"
)

func main() { plugin.Serve(sift.New()) }
