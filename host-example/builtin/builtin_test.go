package builtin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docsDefaults reads the "Current defaults" table of docs/DECISIONS.md:
// stage -> parameter -> the default as written (JSON).
func docsDefaults(t *testing.T) map[string]map[string]string {
	t.Helper()
	path := filepath.Join("..", "..", "docs", "DECISIONS.md")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Current defaults":
			in = true
			continue
		case in && strings.HasPrefix(line, "## "):
			return out
		case !in || !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| stage") || strings.HasPrefix(line, "| ---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 4 {
			t.Fatalf("%s: table row %q: want 4 cells", path, line)
		}
		if out[cells[0]] == nil {
			out[cells[0]] = map[string]string{}
		}
		out[cells[0]][cells[1]] = cells[2]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Fatalf("%s: no \"## Current defaults\" section", path)
	}
	return out
}

// The table of current defaults in docs/DECISIONS.md must say what the
// stages declare: a default changed in code without the docs (or the
// other way round) fails here.
func TestDecisionsTableMatchesSpecs(t *testing.T) {
	docs := docsDefaults(t)
	if len(docs) == 0 {
		t.Fatal("the current defaults table is empty")
	}
	stages := Stages()
	for stage, params := range docs {
		st, ok := stages[stage]
		if !ok {
			t.Errorf("DECISIONS.md lists stage %q, which does not exist", stage)
			continue
		}
		specs := map[string]json.RawMessage{}
		for _, p := range st.Spec().Params {
			specs[p.Name] = p.Default
		}
		for name, want := range params {
			got, ok := specs[name]
			if !ok {
				t.Errorf("DECISIONS.md lists %s.%s, which the stage does not declare", stage, name)
				continue
			}
			var a, b bytes.Buffer
			if err := json.Compact(&a, got); err != nil {
				t.Fatal(err)
			}
			if err := json.Compact(&b, []byte(want)); err != nil {
				t.Errorf("DECISIONS.md %s.%s: default %q is not JSON: %v", stage, name, want, err)
				continue
			}
			if a.String() != b.String() {
				t.Errorf("DECISIONS.md says %s.%s defaults to %s; the stage declares %s", stage, name, b.String(), a.String())
			}
		}
	}
	// Every tuned number of the T-Core stages is in the table.
	for _, stage := range []string{"sift", "expand", "filter", "bootstrap"} {
		for _, p := range stages[stage].Spec().Params {
			if p.Role != "" || strings.HasSuffix(p.Name, "_column") || p.Name == "classes" || p.Name == "embedding" || p.Name == "export" || p.Name == "engine" {
				continue
			}
			if _, ok := docs[stage][p.Name]; !ok {
				t.Errorf("%s.%s (default %s) is missing from DECISIONS.md's current defaults", stage, p.Name, p.Default)
			}
		}
	}
}
