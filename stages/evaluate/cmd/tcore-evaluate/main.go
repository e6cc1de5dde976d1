// Command tcore-evaluate serves the evaluate stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/evaluate"
)

func main() { plugin.Serve(evaluate.New()) }
