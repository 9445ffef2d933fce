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
// import: the layers of docs/architecture.md, where dependencies point one
// way (cmd → runtime → compile → the protocols' servers → proxy →
// upstream → leaves). A package's tests may import the same packages, the
// package itself (external tests) and testutil.
var allowed = map[string][]string{
	// Leaves.
	"config":     {"hostname"},
	"listen":     {},
	"privilege":  {},
	"systemd":    {},
	"quickstart": {},
	"balance":    {},
	"hostname":   {},
	"sni":        {},
	"proxyproto": {},
	"limit":      {},
	"ratelimit":  {},
	"compress":   {},
	"accesslog":  {},
	"metrics":    {},
	"quiclb":     {},
	"tickets":    {},
	"testutil":   {},
	"handoff":    {"listen", "quiclb"},
	// The model of the servers.
	"health":   {"balance"},
	"upstream": {"balance", "health", "limit", "metrics"},
	// The HTTP request path.
	"proxy": {"accesslog", "balance", "proxyproto", "limit", "ratelimit", "upstream", "hostname", "metrics"},
	// The protocols' servers.
	"accept":     {"limit", "proxyproto"},
	"httpserver": {"limit", "proxy", "metrics"},
	"l4":         {"accesslog", "balance", "sni", "proxyproto", "limit", "upstream", "hostname", "accept", "metrics"},
	"h3":         {"quiclb"},
	// Configuration to graph, once.
	"compile": {"accesslog", "metrics", "config", "compress", "listen", "privilege", "balance", "health", "upstream", "hostname", "proxy", "proxyproto", "limit", "ratelimit", "httpserver", "l4", "h3", "quiclb"},
	// The admin interface: what the runtime lets it see and do.
	"admin": {"metrics"},
	// The admin API's client (portcullis ctl): the API's JSON types only.
	"ctl": {"admin", "config"},
	// The lifecycle.
	"runtime": {"accesslog", "metrics", "config", "compile", "listen", "privilege", "systemd", "handoff", "tickets", "limit", "balance", "upstream", "proxy", "accept", "httpserver", "l4", "h3", "quiclb", "admin"},
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
			ImportPath   string
			Imports      []string
			TestImports  []string
			XTestImports []string
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
		check(t, p.ImportPath, "", p.Imports, ok)
		tests := append(slices.Clone(ok), name, "testutil")
		check(t, p.ImportPath, "'s tests", append(p.TestImports, p.XTestImports...), tests)
	}
}

// check reports every internal package of imports (those of pkg, or of
// what names) that is not in ok.
func check(t *testing.T, pkg, what string, imports, ok []string) {
	t.Helper()
	const prefix = "github.com/portcullis/portcullis/internal/"
	for _, imp := range imports {
		dep, internal := strings.CutPrefix(imp, prefix)
		if internal && !slices.Contains(ok, dep) {
			t.Errorf("%s%s import %s: the layering of docs/architecture.md does not allow it", pkg, what, imp)
		}
	}
}
