// Command tcore-echo is the test plugin of package plugin's tests.
package main

import (
	"os"
	"strconv"

	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
)

func main() {
	if m := os.Getenv(testplugin.MarkerEnv); m != "" {
		_ = os.WriteFile(m, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	}
	plugin.Serve(testplugin.Echo{})
}
