package portcullis_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed lists, for each internal package, the internal packages it may
// import (DESIGN.md: cmd → runtime → proxy → config; listen, privilege and
// systemd are leaves; the command, not the runtime, chooses the
// quickstart).
var allowed = map[string][]string{
	"config":     {},
	"listen":     {},
	"privilege":  {},
	"systemd":    {},
	"quickstart": {},
	"balance":    {},
	"health":     {"balance"},
	"upstream":   {"balance", "health", "limit"},
	"hostname":   {},
	"proxy":      {"balance", "proxyproto", "limit", "upstream", "hostname"},
	"sni":        {},
	"proxyproto": {},
	"limit":      {},
	"accept":     {"limit", "proxyproto"},
	"httpserver": {"limit", "proxy"},
	"l4":         {"balance", "sni", "proxyproto", "limit", "upstream", "hostname", "accept"},
	"quiclb":     {},
	"h3":         {"quiclb"},
	"handoff":    {"listen", "quiclb"},
	"tickets":    {},
	"runtime":    {"config", "listen", "privilege", "systemd", "proxy", "balance", "health", "quiclb", "h3", "l4", "sni", "proxyproto", "limit", "handoff", "tickets", "upstream", "hostname", "accept", "httpserver"},
	"testutil":   {},
}

func TestLayering(t *testing.T) {
	const prefix = "github.com/portcullis/portcullis/internal/"
	out, err := exec.Command("go", "list", "-json", "./internal/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, prefix)
		ok, known := allowed[name]
		if !known {
			t.Errorf("package %s is not in the layering table of layering_test.go: add it", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			dep, internal := strings.CutPrefix(imp, prefix)
			if !internal {
				continue
			}
			if !slices.Contains(ok, dep) {
				t.Errorf("%s imports %s: the layering in DESIGN.md does not allow it", p.ImportPath, imp)
			}
		}
	}
}
