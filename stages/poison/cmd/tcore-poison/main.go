// Command tcore-poison serves the poison stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/poison"
)

func main() { plugin.Serve(poison.New()) }
