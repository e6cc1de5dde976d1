// Package ort owns ONNX Runtime for every tcore stage and the host: where
// the shared library is (one setting: a flag, else the TCORE_ORT_LIB
// environment variable, else the copy the setup fetched), and the runtime
// environment, initialised once per process. A host calls Init with its
// --ort-lib and hands the same path to the plugin processes it starts (in
// their environment, see Env); a stage never initialises anything itself:
// its first session does, from that setting.
package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	onnx "github.com/yalue/onnxruntime_go"
)

// EnvVar names the environment variable that points at the ONNX Runtime
// shared library.
const EnvVar = "TCORE_ORT_LIB"

// FetchedPath is where the setup (make ort) puts the library, relative to
// the repository root.
const FetchedPath = "third_party/onnxruntime/libonnxruntime.so.1"

// ErrNoLibrary is wrapped when no ONNX Runtime library can be found.
var ErrNoLibrary = errors.New("ONNX Runtime shared library not found")

// LibraryPath resolves the library: flag when set, else $TCORE_ORT_LIB,
// else FetchedPath under the working directory or under the folder above
// the running executable (bin/..). A path given explicitly must exist.
func LibraryPath(flag string) (string, error) {
	for _, p := range []struct{ v, from string }{{flag, "--ort-lib"}, {os.Getenv(EnvVar), EnvVar}} {
		if p.v == "" {
			continue
		}
		if _, err := os.Stat(p.v); err != nil {
			return "", fmt.Errorf("ort: %s=%s: %w", p.from, p.v, ErrNoLibrary)
		}
		return p.v, nil
	}
	var cands []string
	if wd, err := os.Getwd(); err == nil {
		cands = append(cands, filepath.Join(wd, FetchedPath))
	}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(filepath.Dir(exe)), FetchedPath))
	}
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("ort: %w (looked in %v; run `make ort`, or set --ort-lib or %s)", ErrNoLibrary, cands, EnvVar)
}

var (
	initMu   sync.Mutex
	initPath string
)

// Init initialises the ONNX Runtime environment from the library at path
// (resolved with LibraryPath(path)) once per process; later calls with the
// same library do nothing, with another library fail.
func Init(path string) error {
	lib, err := LibraryPath(path)
	if err != nil {
		return err
	}
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		if initPath != lib {
			return fmt.Errorf("ort: already initialised with %s, cannot switch to %s", initPath, lib)
		}
		return nil
	}
	onnx.SetSharedLibraryPath(lib)
	if err := onnx.InitializeEnvironment(onnx.WithLogLevelError()); err != nil {
		return fmt.Errorf("ort: loading %s: %w", lib, err)
	}
	initPath = lib
	return nil
}

// ensureInit initialises the environment from the process's setting
// (TCORE_ORT_LIB, else the fetched copy) unless Init already did.
func ensureInit() error {
	initMu.Lock()
	done := initPath != ""
	initMu.Unlock()
	if done {
		return nil
	}
	return Init("")
}

// Env returns the environment entry that hands the library at path
// (resolved by LibraryPath) to a process this one starts.
func Env(path string) (string, error) {
	lib, err := LibraryPath(path)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(lib)
	if err != nil {
		return "", err
	}
	return EnvVar + "=" + abs, nil
}

// Version returns the version of the initialised ONNX Runtime.
func Version() string { return onnx.GetVersion() }
