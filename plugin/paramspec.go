package plugin

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Role says what a parameter stands for, so that a host binds command-line
// settings to it and hashes the files it names without knowing its name.
type Role string

// The roles. A parameter without one is plain: only the pipeline sets it.
const (
	// RoleEncoder is the encoder (an ONNX file) the stage runs: a host binds
	// its --encoder to it and hashes the file's content into the cache key.
	RoleEncoder Role = "encoder"
	// RoleFile is another input file (a model, say): hashed by content.
	RoleFile Role = "file"
	// RoleDevice is the execution device (cpu, cuda, cuda:N): bound to the
	// host's --device.
	RoleDevice Role = "device"
	// RoleSeed is the random seed: bound to the host's --seed.
	RoleSeed Role = "seed"
	// RoleExport is a file the stage writes for the user (the classifier):
	// a host points it into its run folder.
	RoleExport Role = "export"
	// RoleOutput is a file the stage writes for another stage to read (a
	// filtered or pruned encoder): a host binds nothing to it; pipelines set
	// it under "$run/", and an orchestrator export turns it into an
	// artifact.
	RoleOutput Role = "output"
	// RoleClasses is the number of classes: bound to the host's
	// --classes (0 there binds nothing).
	RoleClasses Role = "classes"
	// RoleShard is [i, n]: the stage handles the i-th share of n of its
	// rows, for a fan-out whose outputs a host merges in order (tcore stage
	// --shard i/n, tcore stage concat). Only stages that can run sharded
	// declare it.
	RoleShard Role = "shard"
)

var roles = map[Role]bool{"": true, RoleEncoder: true, RoleFile: true, RoleDevice: true, RoleSeed: true, RoleExport: true, RoleClasses: true, RoleShard: true, RoleOutput: true}

// IsFile reports whether the parameter names an input file (hashed by
// content into a cache key).
func (r Role) IsFile() bool { return r == RoleEncoder || r == RoleFile }

// ParamsOf declares a stage's parameters once: from a struct value holding
// the defaults, whose fields carry the tags
//
//	json:"name"        the parameter's name (fields without one are skipped)
//	doc:"..."          what it does (required)
//	role:"encoder"     its Role (optional)
//	range:"[0,1)"      allowed numbers, interval notation, either end open ("[1,)")
//	enum:"gain|min"    allowed strings
//
// Range and enum apply to each element of a list. Fields of embedded
// structs are flattened, as encoding/json does. The type (int, number,
// string, bool, list<...>, json) follows the Go field. ParamsOf panics on a
// malformed declaration: that is a programming error, found by any test
// that builds the spec.
func ParamsOf(defaults any) []ParamSpec {
	v := reflect.ValueOf(defaults)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		panic(fmt.Sprintf("plugin: ParamsOf(%T): want a struct", defaults))
	}
	var out []ParamSpec
	collectParams(v, &out)
	seen := map[string]bool{}
	for _, p := range out {
		if seen[p.Name] {
			panic(fmt.Sprintf("plugin: ParamsOf(%T): parameter %q declared twice", defaults, p.Name))
		}
		seen[p.Name] = true
	}
	return out
}

func collectParams(v reflect.Value, out *[]ParamSpec) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			collectParams(v.Field(i), out)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		where := fmt.Sprintf("plugin: parameter %q (%s.%s)", name, t.Name(), f.Name)
		def, err := json.Marshal(v.Field(i).Interface())
		if err != nil {
			panic(fmt.Sprintf("%s: default: %v", where, err))
		}
		p := ParamSpec{Name: name, Default: def, Doc: f.Tag.Get("doc"), Role: Role(f.Tag.Get("role")),
			Type: typeOf(f.Type), Range: f.Tag.Get("range")}
		if p.Range == "" && isUnsigned(f.Type) {
			p.Range = "[0,)"
		}
		if e := f.Tag.Get("enum"); e != "" {
			p.Enum = strings.Split(e, "|")
		}
		if p.Doc == "" {
			panic(where + ": no doc tag")
		}
		if !roles[p.Role] {
			panic(fmt.Sprintf("%s: unknown role %q", where, p.Role))
		}
		if p.Type == "" {
			panic(fmt.Sprintf("%s: unsupported type %s", where, f.Type))
		}
		if p.Range != "" {
			if _, err := parseRange(p.Range); err != nil {
				panic(fmt.Sprintf("%s: %v", where, err))
			}
		}
		if err := p.Check(def); err != nil {
			panic(fmt.Sprintf("%s: the default breaks the declaration: %v", where, err))
		}
		*out = append(*out, p)
	}
}

var rawMessage = reflect.TypeOf(json.RawMessage{})

