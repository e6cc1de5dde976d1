// Command tcore-actclust serves the actclust baseline stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/actclust"
)

func main() { plugin.Serve(actclust.New()) }
