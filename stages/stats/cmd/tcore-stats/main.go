// Command tcore-stats serves the stats stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/stats"
)

func main() { plugin.Serve(stats.New()) }
