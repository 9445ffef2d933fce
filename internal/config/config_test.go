package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// example is the configuration of the operator documentation,
// examples/portcullis.yaml; it must parse exactly as written.
var example = func() string {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "portcullis.yaml"))
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func TestExampleParsesVerbatim(t *testing.T) {
	cfg, err := Parse("portcullis.yaml", "/etc/portcullis", []byte(example))
	if err != nil {
		t.Fatalf("the documented example does not parse:\n%v", err)
	}
	if g := cfg.Global; g.User != "nobody" || g.Group != "nogroup" || g.Grace != 5*time.Second {
		t.Errorf("global = %q %q %v, want nobody nogroup 5s", g.User, g.Group, g.Grace)
	}
	if len(cfg.Frontends) != 1 || cfg.Frontends[0].Name != "web" {
		t.Fatalf("frontends = %v, want just web", names(cfg))
	}
	web := cfg.Frontends[0]
	if len(web.Bind) != 2 {
		t.Fatalf("web has %d binds, want 2", len(web.Bind))
	}
	plain, secure := web.Bind[0], web.Bind[1]
	if plain.Address != "127.0.0.1:80" || plain.TLS != nil || plain.HTTP3 {
		t.Errorf("first bind = %s tls=%v http3=%v, want plain 127.0.0.1:80", plain.Address, plain.TLS != nil, plain.HTTP3)
	}
	if secure.Address != "127.0.0.1:443" || secure.TLS == nil || !secure.HTTP3 {
		t.Fatalf("second bind = %s tls=%v http3=%v, want 127.0.0.1:443 with tls and http3", secure.Address, secure.TLS != nil, secure.HTTP3)
	}
	if c := secure.TLS.Certificates; len(c) != 1 || cfg.Path(c[0].Cert) != "/etc/portcullis/site.pem" || cfg.Path(c[0].Key) != "/etc/portcullis/site.key" {
		t.Errorf("certificates do not resolve to /etc/portcullis/site.{pem,key}")
	}
	if len(web.Routes) != 2 {
		t.Fatalf("web has %d routes, want 2", len(web.Routes))
	}
	if r := web.Routes[0]; r.Host != "api.example.test" || r.PathPrefix != "/v1/" || r.Backend != "api" {
		t.Errorf("first route = %+v, want api.example.test /v1/ → api", *r)
	}
	if r := web.Routes[1]; r.Host != "" || r.PathPrefix != "" || r.Backend != "app" {
		t.Errorf("second route = %+v, want anything → app", *r)
	}
	// Backends keep file order, which the runtime and messages rely on.
	if len(cfg.Backends) != 2 || cfg.Backends[0].Name != "app" || cfg.Backends[1].Name != "api" {
		t.Fatalf("backends = %v, want app, api in file order", names(cfg))
	}
	if s := cfg.Backends[0].Servers; len(s) != 2 || s[0].Address != "127.0.0.1:9001" || s[1].Address != "127.0.0.1:9002" {
		t.Errorf("app servers wrong")
	}
}

func names(cfg *Config) []string {
	var out []string
	for _, f := range cfg.Frontends {
		out = append(out, "frontend "+f.Name)
	}
	for _, b := range cfg.Backends {
		out = append(out, "backend "+b.Name)
	}
	return out
}

const minimal = `
frontends:
  web:
    bind: [{address: "127.0.0.1:8080"}]
    routes: [{backend: app}]
backends:
  app:
    servers: [{address: "127.0.0.1:9001"}]
`

