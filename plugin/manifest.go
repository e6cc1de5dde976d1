package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
)

// LockName is the lock file's name, next to the manifest.
const LockName = "manifest.lock.json"

// Manifest is the catalogue of stage plugins (manifest.json).
type Manifest struct {
	Protocol int     `json:"protocol"`
	Stages   []Entry `json:"stages"`
}

// Entry is one stage of the manifest.
type Entry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Binary is the plugin binary's path, relative to the manifest.
	Binary string `json:"binary"`
	// Package is the Go package that builds Binary.
	Package      string      `json:"package"`
	Protocol     int         `json:"protocol"`
	Inputs       []PortSpec  `json:"inputs"`
	Outputs      []PortSpec  `json:"outputs"`
	Params       []ParamSpec `json:"params"`
	NeedsAllRows bool        `json:"needs_all_rows,omitempty"`

	// Path is Binary resolved against the manifest's folder.
	Path string `json:"-"`
	// SHA256 is the binary's hex sha256 from the lock file ("" when none).
	SHA256 string `json:"-"`
}

// Lock records the sha256 of each built plugin binary (manifest.lock.json).
type Lock struct {
	Protocol int                  `json:"protocol"`
	Binaries map[string]LockEntry `json:"binaries"`
}

// LockEntry is one stage's binary and its sha256.
type LockEntry struct {
	Binary string `json:"binary"`
	SHA256 string `json:"sha256"`
}

// Catalog is a loaded manifest: the stages a host may launch, and nothing
// else.
type Catalog struct {
	Path    string // the manifest file
	entries map[string]Entry
	order   []string
}

