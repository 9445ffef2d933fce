package config

import (
	"reflect"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// ErrorPages are the pages a frontend shows, in place of portcullis's
// short text bodies, on the responses portcullis makes itself (never on
// a backend's own responses), written as a mapping from a status to a
// file: `errors: {"502": errors/502.html}`. Default: none.
type ErrorPages []ErrorPage

// ErrorPage is one entry of ErrorPages.
type ErrorPage struct {
	// Status is the status whose responses carry the page, 400 to 599
	// (the mapping key, quoted or not).
	Status int
	// File is the page's file, relative to the configuration file's
	// directory, sent as text/html; charset=utf-8. The compile step
	// reads it, at startup and on each reload.
	File string

	// At.Self is where the status was written; At.Value("file") where
	// the file was.
	At Positions
}

// Bounds of error page statuses.
const (
	MinErrorStatus = 400
	MaxErrorStatus = 599
)

var errorPagesType = reflect.TypeFor[ErrorPages]()

// decodeErrorPages sets v, an ErrorPages, from a mapping of status to
// file.
func (d *decoder) decodeErrorPages(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping of status to page file, e.g. \"502\": errors/502.html, got %s", what, describe(n))
		return
	}
	var pages ErrorPages
	seen := map[int]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		for val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		status, err := strconv.Atoi(k.Value)
		if k.Kind != yaml.ScalarNode || err != nil {
			d.errorf(k, "%s: status %s is not a number: write a status from %d to %d, e.g. \"502\"", what, describe(k), MinErrorStatus, MaxErrorStatus)
			continue
		}
		if first, dup := seen[status]; dup {
			d.errorf(k, "%s: status %d is set twice (first at line %d): keep one", what, status, first.Line)
			continue
		}
		seen[status] = k
		if val.Kind != yaml.ScalarNode || val.Tag == "!!null" {
			d.errorf(val, "%s %d: expected the path of a page file, got %s", what, status, describe(val))
			continue
		}
		at := Positions{Self: pos(k), keys: map[string]Pos{"file": pos(val)}, values: map[string]Pos{"file": pos(val)}}
		pages = append(pages, ErrorPage{Status: status, File: val.Value, At: at})
	}
	v.Set(reflect.ValueOf(pages))
}

// validate checks the pages of a frontend of mode mode ("" when invalid).
func (p ErrorPages) validate(mode, where string, at Pos, add func(Pos, string, ...any)) {
	if len(p) > 0 && (mode == ModeTCP || mode == ModeUDP) {
		add(at, "%s: errors is for http frontends; a %s frontend sends no HTTP response", where, mode)
	}
	for _, e := range p {
		if e.Status < MinErrorStatus || e.Status > MaxErrorStatus {
			add(e.At.Self, "%s: errors status %d: want %d to %d (the error statuses)", where, e.Status, MinErrorStatus, MaxErrorStatus)
		}
		if e.File == "" {
			add(e.At.Value("file"), "%s: errors %d: the page's path is empty: name an HTML file, e.g. errors/%d.html", where, e.Status, e.Status)
		}
	}
}
