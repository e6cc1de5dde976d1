package argo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// YAML writes the workflow as YAML, fields in the order the types declare
// them. Strings are written as JSON strings (YAML's double-quoted scalars
// are a superset of them), so no value can change its type or meaning.
func (w *Workflow) YAML() ([]byte, error) {
	b, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	v, err := ordered(json.NewDecoder(bytes.NewReader(b)))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString("# Written by tcore export argo.\n")
	emit(&out, v, 0, false)
	return out.Bytes(), nil
}

// object is a JSON object with its keys in order.
type object []member

type member struct {
	key string
	val any
}

// ordered decodes one JSON value keeping object key order.
func ordered(d *json.Decoder) (any, error) {
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			var o object
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				v, err := ordered(d)
				if err != nil {
					return nil, err
				}
				o = append(o, member{k.(string), v})
			}
			_, err := d.Token()
			return o, err
		case '[':
			var a []any
			for d.More() {
				v, err := ordered(d)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if a == nil {
				a = []any{}
			}
			_, err := d.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// emit writes v at indent; inList says the caller already wrote "- ".
func emit(w io.Writer, v any, indent int, inList bool) {
	pad := strings.Repeat("  ", indent)
	switch t := v.(type) {
	case object:
		if len(t) == 0 {
			fmt.Fprint(w, "{}\n")
			return
		}
		for i, m := range t {
			p := pad
			if inList && i == 0 {
				p = ""
			}
			fmt.Fprintf(w, "%s%s:", p, m.key)
			writeValue(w, m.val, indent+1)
		}
	case []any:
		for _, x := range t {
			fmt.Fprintf(w, "%s- ", pad)
			if isScalar(x) || isEmpty(x) {
				fmt.Fprintf(w, "%s\n", scalar(x))
				continue
			}
			if _, ok := x.([]any); ok {
				fmt.Fprint(w, "\n")
				emit(w, x, indent+1, false)
				continue
			}
			emit(w, x, indent+1, true)
		}
	}
}

// writeValue writes a mapping value after "key:".
func writeValue(w io.Writer, v any, indent int) {
	switch {
	case isScalar(v) || isEmpty(v):
		fmt.Fprintf(w, " %s\n", scalar(v))
	default:
		fmt.Fprint(w, "\n")
		if _, ok := v.([]any); ok {
			emit(w, v, indent-1, false) // lists sit at their key's indent
			return
		}
		emit(w, v, indent, false)
	}
}

func isScalar(v any) bool {
	switch v.(type) {
	case object, []any:
		return false
	}
	return true
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case object:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

func scalar(v any) string {
	switch t := v.(type) {
	case object:
		return "{}"
	case []any:
		return "[]"
	case string:
		b, _ := json.Marshal(t)
		return string(b)
	case nil:
		return "null"
	default:
		return fmt.Sprint(t)
	}
}
