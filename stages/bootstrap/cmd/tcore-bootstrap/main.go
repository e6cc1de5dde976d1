// Command tcore-bootstrap serves the bootstrap stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/bootstrap"
)

func main() { plugin.Serve(bootstrap.New()) }