func TestDefaultGrace(t *testing.T) {
	for name, global := range map[string]string{
		"no global":      "",
		"empty global":   "global:\n",
		"global no keys": "global: {}\n",
		"grace no value": "global:\n  grace:\n",
		"grace null":     "global:\n  grace: ~\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := Parse("p.yaml", "", []byte(global+minimal))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Global.Grace != DefaultGrace || DefaultGrace != 30*time.Second {
				t.Errorf("grace = %v, want the default 30s", cfg.Global.Grace)
			}
		})
	}
	cfg, err := Parse("p.yaml", "", []byte("global:\n  grace: 1m30s\n"+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Global.Grace != 90*time.Second {
		t.Errorf("grace = %v, want 1m30s as written", cfg.Global.Grace)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != path {
		t.Errorf("File = %q, want %q", cfg.File, path)
	}
	if got, want := cfg.Path("site.pem"), filepath.Join(dir, "site.pem"); got != want {
		t.Errorf("Path(site.pem) = %q, want %q (beside the configuration file)", got, want)
	}
	if got := cfg.Path("/etc/ssl/x.pem"); got != "/etc/ssl/x.pem" {
		t.Errorf("Path of an absolute path = %q, want it unchanged", got)
	}

	t.Run("bytes read earlier", func(t *testing.T) {
		var asked string
		cfg, err := Load("/nonexistent/p.yaml", func(name string) ([]byte, error) {
			asked = name
			return []byte(example), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if asked != "/nonexistent/p.yaml" || cfg.Dir != "/nonexistent" {
			t.Errorf("read %q, dir %q; want the given path and its directory", asked, cfg.Dir)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.yaml")
		_, err := Load(missing, nil)
		if err == nil {
			t.Fatal("Load of a missing file succeeded")
		}
		if !strings.HasPrefix(err.Error(), missing+": ") || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("err = %v, want it to name the file and say it does not exist", err)
		}
	})

	t.Run("errors name the path", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(bad, []byte("global:\n  grace: soon\n"+minimal), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(bad, nil)
		if err == nil || !strings.HasPrefix(err.Error(), bad+":2:10: ") {
			t.Fatalf("err = %v, want it to start with %s:2:10:", err, bad)
		}
	})
}

func TestListenAddress(t *testing.T) {
	ok := map[string]string{
		"127.0.0.1:80":             "127.0.0.1:80",
		":443":                     ":443",
		":0443":                    ":443",
		"[::1]:8443":               "[::1]:8443",
		"[::]:80":                  "[::]:80",
		"0.0.0.0:80":               "0.0.0.0:80",
		"[::ffff:10.0.0.1]:80":     "10.0.0.1:80",
		"[2001:DB8::1]:65535":      "[2001:db8::1]:65535",
		"[2001:db8:0:0:0:0:0:1]:1": "[2001:db8::1]:1",
	}
	for in, want := range ok {
		got, err := ListenAddress(in)
		if err != nil || got != want {
			t.Errorf("ListenAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999",
		"localhost:80", "example.test:443", "[fe80::1%eth0]:80", "127.0.0.1:http", "127.0.0.1:-1", "::1:80", "1.2.3:80"} {
		if got, err := ListenAddress(in); err == nil {
			t.Errorf("ListenAddress(%q) = %q, want an error", in, got)
		} else if in != "" && !strings.Contains(err.Error(), in) {
			t.Errorf("ListenAddress(%q) error %q does not quote the address", in, err)
		}
	}
}

func TestHostPattern(t *testing.T) {
	ok := map[string]string{
		"example.test":     "example.test",
		"API.Example.Test": "api.example.test",
		"*.example.test":   "*.example.test",
		"*.EXAMPLE.test":   "*.example.test",
		"localhost":        "localhost",
		"xn--bcher-kva.ch": "xn--bcher-kva.ch",
	}
	for in, want := range ok {
		got, err := HostPattern(in)
		if err != nil || got != want {
			t.Errorf("HostPattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"*", "*.", "**.example.test", "a.*.example.test", "example.test:80",
		"https://example.test", "example.test/", ".example.test", "example.test.", "a..b", "a b"} {
		if got, err := HostPattern(in); err == nil {
			t.Errorf("HostPattern(%q) = %q, want an error", in, got)
		}
	}
}

// TestErrorFormat pins the FILE:LINE:COL form that editors and CI parse.
func TestErrorFormat(t *testing.T) {
	var l ErrorList
	l.Add("b.yaml", Pos{Line: 9, Col: 2}, "third %d", 3)
	l.Add("b.yaml", Pos{}, "whole file")
	l.Add("b.yaml", Pos{Line: 2, Col: 7}, "second")
	l.Add("b.yaml", Pos{Line: 2, Col: 3}, "first")
	err := l.Err()
	want := "b.yaml: whole file\nb.yaml:2:3: first\nb.yaml:2:7: second\nb.yaml:9:2: third 3"
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
	if (ErrorList{}).Err() != nil {
		t.Errorf("an empty ErrorList is not an error")
	}
}

// TestParseIsRepeatable checks that parsing is a pure function
// of its input: a reload parses the same bytes to the same result.
func TestParseIsRepeatable(t *testing.T) {
	a, err := Parse("p.yaml", "/d", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("p.yaml", "/d", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if dump(a) != dump(b) {
		t.Errorf("two parses of the same bytes differ:\n%s", lineDiff(dump(a), dump(b)))
	}
}

func TestJoinDropsFollowOnProblems(t *testing.T) {
	var first, second ErrorList
	first.Add("f.yaml", Pos{Line: 3, Col: 5}, "grace: expected a duration")
	second.Add("f.yaml", Pos{Line: 3, Col: 1}, "caused by the first")
	second.Add("f.yaml", Pos{Line: 1, Col: 2}, "unrelated")
	err := Join(nil, first.Err(), second.Err())
	want := "f.yaml:1:2: unrelated\nf.yaml:3:5: grace: expected a duration"
	if err == nil || err.Error() != want {
		t.Fatalf("Join = %v, want\n%s", err, want)
	}
	if Join(nil, ErrorList(nil).Err()) != nil {
		t.Fatalf("Join of nothing is not nil")
	}
}

func TestSNIPattern(t *testing.T) {
	ok := map[string]string{
		"pass.example.test":   "pass.example.test",
		"Pass.Example.TEST":   "pass.example.test",
		"*.Pass.Example.test": "*.pass.example.test",
	}
	for in, want := range ok {
		got, err := SNIPattern(in)
		if err != nil || got != want {
			t.Errorf("SNIPattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "*", "192.0.2.1", "example.test:443", "a.*.example.test", "example.test."} {
		if got, err := SNIPattern(in); err == nil {
			t.Errorf("SNIPattern(%q) = %q, want an error", in, got)
		} else if !strings.HasPrefix(err.Error(), "sni ") {
			t.Errorf("SNIPattern(%q) error %q does not name the sni key", in, err)
		}
	}
}

func TestTrustedPrefix(t *testing.T) {
	ok := map[string]string{
		"10.0.0.0/8":              "10.0.0.0/8",
		"10.1.2.3/16":             "10.1.0.0/16",
		"192.0.2.7":               "192.0.2.7/32",
		"::1":                     "::1/128",
		"2001:DB8::/32":           "2001:db8::/32",
		"::ffff:192.0.2.7":        "192.0.2.7/32",
		"::ffff:198.51.100.0/120": "198.51.100.0/24",
		"0.0.0.0/0":               "0.0.0.0/0",
	}
	for in, want := range ok {
		p, err := TrustedPrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("TrustedPrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "proxy.internal", "10.0.0.0/33", "10.0.0.0/", "fe80::1%eth0", "::ffff:10.0.0.0/64", "10.0.0.1-10.0.0.9"} {
		if p, err := TrustedPrefix(in); err == nil {
			t.Errorf("TrustedPrefix(%q) = %v, want an error", in, p)
		}
	}
}

// TestCheckTypeDefault pins the health check type chosen when the file
// names none.
func TestCheckTypeDefault(t *testing.T) {
	const file = `
frontends:
  dns:
    mode: udp
    bind: [{address: "127.0.0.1:53"}]
    routes: [{backend: both}]
  db:
    mode: tcp
    bind: [{address: "127.0.0.1:53"}]
    routes: [{backend: both}]
  web:
    bind: [{address: "127.0.0.1:80"}]
    routes: [{host: a.example.test, backend: plain}, {backend: both}]
backends:
  both:
    health_check: {}
    servers: [{address: "10.0.0.1:53"}]
  plain:
    health_check: {}
    servers: [{address: "10.0.0.2:80"}]
  checked:
    health_check: {path: /healthz, interval: 1s}
    servers: [{address: "10.0.0.3:80"}]
`
	cfg, err := Parse("p.yaml", "", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"udp", "tcp", "http"} {
		if hc := cfg.Backends[i].HealthCheck; hc.Type != want {
			t.Errorf("backend %s: health_check type %q, want %q", cfg.Backends[i].Name, hc.Type, want)
		}
	}
	if hc := cfg.Backends[2].HealthCheck; hc.Timeout != 500*time.Millisecond {
		t.Errorf("timeout with interval 1s = %v, want half the interval", hc.Timeout)
	}
}

// TestCheckPathDefault pins the path of an HTTP check whose file names
// none: the health package takes it as given.
func TestCheckPathDefault(t *testing.T) {
	const file = `
frontends:
  web:
    bind: [{address: "127.0.0.1:80"}]
    routes: [{backend: app}]
backends:
  app:
    health_check: {type: http}
    servers: [{address: "10.0.0.1:80"}]
`
	cfg, err := Parse("p.yaml", "", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if hc := cfg.Backends[0].HealthCheck; hc.Path != "/" {
		t.Errorf("health_check type http without a path: path %q, want /", hc.Path)
	}
}
