package plugin_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tcore-dev/tcore/plugin"
)

// FuzzLoadCatalog: any manifest (and lock file next to it) loads or is
// refused with an error naming it; never a panic.
func FuzzLoadCatalog(f *testing.F) {
	root, err := os.ReadFile("../manifest.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(root, []byte(`{"plugins": {"embed": {"sha256": "00"}}}`))
	f.Add([]byte(`{"plugins": [{"name": "a", "path": "bin/a"}]}`), []byte(``))
	f.Add([]byte(`{}`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, manifest, lock []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "manifest.json")
		if err := os.WriteFile(path, manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		if len(lock) > 0 {
			if err := os.WriteFile(filepath.Join(dir, "manifest.lock.json"), lock, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c, err := plugin.LoadCatalog(path)
		if err != nil {
			return
		}
		for _, e := range c.Entries() {
			if _, ok := c.Entry(e.Name); !ok {
				t.Fatalf("entry %q listed but not found", e.Name)
			}
		}
	})
}
