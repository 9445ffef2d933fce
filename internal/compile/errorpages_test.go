package compile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const errorPagesConfig = `frontends:
  web:
    errors:
      "502": errors/502.html
      404: errors/404.html
    bind:
      - address: 127.0.0.1:8080
    routes:
      - backend: pool
  plain:
    bind:
      - address: 127.0.0.1:8081
    routes:
      - backend: pool
backends:
  pool:
    servers:
      - address: 127.0.0.1:9009
`

func writePage(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	p := filepath.Join(dir, "errors", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestErrorPages: the pages are read relative to the configuration's
// directory and kept by status; a frontend without errors has none.
func TestErrorPages(t *testing.T) {
	dir := t.TempDir()
	writePage(t, dir, "502.html", []byte("<p>down</p>"))
	writePage(t, dir, "404.html", []byte("<p>lost</p>"))
	g, err := compileFile(t, dir, errorPagesConfig)
	if err != nil {
		t.Fatal(err)
	}
	web, plain := g.Frontends[0], g.Frontends[1]
	if len(web.ErrorPages) != 2 || string(web.ErrorPages[502]) != "<p>down</p>" || string(web.ErrorPages[404]) != "<p>lost</p>" {
		t.Errorf("web pages %d, want 502 and 404", len(web.ErrorPages))
	}
	if plain.ErrorPages != nil {
		t.Errorf("plain pages %d, want none", len(plain.ErrorPages))
	}
}

// TestErrorPagesUnreadable: a missing page and one over the bound are
// refused where they are written, naming the file.
func TestErrorPagesUnreadable(t *testing.T) {
	dir := t.TempDir()
	writePage(t, dir, "404.html", make([]byte, MaxErrorPageBytes+1))
	_, err := compileFile(t, dir, errorPagesConfig)
	for _, want := range []string{
		`portcullis.yaml:4:14: frontend "web": errors 502: cannot read the page: open ` + filepath.Join(dir, "errors", "502.html") + `: no such file or directory`,
		`portcullis.yaml:5:12: frontend "web": errors 404: the page errors/404.html has 1048577 bytes; keep it within 1048576 (1 MiB)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %s", err, want)
		}
	}
}
