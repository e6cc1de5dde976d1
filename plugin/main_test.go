package plugin_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/tcore-dev/tcore/internal/testplugin"
	"github.com/tcore-dev/tcore/plugin"
)

// catalogPath is a manifest, written by TestMain, that names the echo test
// plugin built into a temporary folder.
var catalogPath string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tcore-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer plugin.CleanupClients()
	catalogPath, err = testplugin.Setup(dir, testplugin.EchoBinary)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// launchEcho starts the echo plugin; it is killed when the test ends.
func launchEcho(t testing.TB) *plugin.Client {
	t.Helper()
	return launchEchoWith(t, plugin.LaunchOptions{})
}

func launchEchoWith(t testing.TB, opt plugin.LaunchOptions) *plugin.Client {
	t.Helper()
	c, err := plugin.LoadCatalog(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Launch(context.Background(), "echo", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Kill)
	return cl
}
