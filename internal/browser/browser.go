// Package browser opens pages in headless Chromium for tests: the page's
// DOM after its scripts ran, and every console message. Without Chromium a
// test is skipped, except in CI (CI set), where its absence fails it.
package browser

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var consoleLine = regexp.MustCompile(`(?m)^.*:CONSOLE[^\]]*\] .*$`)

// Open loads a local file and returns its DOM and the console messages.
func Open(t testing.TB, path string) (dom string, console []string) {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("headless Chromium is needed (Debian package chromium)")
		}
		t.Skip("Chromium not installed")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--enable-logging=stderr", "--v=0",
		"--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+abs)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v: %s", err, errb.String())
	}
	for _, l := range consoleLine.FindAllString(errb.String(), -1) {
		console = append(console, strings.TrimSpace(l))
	}
	return out.String(), console
}