func isUnsigned(t reflect.Type) bool {
	if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func typeOf(t reflect.Type) string {
	if t == rawMessage {
		return "json"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Slice, reflect.Array:
		if e := typeOf(t.Elem()); e != "" && !strings.HasPrefix(e, "list") && e != "json" {
			if t.Kind() == reflect.Array {
				return fmt.Sprintf("list<%s>[%d]", e, t.Len())
			}
			return "list<" + e + ">"
		}
	case reflect.Map, reflect.Struct:
		return "json"
	}
	return ""
}

// interval is a parsed range tag.
type interval struct {
	lo, hi         float64
	loOpen, hiOpen bool
}

func parseRange(s string) (interval, error) {
	bad := fmt.Errorf("range %q: want interval notation such as [0,1] or (0,)", s)
	if len(s) < 3 {
		return interval{}, bad
	}
	iv := interval{lo: math.Inf(-1), hi: math.Inf(1)}
	switch s[0] {
	case '[':
	case '(':
		iv.loOpen = true
	default:
		return interval{}, bad
	}
	switch s[len(s)-1] {
	case ']':
	case ')':
		iv.hiOpen = true
	default:
		return interval{}, bad
	}
	lo, hi, ok := strings.Cut(s[1:len(s)-1], ",")
	if !ok {
		return interval{}, bad
	}
	var err error
	if lo = strings.TrimSpace(lo); lo != "" {
		if iv.lo, err = strconv.ParseFloat(lo, 64); err != nil {
			return interval{}, bad
		}
	}
	if hi = strings.TrimSpace(hi); hi != "" {
		if iv.hi, err = strconv.ParseFloat(hi, 64); err != nil {
			return interval{}, bad
		}
	}
	return iv, nil
}

func (iv interval) contains(x float64) bool {
	if x < iv.lo || (iv.loOpen && x == iv.lo) {
		return false
	}
	return !(x > iv.hi || (iv.hiOpen && x == iv.hi))
}

// want says in words what the interval allows.
func (iv interval) want() string {
	var parts []string
	if !math.IsInf(iv.lo, -1) {
		op := ">="
		if iv.loOpen {
			op = ">"
		}
		parts = append(parts, op+" "+strconv.FormatFloat(iv.lo, 'g', -1, 64))
	}
	if !math.IsInf(iv.hi, 1) {
		op := "<="
		if iv.hiOpen {
			op = "<"
		}
		parts = append(parts, op+" "+strconv.FormatFloat(iv.hi, 'g', -1, 64))
	}
	return strings.Join(parts, " and ")
}

// Check validates one JSON value against the declaration: its type, range
// and allowed strings. A declaration without a type (a spec from an older
// manifest) accepts any value. The error names neither the stage nor the
// parameter; ValidateParams adds them.
func (p ParamSpec) Check(value json.RawMessage) error {
	if p.Type == "" || p.Type == "json" {
		return nil
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(value)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	elem, n := p.Type, -1
	list := strings.HasPrefix(p.Type, "list<")
	var items []any
	if list {
		inner := strings.TrimPrefix(p.Type, "list<")
		i := strings.IndexByte(inner, '>')
		elem = inner[:i]
		if rest := inner[i+1:]; rest != "" {
			fmt.Sscanf(rest, "[%d]", &n)
		}
		arr, ok := v.([]any)
		if !ok && v != nil {
			return fmt.Errorf("got %s, want a list of %s", jsonKind(v), elem)
		}
		if n >= 0 && len(arr) != n {
			return fmt.Errorf("got %d values, want %d", len(arr), n)
		}
		items = arr
	} else {
		items = []any{v}
	}
	var iv interval
	if p.Range != "" {
		iv, _ = parseRange(p.Range)
	}
	for _, it := range items {
		switch elem {
		case "int", "number":
			num, ok := it.(json.Number)
			if !ok {
				return fmt.Errorf("got %s, want a%s %s", jsonKind(it), map[bool]string{true: "n", false: ""}[elem == "int"], map[string]string{"int": "integer", "number": "number"}[elem])
			}
			x, err := num.Float64()
			if err != nil {
				return fmt.Errorf("%s: %v", num, err)
			}
			if elem == "int" && (strings.ContainsAny(string(num), ".eE") || x != math.Trunc(x)) {
				return fmt.Errorf("got %s, want an integer", num)
			}
			if p.Range != "" && !iv.contains(x) {
				return fmt.Errorf("%s, want %s", num, iv.want())
			}
		case "string":
			s, ok := it.(string)
			if !ok {
				return fmt.Errorf("got %s, want a string", jsonKind(it))
			}
			if len(p.Enum) > 0 && !contains(p.Enum, s) {
				return fmt.Errorf("%q, want one of %s", s, strings.Join(p.Enum, ", "))
			}
		case "bool":
			if _, ok := it.(bool); !ok {
				return fmt.Errorf("got %s, want true or false", jsonKind(it))
			}
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	}
	return "an object"
}

// Param returns the parameter named name.
func (s Spec) Param(name string) (ParamSpec, bool) {
	for _, p := range s.Params {
		if p.Name == name {
			return p, true
		}
	}
	return ParamSpec{}, false
}

// ParamsWithRole returns the names of the parameters of a role.
func (s Spec) ParamsWithRole(r Role) []string {
	var out []string
	for _, p := range s.Params {
		if p.Role == r {
			out = append(out, p.Name)
		}
	}
	return out
}
