// Command tcore-embed serves the embed stage as a tcore plugin.
package main

import (
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/embed"
)

func main() { plugin.Serve(embed.New()) }