// LoadCatalog reads the manifest at path and, when present, the lock file
// next to it.
func LoadCatalog(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plugin: manifest: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("plugin: manifest %s: %w", path, err)
	}
	if m.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("plugin: manifest %s: protocol %d, want %d", path, m.Protocol, ProtocolVersion)
	}
	dir := filepath.Dir(path)
	var lock Lock
	if lb, err := os.ReadFile(filepath.Join(dir, LockName)); err == nil {
		if err := json.Unmarshal(lb, &lock); err != nil {
			return nil, fmt.Errorf("plugin: %s: %w", filepath.Join(dir, LockName), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("plugin: %w", err)
	}
	c := &Catalog{Path: path, entries: map[string]Entry{}}
	for i, e := range m.Stages {
		if e.Name == "" || e.Binary == "" || e.Version == "" {
			return nil, fmt.Errorf("plugin: manifest %s: stage %d needs name, version and binary", path, i)
		}
		if _, dup := c.entries[e.Name]; dup {
			return nil, fmt.Errorf("plugin: manifest %s: stage %q listed twice", path, e.Name)
		}
		if e.Protocol != ProtocolVersion {
			return nil, fmt.Errorf("plugin: manifest %s: stage %q: protocol %d, want %d", path, e.Name, e.Protocol, ProtocolVersion)
		}
		e.Path = filepath.Join(dir, filepath.FromSlash(e.Binary))
		if le, ok := lock.Binaries[e.Name]; ok && le.Binary == e.Binary {
			e.SHA256 = le.SHA256
		}
		c.entries[e.Name] = e
		c.order = append(c.order, e.Name)
	}
	return c, nil
}

// Entries returns the stages in manifest order.
func (c *Catalog) Entries() []Entry {
	out := make([]Entry, len(c.order))
	for i, n := range c.order {
		out[i] = c.entries[n]
	}
	return out
}

// Entry returns the stage named name.
func (c *Catalog) Entry(name string) (Entry, bool) {
	e, ok := c.entries[name]
	return e, ok
}

// ErrUnknownStage is wrapped when a host asks for a stage the manifest does
// not name.
var ErrUnknownStage = errors.New("stage not in the manifest")

// Launch starts the stage named name; only stages the manifest names are
// started.
func (c *Catalog) Launch(ctx context.Context, name string, opt LaunchOptions) (*Client, error) {
	e, ok := c.entries[name]
	if !ok {
		return nil, fmt.Errorf("plugin: %q: %w %s", name, ErrUnknownStage, c.Path)
	}
	return Launch(ctx, e, opt)
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteLock hashes every binary of the catalogue and writes the lock file
// next to the manifest (atomically).
func (c *Catalog) WriteLock() (Lock, error) {
	lock := Lock{Protocol: ProtocolVersion, Binaries: map[string]LockEntry{}}
	for _, e := range c.Entries() {
		sum, err := FileSHA256(e.Path)
		if err != nil {
			return lock, fmt.Errorf("plugin: stage %q: %w (build the plugins first)", e.Name, err)
		}
		lock.Binaries[e.Name] = LockEntry{Binary: e.Binary, SHA256: sum}
	}
	b, _ := json.MarshalIndent(lock, "", "  ")
	path := filepath.Join(filepath.Dir(c.Path), LockName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return lock, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return lock, err
	}
	for n, le := range lock.Binaries {
		e := c.entries[n]
		e.SHA256 = le.SHA256
		c.entries[n] = e
	}
	return lock, nil
}

// VerifyResult is the outcome of verifying one stage.
type VerifyResult struct {
	Name string
	OK   bool
	Err  error
}

// Verify checks every stage: its binary exists, its sha256 matches the lock
// file, it starts, and it describes itself exactly as the manifest says
// (name, version, ports, parameter defaults).
func (c *Catalog) Verify(ctx context.Context, opt LaunchOptions) []VerifyResult {
	var out []VerifyResult
	for _, e := range c.Entries() {
		err := verifyOne(ctx, e, opt)
		out = append(out, VerifyResult{Name: e.Name, OK: err == nil, Err: err})
	}
	return out
}

func verifyOne(ctx context.Context, e Entry, opt LaunchOptions) error {
	cl, err := Launch(ctx, e, opt)
	if err != nil {
		return err
	}
	defer cl.Kill()
	return e.Matches(cl.Spec())
}

// Matches reports how the spec s differs from the entry, or nil.
func (e Entry) Matches(s Spec) error {
	if s.Name != e.Name || s.Version != e.Version {
		return fmt.Errorf("manifest says %s %s, the stage is %s %s", e.Name, e.Version, s.Name, s.Version)
	}
	norm := func(ps []PortSpec) []PortSpec {
		out := make([]PortSpec, len(ps))
		for i, p := range ps {
			out[i] = PortSpec{Name: p.Name, Kind: p.Kind, Optional: p.Optional}
		}
		return out
	}
	if !reflect.DeepEqual(norm(e.Inputs), norm(s.Inputs)) {
		return fmt.Errorf("stage %q: manifest inputs %v, the stage has %v", e.Name, norm(e.Inputs), norm(s.Inputs))
	}
	if !reflect.DeepEqual(norm(e.Outputs), norm(s.Outputs)) {
		return fmt.Errorf("stage %q: manifest outputs %v, the stage has %v", e.Name, norm(e.Outputs), norm(s.Outputs))
	}
	if e.NeedsAllRows != s.NeedsAllRows {
		return fmt.Errorf("stage %q: manifest needs_all_rows=%v, the stage says %v", e.Name, e.NeedsAllRows, s.NeedsAllRows)
	}
	norm2 := func(ps []ParamSpec) map[string]string {
		out := map[string]string{}
		for _, p := range ps {
			p.Default = json.RawMessage(canonJSON(p.Default))
			b, _ := json.Marshal(p)
			out[p.Name] = string(b)
		}
		return out
	}
	got, want := norm2(s.Params), norm2(e.Params)
	if !reflect.DeepEqual(got, want) {
		var diff []string
		for k, v := range want {
			if got[k] != v {
				diff = append(diff, fmt.Sprintf("manifest %s, the stage %s", v, orNone(got[k])))
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, fmt.Sprintf("the stage has %s, the manifest nothing", v))
			}
		}
		sort.Strings(diff)
		return fmt.Errorf("stage %q: params differ: %s", e.Name, strings.Join(diff, "; "))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

func canonJSON(b json.RawMessage) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// EntryFor builds the manifest entry of a stage from its spec (used to
// write manifest.json and to check it).
func EntryFor(s Spec, binary, pkg string) Entry {
	return Entry{Name: s.Name, Version: s.Version, Binary: binary, Package: pkg, Protocol: ProtocolVersion,
		Inputs: s.Inputs, Outputs: s.Outputs, Params: s.Params, NeedsAllRows: s.NeedsAllRows}
}

// WriteManifest writes m as indented JSON to path.
func WriteManifest(path string, m Manifest) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
