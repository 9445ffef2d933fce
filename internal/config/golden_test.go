package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden from the current output")

// goldenDir is where relative paths in golden inputs resolve: a fixed,
// made-up directory, so that the normalized form does not depend on where
// the tests run.
const goldenDir = "/etc/portcullis"

// TestGolden parses every testdata/golden/*.yaml and compares the result with
// the .golden file beside it: the normalized configuration, or the exact
// error text an operator would see.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "golden", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no golden inputs in testdata/golden")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			got := parseGolden(t, in)
			goldenPath := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/config -run TestGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s: output differs from %s (run with -update if the change is intended):\n%s",
					in, goldenPath, lineDiff(string(want), got))
			}
		})
	}
}

// parseGolden parses one golden input and renders the outcome: the error
// text, one problem per line, or the normalized configuration.
func parseGolden(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel("testdata", path)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.ToSlash(rel)
	cfg, err := Parse(file, goldenDir, data)
	if err != nil {
		checkErrorList(t, file, err)
		return err.Error() + "\n"
	}
	return dump(cfg)
}

// checkErrorList checks what every caller of Parse relies on: the error is
// a non-empty ErrorList, sorted by position, whose entries name the file and
// point at a line (or at the file as a whole), and whose text is one
// FILE:LINE:COL line per problem.
func checkErrorList(t testing.TB, file string, err error) {
	t.Helper()
	list, ok := err.(ErrorList)
	if !ok {
		t.Fatalf("error is %T, want ErrorList: %v", err, err)
	}
	if len(list) == 0 {
		t.Fatalf("error is an empty ErrorList")
	}
	for i, e := range list {
		if e.File != file {
			t.Errorf("error %d names file %q, want %q: %v", i, e.File, file, e)
		}
		if e.Pos != (Pos{}) && (e.Pos.Line < 1 || e.Pos.Col < 1) {
			t.Errorf("error %d has position %v, want line and column ≥ 1 or none: %v", i, e.Pos, e)
		}
		if e.Msg == "" || strings.Contains(e.Msg, "\n") {
			t.Errorf("error %d has message %q, want one non-empty line", i, e.Msg)
		}
		if i > 0 {
			p, q := list[i-1].Pos, e.Pos
			if q.Line < p.Line || q.Line == p.Line && q.Col < p.Col {
				t.Errorf("errors not in file order: %v before %v", list[i-1], e)
			}
		}
		prefix := file + ": "
		if e.Pos != (Pos{}) {
			prefix = fmt.Sprintf("%s:%d:%d: ", file, e.Pos.Line, e.Pos.Col)
		}
		if !strings.HasPrefix(e.Error(), prefix) {
			t.Errorf("error %d reads %q, want it to start with %q", i, e.Error(), prefix)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(list) {
		t.Errorf("error text has %d lines for %d problems", n, len(list))
	}
}

// dump renders a configuration as stable text: every field in declaration
// order, defaults applied, positions left out.
func dump(cfg *Config) string {
	var b strings.Builder
	dumpStruct(&b, reflect.ValueOf(cfg).Elem(), "", "")
	return b.String()
}

// dumpStruct writes one "Field: value" line per field. The first line is
// prefixed with indent+first ("- " for a list item), the others with indent
// and as many spaces.
func dumpStruct(b *strings.Builder, v reflect.Value, indent, first string) {
	t := v.Type()
	prefix := indent + first
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type == positionsType {
			continue
		}
		b.WriteString(prefix + f.Name + ":")
		prefix = indent + strings.Repeat(" ", len(first))
		dumpValue(b, v.Field(i), prefix)
	}
}

// dumpValue writes the rest of the line after "Field:" and, for structs and
// lists, the lines below it, indented from indent.
func dumpValue(b *strings.Builder, v reflect.Value, indent string) {
	switch {
	case v.Type() == durationType:
		b.WriteString(" " + time.Duration(v.Int()).String() + "\n")
		return
	}
	switch v.Kind() {
	case reflect.String:
		b.WriteString(" " + strconv.Quote(v.String()) + "\n")
	case reflect.Bool:
		b.WriteString(" " + strconv.FormatBool(v.Bool()) + "\n")
	case reflect.Int:
		b.WriteString(" " + strconv.FormatInt(v.Int(), 10) + "\n")
	case reflect.Pointer:
		if v.IsNil() {
			b.WriteString(" nil\n")
			return
		}
		dumpValue(b, v.Elem(), indent)
	case reflect.Struct:
		b.WriteString("\n")
		dumpStruct(b, v, indent+"  ", "")
	case reflect.Slice:
		if v.Len() == 0 {
			b.WriteString(" []\n")
			return
		}
		b.WriteString("\n")
		for i := 0; i < v.Len(); i++ {
			e := v.Index(i)
			for e.Kind() == reflect.Pointer && !e.IsNil() {
				e = e.Elem()
			}
			switch e.Kind() {
			case reflect.Struct:
				dumpStruct(b, e, indent+"  ", "- ")
			default:
				b.WriteString(indent + "  -")
				dumpValue(b, e, indent+"  ")
			}
		}
	default:
		panic("config test: Dump cannot show " + v.Type().String() + "; teach dumpValue about it")
	}
}

// lineDiff shows which lines of want and got differ.
func lineDiff(want, got string) string {
	w := strings.Split(want, "\n")
	g := strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl == gl {
			fmt.Fprintf(&b, "  %s\n", wl)
			continue
		}
		if i < len(w) {
			fmt.Fprintf(&b, "- %s\n", wl)
		}
		if i < len(g) {
			fmt.Fprintf(&b, "+ %s\n", gl)
		}
	}
	return b.String()
}
