package config

import (
	"fmt"
	"sort"
	"strings"
)

// Pos is a 1-based line and column in the configuration file. The zero Pos
// means "the file as a whole".
type Pos struct {
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// Positions records where a mapping and each of its keys and values were
// written, so that validation can point at the exact spot.
type Positions struct {
	Self   Pos
	keys   map[string]Pos
	values map[string]Pos
	empty  map[string]bool // keys written with no value ("grace:")
}

// Key returns the position of key in the mapping, or the mapping's own
// position when the key was not written.
func (p Positions) Key(key string) Pos {
	if pos, ok := p.keys[key]; ok {
		return pos
	}
	return p.Self
}

// Value returns the position of key's value, or the mapping's own position
// when the key was not written.
func (p Positions) Value(key string) Pos {
	if pos, ok := p.values[key]; ok {
		return pos
	}
	return p.Self
}

// Has reports whether key was written in the mapping.
func (p Positions) Has(key string) bool {
	_, ok := p.keys[key]
	return ok
}

// hasValue reports whether key was written in the mapping with a value.
func (p Positions) hasValue(key string) bool { return p.Has(key) && !p.empty[key] }

// Error is one problem in a configuration file.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos == (Pos{}) {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// ErrorList is every problem found in a configuration file, in file order.
// A non-empty ErrorList is returned as the error of Load and Parse.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Add records a problem at pos.
func (l *ErrorList) Add(file string, pos Pos, format string, args ...any) {
	*l = append(*l, &Error{File: file, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Err sorts the list by position and returns it, or nil when it is empty.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Pos.Line != l[j].Pos.Line {
			return l[i].Pos.Line < l[j].Pos.Line
		}
		return l[i].Pos.Col < l[j].Pos.Col
	})
	return l
}
