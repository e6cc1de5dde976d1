package dag

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrBusy is wrapped when a run folder is in use by another run.
var ErrBusy = errors.New("run folder in use")

// lockName is the lock file of a run folder.
const lockName = ".lock"

// lockDir takes the run folder's lock (an exclusive flock on dir/.lock,
// which holds the holder's PID) without waiting: a second run into a busy
// folder fails at once, naming the holder. The lock goes with the process,
// however it ends.
func lockDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if _, perr := strconv.Atoi(holder); perr != nil {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%s: %w by PID %s (wait for it, or use another --out)", dir, ErrBusy, holder)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		f.Truncate(0)
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// removeStale removes the temporary node folders (.<id>.tmp-*) that a
// killed run left behind; under the lock no other run can own them.
func removeStale(nodes string) {
	entries, _ := os.ReadDir(nodes)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.RemoveAll(filepath.Join(nodes, e.Name()))
		}
	}
}
