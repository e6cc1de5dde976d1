// Package ortlib initialises ONNX Runtime for tests: the library `make`
// fetched (TCORE_ORT_LIB). Without it a test is skipped, except in CI
// (CI set), where its absence fails the test.
package ortlib

import (
	"os"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// Init initialises ONNX Runtime or skips (fails in CI) the test.
func Init(t testing.TB) {
	t.Helper()
	if err := ort.Init(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ONNX Runtime is needed: %v", err)
		}
		t.Skipf("ONNX Runtime not available: %v", err)
	}
}
