// Package badinput keeps the table of bad inputs in docs/bad-inputs true:
// a test that feeds bad inputs records each case's input and the message
// tcore gave, and at its end compares the table with the committed file
// (go test -update-bad-inputs rewrites it). The docs then show what a user
// sees for each mistake, and cannot drift from what the code does.
package badinput

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update-bad-inputs", false, "rewrite the docs/bad-inputs tables from the tests")

// Table is one test's bad inputs and their messages.
type Table struct {
	title, intro string
	mu           sync.Mutex
	rows         map[string][2]string // case -> input, message
}

// New returns an empty table with a title and an introduction (markdown).
func New(title, intro string) *Table {
	return &Table{title: title, intro: intro, rows: map[string][2]string{}}
}

// Add records a case: its name, the input (a command line, a file's
// content) and the message tcore gave. Temporary paths in both are
// replaced by their base names, so that the table is the same on every
// machine.
func (t *Table) Add(name, input, message string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows[name] = [2]string{clean(input), clean(message)}
}

var tmpPath = regexp.MustCompile(regexp.QuoteMeta(strings.TrimSuffix(os.TempDir(), "/")) + `/[^\s"':,]*/([^\s/"':,]+)`)

func clean(s string) string {
	s = tmpPath.ReplaceAllString(s, "$1")
	return strings.TrimSpace(s)
}

// Markdown renders the table, cases sorted by name.
func (t *Table) Markdown() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.rows))
	for n := range t.rows {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n%s\n\n| case | input | message |\n| --- | --- | --- |\n", t.title, t.intro)
	for _, n := range names {
		r := t.rows[n]
		fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(n), code(r[0]), code(r[1]))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

func code(s string) string {
	if s == "" {
		return ""
	}
	s = strings.ReplaceAll(s, "`", "'")
	return "`" + cell(s) + "`"
}

// Len is the number of cases recorded.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rows)
}

// Check compares the table with the file at path (relative to the test's
// package), or writes it with -update-bad-inputs. It checks nothing when
// fewer than want cases were recorded (a -run filter picked some).
func (t *Table) Check(tb testing.TB, path string, want int) {
	tb.Helper()
	if t.Len() < want || tb.Failed() {
		return
	}
	md := t.Markdown()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(path)
	if err != nil || string(old) != md {
		tb.Errorf("%s is not what the tests give (%v); rerun with -update-bad-inputs and commit it:\n%s", path, err, md)
	}
}
