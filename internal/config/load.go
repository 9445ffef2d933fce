package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ReadFileFunc reads a file named in or by the configuration. Load uses
// os.ReadFile; a process that re-executes itself after dropping privileges
// passes the bytes it read while privileged instead.
type ReadFileFunc func(name string) ([]byte, error)

// Load reads, parses, defaults and validates the configuration file at path.
// A problem with the file's contents is returned as an ErrorList.
func Load(path string, readFile ReadFileFunc) (*Config, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	data, err := readFile(path)
	if err != nil {
		var l ErrorList
		l.Add(path, Pos{}, "cannot read the configuration: %v", err)
		return nil, l.Err()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, filepath.Dir(abs), data)
}

// Parse parses, defaults and validates configuration bytes. file names the
// source in error messages; dir is where relative paths start.
//
// On an ErrorList that is not a syntax error, Parse also returns the partly
// filled Config, so that the caller can look for further problems (such as
// unreadable certificates) and report them all at once with Join. Such a
// Config must never be served.
func Parse(file, dir string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(file, data, err)
	}
	cfg := &Config{File: file, Dir: dir}
	d := newDecoder(file, &root)
	switch {
	case len(root.Content) == 0:
		d.errs.Add(file, Pos{}, "the file is empty: it needs at least frontends and backends")
	default:
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if d.budget <= 0 {
		return nil, d.errs.Err() // the configuration is incomplete
	}
	cfg.setDefaults()
	// Validation runs after decoding errors too, so that every problem is
	// reported at once.
	return cfg, Join(d.errs.Err(), cfg.validate())
}

// Join merges the ErrorLists among errs into one, sorted by position. A
// problem on a line that an earlier list already reported is dropped: it is
// almost always caused by the first (a value of the wrong type that then
// looks missing). Join returns nil when there is no problem, and the first
// error that is not an ErrorList, if any, as it is.
func Join(errs ...error) error {
	var out ErrorList
	bad := map[int]bool{}
	for _, err := range errs {
		if err == nil {
			continue
		}
		l, ok := err.(ErrorList)
		if !ok {
			return err
		}
		var fresh []*Error
		for _, e := range l {
			if !bad[e.Pos.Line] {
				fresh = append(fresh, e)
			}
		}
		for _, e := range fresh {
			bad[e.Pos.Line] = true
		}
		out = append(out, fresh...)
	}
	return out.Err()
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parserProblems are the YAML parser's problems, as opposed to its
// scanner's. The library reports them with a 0-based line: that of the block
// the problem is in, or of the problem itself when the block starts on the
// first line (and no line at all when both are on the first line). The
// problem is on that line or below it. Each maps to a remedy.
var parserProblems = map[string]string{
	"did not find expected key":              "check the indentation from this line on: the keys of one mapping start in the same column",
	"did not find expected '-' indicator":    "check the indentation from this line on: the entries of one list start with - in the same column",
	"did not find expected ',' or ']'":       "a [ list from this line on lacks its closing ] or a comma",
	"did not find expected ',' or '}'":       "a { mapping from this line on lacks its closing } or a comma",
	"did not find expected node content":     "a value is missing from this line on",
	"did not find expected <document start>": "",
	"did not find expected <stream-start>":   "",
	"found undefined tag handle":             "",
	"found duplicate %YAML directive":        "",
	"found incompatible YAML document":       "",
	"found duplicate %TAG directive":         "",
}

// scannerHints are remedies for the YAML scanner's commonest problems,
// which are reported on their own line.
var scannerHints = map[string]string{
	"found character that cannot start any token":     "quote a value that starts with @ or `",
	"found a tab character that violates indentation": "indent with spaces, not tabs",
	"mapping values are not allowed in this context":  `quote a value that contains ": ", and check that the line above ends a key with ":"`,
	"could not find expected ':'":                     `a key on this line lacks ":" after it`,
	"found unexpected end of stream":                  "a quoted value is not closed",
}

// syntaxError turns a YAML syntax error into FILE:LINE:COL form with a
// remedy. The YAML library reports no column for syntax errors; column 1 is
// used.
func syntaxError(file string, data []byte, err error) error {
	var l ErrorList
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	hint, parser := parserProblems[msg]
	if parser {
		line++
	} else {
		hint = scannerHints[msg]
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if line > len(lines) {
		line = len(lines) // the end of the file
	}
	if line > 0 && bytes.ContainsRune(lines[line-1], '\t') && msg == "found character that cannot start any token" {
		hint = "indent with spaces: this line has a tab"
	}
	if hint != "" {
		msg += ": " + hint
	}
	if line > 0 {
		l.Add(file, Pos{Line: line, Col: 1}, "YAML syntax: %s", msg)
	} else {
		l.Add(file, Pos{}, "YAML syntax: %s", msg)
	}
	return l.Err()
}

// Errorf returns a one-problem ErrorList pointing into this configuration.
func (c *Config) Errorf(p Pos, format string, args ...any) *Error {
	return &Error{File: c.File, Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// Path resolves a path written in the configuration against its directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// setDefaults fills what the file left out. Frontends come first: a
// backend's defaults depend on the modes of the frontends that use it.
func (c *Config) setDefaults() {
	if !c.Global.At.hasValue("grace") {
		c.Global.Grace = DefaultGrace
	}
	// global.max_conns 0 is derived at startup from the open-files limit.
	for _, fe := range c.Frontends {
		fe.setDefaults()
	}
	uses := c.backendUses()
	for _, b := range c.Backends {
		b.setDefaults(uses[b.Name])
	}
}
