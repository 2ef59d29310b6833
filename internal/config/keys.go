package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var (
	durationType = reflect.TypeOf(Duration(0))
	optionalType = reflect.TypeOf(OptionalString{})
)

func reflectType(v any) reflect.Type { return reflect.TypeOf(v) }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// checkKeys walks the YAML tree against the Go type and reports, with the
// key's path and line, every unknown key and every value of the wrong kind,
// so that decoding afterwards cannot fail with a message that names no key.
func checkKeys(n *yaml.Node, t reflect.Type, path string) []error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return checkKeys(n.Content[0], t, path)
	}
	if n.Kind == yaml.AliasNode {
		return checkKeys(n.Alias, t, path)
	}
	key := path
	if key == "" {
		key = "(top level)"
	}
	bad := func(problem string) []error {
		return []error{&Error{Key: key, Problem: fmt.Sprintf("%s (line %d)", problem, n.Line)}}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && t != optionalType {
		return nil // absent: the default applies
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("must be a duration such as 30s or 720h")
		}
		if n.Value != "0" {
			if _, err := time.ParseDuration(n.Value); err != nil {
				return bad(fmt.Sprintf("%q is not a duration (use units: 30s, 15m, 720h)", n.Value))
			}
		}
		return nil
	case t == optionalType:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!null") {
			return bad("must be a string or null")
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkKeys(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("must be a mapping of keys")
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		var errs []error
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			switch {
			case !ok:
				errs = append(errs, &Error{Key: join(path, k.Value), Problem: fmt.Sprintf("unknown key (line %d)", k.Line)})
			case seen[k.Value]:
				errs = append(errs, &Error{Key: join(path, k.Value), Problem: fmt.Sprintf("given twice (line %d)", k.Line)})
			default:
				errs = append(errs, checkKeys(v, ft, join(path, k.Value))...)
			}
			seen[k.Value] = true
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("must be a list")
		}
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("must be a string")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return bad("must be true or false")
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return bad("must be a whole number")
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return bad("must be a number")
		}
	}
	return nil
}

// typeErrors turns a decoding error into a config error (checkKeys catches
// what it can with key names first).
func typeErrors(err error) error {
	return &Error{Key: "(file)", Problem: err.Error()}
}
