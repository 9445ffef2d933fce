package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// errorPagesConfig serves /down/ from a server nothing listens on (502
// from portcullis; passive checks off, so that it stays a 502 and
// does not become the 503 of no server up), /own/ from a server that answers its own 503, and
// nothing else (404 of no route), with pages for 404, 502 and 503.
func errorPagesConfig(down, own string) string {
	return strings.Replace(webFrontend, "  web:\n", `  web:
    errors:
      "502": errors/502.html
      "503": errors/503.html
      404: errors/404.html
`, 1) + fmt.Sprintf(`      - path_prefix: /down/
        backend: down
      - path_prefix: /own/
        backend: own
backends:
  down:
    passive_health: {failures: 0}
    servers:
      - address: %s
  own:
    servers:
      - address: %s
`, down, own)
}

// writePages writes the site's error pages, readable by nobody (a reload
// reads them after the drop).
func writePages(t *testing.T, s *site, pages map[int]string) {
	t.Helper()
	dir := filepath.Join(s.dir, "errors")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for status, page := range pages {
		writeFile(t, filepath.Join(dir, strconv.Itoa(status)+".html"), page, 0o644)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// checkErrorPage checks that r is status with page as its HTML body.
func checkErrorPage(t *testing.T, proto string, r result, status int, page string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v", proto, r)
	}
	if want := int(proto[len("HTTP/")] - '0'); r.proto != want {
		t.Errorf("%s: the response came over HTTP/%d", proto, r.proto)
	}
	if r.status != status || r.body != page {
		t.Errorf("%s: %v; want %d with the page %q", proto, r, status, page)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("%s %s: Content-Type %q, want text/html; charset=utf-8", proto, r.path, ct)
	}
	if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(page)) {
		t.Errorf("%s %s: Content-Length %q, want %d", proto, r.path, cl, len(page))
	}
}

// TestErrorPages: portcullis's own 502 (server down) and 404 (no route)
// carry the configured pages over HTTP/1.1, HTTP/2 and HTTP/3, while a
// server's own 503 passes through untouched; a reload that changes a
// page serves the new one.
func TestErrorPages(t *testing.T) {
	own := startUpstream(t, "own", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"maintenance":true}`))
	}))
	config := errorPagesConfig(closedAddr(t), own.addr)
	s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	pages := map[int]string{
		404: "<!doctype html><h1>Nothing here</h1>\n",
		502: "<!doctype html><h1>We are down</h1>\n",
		503: "<!doctype html><h1>Back soon</h1>\n",
	}
	writePages(t, s, pages)
	writeFile(t, s.config, config, 0o644)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()

	protos := []string{"HTTP/1.1", "HTTP/2", "HTTP/3"}
	for _, proto := range protos {
		c := clientFor(t, s, proto, 1)
		checkErrorPage(t, proto, get(c, "/down/x"), http.StatusBadGateway, pages[502])
		checkErrorPage(t, proto, get(c, "/nowhere"), http.StatusNotFound, pages[404])
		r := get(c, "/own/x")
		if r.err != nil || r.status != http.StatusServiceUnavailable || r.body != `{"maintenance":true}` || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: the server's own 503: %v (%s); want it untouched", proto, r, r.header.Get("Content-Type"))
		}
	}

	pages[502] = "<!doctype html><h1>Still down, sorry</h1>\n"
	writePages(t, s, pages)
	if line := reload(t, s, p, config); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload: %s", line)
	}
	for _, proto := range protos {
		checkErrorPage(t, proto, get(clientFor(t, s, proto, 1), "/down/y"), http.StatusBadGateway, pages[502])
	}
}

// TestErrorPagesValidate: a page that cannot be read (missing, or a
// directory) makes validate fail where the file is named.
func TestErrorPagesValidate(t *testing.T) {
	bin := defaultBinary(t)
	s := newSite(t, siteOptions{})
	dir := s.dir
	if err := os.MkdirAll(filepath.Join(dir, "errors", "503.html"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "errors", "404.html"), "<h1>lost</h1>", 0o644)
	file := s.config
	writeFile(t, file, errorPagesConfig("127.0.0.1:9001", "127.0.0.1:9002"), 0o644)
	_, stderr, code := validate(t, bin, file)
	if code != 2 {
		t.Errorf("validate exit code %d, want 2; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		file + `:8:14: frontend "web": errors 502: cannot read the page: open ` + filepath.Join(dir, "errors", "502.html") + ": no such file or directory",
		file + `:9:14: frontend "web": errors 503: cannot read the page: read ` + filepath.Join(dir, "errors", "503.html") + ": is a directory",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("validate's errors lack %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, "\n"); n != 3 {
		t.Errorf("%d lines, want the two problems and their count:\n%s", n, stderr)
	}
}
