package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder turns a yaml.Node tree into config structs strictly: unknown keys,
// duplicate keys and wrong types are errors that carry the line and column,
// and decoding goes on after an error so that every problem is reported at
// once.
type decoder struct {
	file string
	errs ErrorList
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	positionsType = reflect.TypeFor[Positions]()
)

func pos(n *yaml.Node) Pos { return Pos{Line: n.Line, Col: n.Column} }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs.Add(d.file, pos(n), format, args...)
}

// describe names a node's kind for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, what string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the zero value
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "%s: expected a duration such as 5s or 250ms, got %s", what, describe(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errorf(n, "%s: expected a duration such as 5s or 250ms, got %q", what, n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "%s: expected a string, got %s", what, describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.errorf(n, "%s: expected true or false, got %s", what, describe(n))
			return
		}
		b, _ := strconv.ParseBool(n.Value)
		v.SetBool(b)
	case reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
			d.errorf(n, "%s: expected a whole number, got %s", what, describe(n))
			return
		}
		v.SetInt(int64(i))
	case reflect.Slice:
		if isNamedList(v.Type()) {
			d.decodeNamed(n, v, what)
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "%s: expected a list, got %s", what, describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), what)
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), what)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, what)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// isNamedList reports whether t is []*T where T has a Name field filled from
// a mapping key (frontends, backends).
func isNamedList(t reflect.Type) bool {
	if t.Elem().Kind() != reflect.Pointer || t.Elem().Elem().Kind() != reflect.Struct {
		return false
	}
	f, ok := t.Elem().Elem().FieldByName("Name")
	return ok && f.Tag.Get("yaml") == "-"
}

func (d *decoder) decodeNamed(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping of name to %s, got %s", what, singular(what), describe(n))
		return
	}
	seen := map[string]*yaml.Node{}
	s := reflect.MakeSlice(v.Type(), 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, "duplicate %s name %q (first defined at line %d)", singular(what), k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		if !validName.MatchString(k.Value) {
			d.errorf(k, "%s name %q: use letters, digits, '.', '_' and '-' only", singular(what), k.Value)
		}
		p := reflect.New(v.Type().Elem().Elem())
		p.Elem().FieldByName("Name").SetString(k.Value)
		d.decode(val, p.Elem(), fmt.Sprintf("%s %q", singular(what), k.Value))
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
			setSelf(p.Elem(), pos(k))
		}
		s = reflect.Append(s, p)
	}
	v.Set(s)
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func singular(what string) string { return strings.TrimSuffix(what, "s") }

func setSelf(v reflect.Value, p Pos) {
	if f := v.FieldByName("At"); f.IsValid() && f.Type() == positionsType {
		f.Set(reflect.ValueOf(Positions{Self: p}))
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping, got %s", what, describe(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	at := Positions{Self: pos(n), keys: map[string]Pos{}, values: map[string]Pos{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, "%s: unknown key %q (known keys: %s)", what, k.Value, knownKeys(fields))
			continue
		}
		if _, dup := at.keys[k.Value]; dup {
			d.errorf(k, "%s: key %q is set twice", what, k.Value)
			continue
		}
		at.keys[k.Value] = pos(k)
		at.values[k.Value] = pos(val)
		sub := k.Value
		if what != "" {
			sub = what + " " + k.Value
		}
		d.decode(val, v.Field(idx), sub)
	}
	if f := v.FieldByName("At"); f.IsValid() && f.Type() == positionsType {
		f.Set(reflect.ValueOf(at))
	}
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}
