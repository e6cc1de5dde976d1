package ort_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcore-dev/tcore/stages/kit/ort"
)

func TestLibraryPathSetting(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libonnxruntime.so.1")
	os.WriteFile(lib, []byte("x"), 0o644)
	cases := []struct {
		name, flag, env string
		want            string
		err             string
	}{
		{"flag wins", lib, "/nonexistent/env.so", lib, ""},
		{"env var", "", lib, lib, ""},
		{"missing flag file", filepath.Join(dir, "nope.so"), "", "", "--ort-lib="},
		{"missing env file", "", filepath.Join(dir, "nope.so"), "", ort.EnvVar + "="},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(ort.EnvVar, tc.env)
			got, err := ort.LibraryPath(tc.flag)
			if tc.err != "" {
				if !errors.Is(err, ort.ErrNoLibrary) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want ErrNoLibrary naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// The real library: `make` fetches it and exports TCORE_ORT_LIB for the
// tests. Outside make (a bare `go test`) the test is skipped, never in CI.
func TestInitLoadsTheRealLibrary(t *testing.T) {
	path, err := ort.LibraryPath("")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI without the ONNX Runtime library: %v", err)
		}
		t.Skip(err)
	}
	if err := ort.Init(path); err != nil {
		t.Fatal(err)
	}
	if v := ort.Version(); !strings.HasPrefix(v, "1.2") {
		t.Fatalf("version %q, want 1.2x", v)
	}
	if err := ort.Init(path); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	other := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	os.WriteFile(other, []byte("x"), 0o644)
	if err := ort.Init(other); err == nil {
		t.Fatal("switching libraries was accepted")
	}
}
