package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// CheckParams checks that raw is a JSON object (or empty) whose keys are all
// parameters of spec, each value of the declared type, range and allowed
// strings. The error names the parameter (and, for an unknown one, lists
// the known ones); it matches ErrBadInput. A host calls it before any stage
// runs; DecodeParams calls it again inside the stage.
func CheckParams(spec Spec, raw json.RawMessage) error {
	m, err := paramMap(raw)
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(spec.Params))
	for _, p := range spec.Params {
		known[p.Name] = true
	}
	var unknown []string
	for k := range m {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		names := make([]string, 0, len(spec.Params))
		for _, p := range spec.Params {
			names = append(names, p.Name)
		}
		return BadInputf("unknown parameter %q (known: %s)", unknown[0], strings.Join(names, ", "))
	}
	for _, p := range spec.Params {
		if v, ok := m[p.Name]; ok {
			if err := p.Check(v); err != nil {
				return BadInputf("parameter %q: %v", p.Name, err)
			}
		}
	}
	return nil
}

func paramMap(raw json.RawMessage) (map[string]json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, BadInputf("parameters are not a JSON object: %v", err)
	}
	return m, nil
}

// Checker is an optional ability of a parameter struct: DecodeParams calls
// Check after decoding, and an error it returns is bad input.
type Checker interface {
	Check() error
}

// DecodeParams fills dst (a pointer to a struct with json tags) from spec's
// defaults, then from raw, then calls dst.Check when dst is a Checker.
// Unknown parameters, values of the wrong type and Check's errors match
// ErrBadInput and name the parameter.
func DecodeParams(spec Spec, raw json.RawMessage, dst any) error {
	if err := CheckParams(spec, raw); err != nil {
		return err
	}
	given, _ := paramMap(raw)
	for _, p := range spec.Params {
		for _, src := range []json.RawMessage{p.Default, given[p.Name]} {
			if len(src) == 0 {
				continue
			}
			one, _ := json.Marshal(map[string]json.RawMessage{p.Name: src})
			dec := json.NewDecoder(bytes.NewReader(one))
			dec.DisallowUnknownFields()
			if err := dec.Decode(dst); err != nil {
				return BadInputf("parameter %q: %v", p.Name, cleanJSONErr(err))
			}
		}
	}
	if c, ok := dst.(Checker); ok {
		if err := c.Check(); err != nil {
			if errors.Is(err, ErrBadInput) {
				return err
			}
			return BadInput(err)
		}
	}
	return nil
}

func cleanJSONErr(err error) string {
	var te *json.UnmarshalTypeError
	if ok := asType(err, &te); ok {
		return fmt.Sprintf("got a JSON %s, want %s", te.Value, te.Type)
	}
	return err.Error()
}

func asType(err error, te **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = t
	}
	return ok
}

// Defaults returns spec's parameter defaults as one JSON object.
func Defaults(spec Spec) json.RawMessage {
	m := make(map[string]json.RawMessage, len(spec.Params))
	for _, p := range spec.Params {
		m[p.Name] = p.Default
	}
	b, _ := json.Marshal(m)
	return b
}
