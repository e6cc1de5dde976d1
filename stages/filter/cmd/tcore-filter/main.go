// Command tcore-filter serves the filter stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/filter"
)

func main() { plugin.Serve(filter.New()) }
