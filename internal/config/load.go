package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"

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
func Parse(file, dir string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(file, err)
	}
	cfg := &Config{File: file, Dir: dir}
	d := decoder{file: file}
	switch {
	case len(root.Content) == 0:
		d.errs.Add(file, Pos{}, "the file is empty: it needs at least frontends and backends")
	default:
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	cfg.setDefaults()
	errs := d.errs
	if verr, ok := cfg.validate().(ErrorList); ok {
		// Validation runs after decoding errors too, so that every problem
		// is reported at once, but a line that already has a decoding error
		// gets no second message caused by it.
		bad := map[int]bool{}
		for _, e := range d.errs {
			bad[e.Pos.Line] = true
		}
		for _, e := range verr {
			if !bad[e.Pos.Line] {
				errs = append(errs, e)
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a YAML syntax error into FILE:LINE:COL form. The YAML
// library reports no column for syntax errors; column 1 is used.
func syntaxError(file string, err error) error {
	var l ErrorList
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		l.Add(file, Pos{Line: line, Col: 1}, "YAML syntax: %s", m[2])
	} else {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				l.Add(file, Pos{}, "%s", e)
			}
		} else {
			l.Add(file, Pos{}, "YAML syntax: %v", err)
		}
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

func (c *Config) setDefaults() {
	if !c.Global.At.Has("grace") {
		c.Global.Grace = DefaultGrace
	}
}
