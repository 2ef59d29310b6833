package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

var (
	configType   = reflect.TypeOf(Config{})
	durationType = reflect.TypeOf(Duration(0))
	optionalType = reflect.TypeOf(OptionalString{})
)

// unknownKey starts the problem reported for a key the config does not have.
const unknownKey = "unknown key"

// maxVisits bounds the walk, which follows aliases: a config is small, and
// a document built to expand exponentially ("billion laughs") must not hang
// the loader.
const maxVisits = 100_000

// walker checks the YAML tree against the Go types before decoding, so that
// every unknown key and every value of the wrong type is reported with its
// key path and line (yaml.v3's own messages name a Go type and a line, not
// a key). It also records which keys were given, so that defaults fill only
// what is absent and an explicit 0 is validated as written.
type walker struct {
	errs    []error
	present map[string]bool     // key paths given a non-null value
	lines   map[int]string      // line -> the key path on that line, for yaml's own errors
	keyLine map[string]int      // key path -> the line it is given on (its first)
	raw     map[string]string   // key path -> a duration as written ("-1h", not "-1h0m0s")
	active  map[*yaml.Node]bool // anchors being expanded, to stop alias cycles
	visits  int
}

func newWalker() *walker {
	return &walker{present: map[string]bool{}, lines: map[int]string{}, keyLine: map[string]int{}, raw: map[string]string{}, active: map[*yaml.Node]bool{}}
}

func (w *walker) add(key, problem string) {
	if key == "" {
		key = "(top level)"
	}
	w.errs = append(w.errs, &Error{Key: key, Problem: problem})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// note records that the key at path sits on line. When several keys share
// a line (flow style), the line maps to their closest common ancestor.
func (w *walker) note(line int, path string) {
	old, ok := w.lines[line]
	if !ok {
		w.lines[line] = path
		return
	}
	a, b := strings.Split(old, "."), strings.Split(path, ".")
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	w.lines[line] = strings.Join(a[:i], ".")
}

// check walks n, the value of the key at path, whose Go type is t. It
// reports false when n itself cannot be decoded into t: the caller then
// replaces it by null (see neutralize), so that the tree decodes into a
// complete struct whose other values can still be validated.
func (w *walker) check(n *yaml.Node, t reflect.Type, path string) bool {
	w.visits++
	if w.visits > maxVisits {
		if w.visits == maxVisits+1 {
			w.add(path, fmt.Sprintf("too many nodes or aliases (line %d)", n.Line))
		}
		return false
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.check(c, t, path)
		}
		return true
	case yaml.AliasNode:
		if n.Alias == nil || w.active[n.Alias] {
			w.add(path, fmt.Sprintf("alias *%s refers to itself (line %d)", n.Value, n.Line))
			return false
		}
		w.active[n.Alias] = true
		ok := w.check(n.Alias, t, path)
		delete(w.active, n.Alias)
		return ok
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && t != optionalType {
		return true // as if absent: the default applies
	}
	w.present[path] = true
	bad := func(problem string) bool {
		w.add(path, fmt.Sprintf("%s (line %d)", problem, n.Line))
		return false
	}
	switch t {
	case durationType:
		if _, problem := parseDuration(n); problem != "" {
			return bad(problem)
		}
		if _, ok := w.raw[path]; !ok {
			w.raw[path] = strings.TrimSpace(n.Value)
		}
		return true
	case optionalType:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!null") {
			return bad("must be a string or null, got " + describe(n))
		}
		return true
	}
	switch t.Kind() {
	case reflect.Pointer:
		return w.check(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("must be a mapping of keys, got " + describe(n))
		}
		w.mapping(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("must be a list, got " + describe(n))
		}
		for i, c := range n.Content {
			if _, ok := w.keyLine[fmt.Sprintf("%s[%d]", path, i)]; !ok {
				w.keyLine[fmt.Sprintf("%s[%d]", path, i)] = c.Line
			}
			if !w.check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
				n.Content[i] = neutralize(c, t.Elem())
			}
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("must be a string, got " + describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			return bad("must be true or false, got " + describe(n))
		}
	case reflect.Int:
		var i int
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			return bad("must be a whole number, got " + describe(n))
		}
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
			return bad("must be a number, got " + describe(n))
		}
	default:
		return bad("has a type the loader cannot check") // unreachable for Config
	}
	return true
}

