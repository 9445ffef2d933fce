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
	// budget is how many more values may be decoded. Aliases (*name) are
	// expanded, so without a bound a small file of nested aliases would
	// expand into an enormous configuration and exhaust memory.
	budget int
	alias  *yaml.Node // the outermost alias being expanded, if any
}

// newDecoder returns a decoder for the document root whose budget allows
// aliases to expand the document tenfold.
func newDecoder(file string, root *yaml.Node) *decoder {
	nodes := 0
	stack := []*yaml.Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], n.Content...)
		nodes++
	}
	return &decoder{file: file, budget: 10*nodes + 10000}
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

// decode sets v from n, which describes what (for messages): the value
// of a key, an entry of a list, or the document itself ("").
func (d *decoder) decode(n *yaml.Node, v reflect.Value, what string) {
	if d.budget <= 0 {
		return
	}
	if n.Kind == yaml.AliasNode && d.alias == nil {
		d.alias = n
		defer func() { d.alias = nil }()
	}
	if !d.spend(n, what) {
		return
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the zero value
	}
	if v.Type() == durationType {
		d.decodeDuration(n, v, what)
		return
	}
	if v.Type() == errorPagesType {
		d.decodeErrorPages(n, v, what)
		return
	}
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Int:
		d.decodeScalar(n, v, what)
	case reflect.Slice:
		if isNamedList(v.Type()) {
			d.decodeNamed(n, v, what)
			return
		}
		d.decodeList(n, v, what)
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

// spend takes one value from the budget. It reports false when the
// budget is used up, with an error at the outermost alias being expanded
// (or at n).
func (d *decoder) spend(n *yaml.Node, what string) bool {
	if d.budget--; d.budget > 0 {
		return true
	}
	at := n
	if d.alias != nil {
		at = d.alias
	}
	d.errorf(at, "%s: the aliases (*name) expand into too many values; write the repeated parts out", subject(what))
	return false
}

// decodeDuration sets v, a time.Duration, from a scalar such as 5s.
func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value, what string) {
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
}

// decodeScalar sets v, a string, bool or int, from a scalar of that type.
func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, what string) {
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
	}
}

// decodeList sets v, a slice, from a sequence, one entry per item; an
// empty item is an error.
func (d *decoder) decodeList(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: expected a list (one entry per line, each starting with \"- \"), got %s", what, describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	for i, c := range n.Content {
		if isNull(c) {
			// An empty "-" would become a nil entry that validation
			// and the runtime cannot use.
			d.errorf(c, "%s: entry %d of the list is empty: fill it in or remove the \"-\"", what, i+1)
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(c, e, what)
		s = reflect.Append(s, e)
	}
	v.Set(s)
}

// isNull reports whether n, or the node it is an alias of, is an empty value.
func isNull(n *yaml.Node) bool {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
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
			d.errorf(k, "%s name %q: use letters, digits, '.', '_' and '-' only, starting with a letter or digit", singular(what), k.Value)
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
	t := v.Type()
	fields := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping with the keys %s, got %s", subject(what), knownKeys(fields), describe(n))
		// Validation then points here, on the line that already has an
		// error, instead of adding messages caused by this one.
		setSelf(v, pos(n))
		return
	}
	at := Positions{Self: pos(n), keys: map[string]Pos{}, values: map[string]Pos{}, empty: map[string]bool{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, "%s: unknown key %q (known keys: %s)", subject(what), k.Value, knownKeys(fields))
			continue
		}
		if first, dup := at.keys[k.Value]; dup {
			d.errorf(k, "%s: key %q is set twice (first at line %d): keep one", subject(what), k.Value, first.Line)
			continue
		}
		at.keys[k.Value] = pos(k)
		at.values[k.Value] = pos(val)
		at.empty[k.Value] = isNull(val)
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

// subject names what is being decoded at the start of a message.
func subject(what string) string {
	if what == "" {
		return "top level"
	}
	return what
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}