// neutralize returns what takes the place of n, a value reported as
// undecodable into t: null, except in lists, where yaml.v3 would drop a
// null element and shift the indices of the next ones, so an empty value
// of the element's kind keeps the positions the messages name.
func neutralize(n *yaml.Node, t reflect.Type) *yaml.Node {
	r := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null", Line: n.Line, Column: n.Column}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && t != durationType && t != optionalType:
		r.Kind, r.Tag, r.Value = yaml.MappingNode, "!!map", ""
	case t.Kind() == reflect.String:
		r.Tag, r.Value, r.Style = "!!str", "", yaml.DoubleQuotedStyle
	}
	return r
}

// mapping checks the keys of a mapping decoded into the struct type t,
// following merge keys (<<: *anchor). Unknown and repeated keys are
// reported and removed, values of the wrong type reported and nulled.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	seen := map[string]int{}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			if w.merge(v, t, path) {
				kept = append(kept, k, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.add(path, fmt.Sprintf("keys must be plain names, got %s (line %d)", describe(k), k.Line))
			continue
		}
		p := join(path, k.Value)
		ft, ok := fields[k.Value]
		switch {
		case !ok:
			problem := fmt.Sprintf("%s (line %d)", unknownKey, k.Line)
			if s := suggest(k.Value, fields); s != "" {
				problem += fmt.Sprintf("; did you mean %q?", s)
			}
			w.add(p, problem)
		case seen[k.Value] != 0:
			w.add(p, fmt.Sprintf("given twice (line %d and line %d)", seen[k.Value], k.Line))
		default:
			seen[k.Value] = k.Line
			w.note(k.Line, p)
			if _, ok := w.keyLine[p]; !ok {
				w.keyLine[p] = k.Line
			}
			if !w.check(v, ft, p) {
				v = neutralize(v, ft)
			}
			kept = append(kept, k, v)
		}
	}
	n.Content = kept
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// merge checks the value of a merge key: a mapping, or a list of them. It
// reports false if the merge cannot be decoded at all.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) bool {
	r := resolveAlias(v)
	switch r.Kind {
	case yaml.MappingNode:
		return w.check(v, t, path)
	case yaml.SequenceNode:
		for _, c := range r.Content {
			if resolveAlias(c).Kind != yaml.MappingNode {
				w.add(path, fmt.Sprintf("<< must merge mappings, got %s (line %d)", describe(c), c.Line))
				return false
			}
		}
		ok := true
		for _, c := range r.Content {
			ok = w.check(c, t, path) && ok
		}
		return ok
	default:
		w.add(path, fmt.Sprintf("<< must merge a mapping, got %s (line %d)", describe(v), v.Line))
		return false
	}
}

// yamlFields maps the yaml names of t's fields to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	return fields
}

// describe names what a node holds, for "must be X, got Y" messages. It
// never quotes a mapping or a list, and quotes only short scalars: a long
// string in the wrong place may be a secret pasted there by mistake.
func describe(n *yaml.Node) string {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		tag := n.ShortTag()
		if tag == "!!null" {
			return "null"
		}
		if len(n.Value) > 20 {
			return fmt.Sprintf("a value of %d characters", utf8.RuneCountInString(n.Value))
		}
		switch tag {
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		default:
			return strconv.Quote(n.Value)
		}
	}
	return "an unsupported node"
}

// suggest returns the known field closest to an unknown key, if close.
func suggest(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, name := range names {
		if d := editDistance(strings.ToLower(key), name); d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// translate turns an error of yaml's decoder into config errors, naming the
// key on the line yaml reports where it is known.
func (w *walker) translate(err error, source string) []error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []error{&Error{Key: source, Problem: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var errs []error
	for _, msg := range te.Errors {
		m := yamlLineRE.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, &Error{Key: source, Problem: msg})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		key := w.lines[line]
		if key == "" {
			key = source
		}
		errs = append(errs, &Error{Key: key, Problem: fmt.Sprintf("%s (line %d)", m[2], line)})
	}
	return errs
}
