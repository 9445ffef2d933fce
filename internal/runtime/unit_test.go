package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
)

// listenersConfig is a configuration with frontends described by fe (YAML
// indented by two spaces under frontends:) and one backend, app.
func listenersConfig(fe string) string {
	return "frontends:\n" + fe + `backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`
}

// Frontends for TestDiffUnits.
const (
	webHTTP = `  web:
    bind:
      - address: 127.0.0.1:8080
    routes:
      - backend: app
`
	webHTTPS = `  web:
    bind:
      - address: 127.0.0.1:8080
      - address: 127.0.0.1:8443
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
        http3: true
        quic: {shards: 2%s}
    routes:
      - backend: app
`
	dns = `  dns:
    mode: udp
    idle_timeout: %s
    bind:
      - address: 127.0.0.1:5353
    routes:
      - backend: app
`
)

func keysOf(specs []unitSpec) []string {
	var out []string
	for _, us := range specs {
		out = append(out, us.key)
	}
	slices.Sort(out)
	return out
}

// TestDiffUnits compiles pairs of configurations and checks which
// listeners a reload from the first to the second keeps, replaces on the
// same socket, adds and removes, and which it refuses.
func TestDiffUnits(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	for i, b := range []string{"k", "m"} { // not hex: 32 raw bytes
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("reset%d.key", i+1)), []byte(strings.Repeat(b, 32)), 0o600)
	}
	https := func(quic string) string { return fmt.Sprintf(webHTTPS, quic) }
	tcpMode := strings.Replace(webHTTP, "  web:\n", "  web:\n    mode: tcp\n", 1)
	proxied := strings.Replace(webHTTP, "127.0.0.1:8080\n", "127.0.0.1:8080\n        accept_proxy: true\n        trusted_proxies: [127.0.0.1]\n", 1)
	tlsOnly := strings.Replace(https(""), "      - address: 127.0.0.1:8080\n", "", 1)
	sni := tlsOnly + "      - sni: db.test\n        backend: app\n"
	renamed := strings.Replace(webHTTP, "  web:", "  site:", 1)
	otherRoutes := strings.Replace(webHTTP, "      - backend: app\n", "      - path_prefix: /v1/\n        backend: app\n      - backend: app\n", 1)
	tcp, quic, udp := "tcp 127.0.0.1:8080", "quic 127.0.0.1:8443", "udp 127.0.0.1:5353"
	tls := "tcp 127.0.0.1:8443"
	for _, c := range []struct {
		name     string
		old, new string
		keep     []string
		replace  []string
		add      []string
		remove   []string
		refused  []string // parts of the error
	}{
		{name: "same file", old: webHTTP, new: webHTTP, keep: []string{tcp}},
		{name: "routes change", old: webHTTP, new: otherRoutes, keep: []string{tcp}},
		{name: "random QUIC keys", old: https(""), new: https(""), keep: []string{tcp, quic, tls}},
		{name: "bind added with http3", old: webHTTP, new: https(""), keep: []string{tcp}, add: []string{quic, tls}},
		{name: "bind removed", old: https(""), new: webHTTP, keep: []string{tcp}, remove: []string{quic, tls}},
		{name: "http to tcp", old: webHTTP, new: tcpMode, replace: []string{tcp}},
		{name: "tcp to http", old: tcpMode, new: webHTTP, replace: []string{tcp}},
		{name: "accept_proxy", old: webHTTP, new: proxied, replace: []string{tcp}},
		{name: "first sni route", old: tlsOnly, new: sni, keep: []string{quic}, replace: []string{tls}},
		{name: "last sni route", old: sni, new: tlsOnly, keep: []string{quic}, replace: []string{tls}},
		{name: "tls added", old: webHTTP, new: strings.Replace(webHTTP, "8080\n", "8080\n        tls: {certificates: [{cert: default.test.pem, key: default.test.key}]}\n", 1), replace: []string{tcp}},
		{name: "frontend renamed", old: webHTTP, new: renamed, replace: []string{tcp}},
		{name: "udp idle_timeout", old: fmt.Sprintf(dns, "30s"), new: fmt.Sprintf(dns, "1m"), replace: []string{udp}},
		{name: "udp added", old: webHTTP, new: webHTTP + fmt.Sprintf(dns, "30s"), keep: []string{tcp}, add: []string{udp}},
		{
			name: "quic shards", old: https(""), new: strings.Replace(https(""), "shards: 2", "shards: 3", 1),
			refused: []string{`frontend "web", HTTP/3 on udp 127.0.0.1:8443`, "shards (running: 2; new: 3)", "restart to apply it"},
		},
		{
			name: "quic server_id", old: https(""), new: https(", server_id: 0a0b"),
			refused: []string{"server_id (running: none; new: 0a0b)", "restart to apply it"},
		},
		{
			name: "quic reset key", old: https(", stateless_reset_key_file: reset1.key"), new: https(", stateless_reset_key_file: reset2.key"),
			refused: []string{"stateless_reset_key_file (another key)"},
		},
		{
			name: "quic rcvbuf", old: https(""), new: https(", rcvbuf: 1048576"),
			refused: []string{"rcvbuf (running: 7340032; new: 1048576)"},
		},
		{
			name: "udp address from http3 to a udp frontend", old: https(""),
			new:     webHTTP + strings.Replace(fmt.Sprintf(dns, "30s"), "5353", "8443", 1),
			refused: []string{"udp 127.0.0.1:8443: a reload cannot move the address from HTTP/3", "remove the bind in one reload"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g1, err := compileFile(t, dir, listenersConfig(c.old))
			if err != nil {
				t.Fatal(err)
			}
			g2, err := compileFile(t, dir, listenersConfig(c.new))
			if err != nil {
				t.Fatal(err)
			}
			running := map[string]unitSpec{}
			for _, us := range unitSpecs(g1) {
				running[us.key] = us
			}
			reloadShards(g2, running)
			d, err := diffUnits(running, unitSpecs(g2))
			if c.refused != nil {
				if err == nil {
					t.Fatalf("not refused: %+v", d)
				}
				for _, part := range c.refused {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("the error lacks %q: %v", part, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			remove := slices.Clone(d.remove)
			slices.Sort(remove)
			for what, got := range map[string][2][]string{
				"keep":    {keysOf(d.keep), c.keep},
				"replace": {keysOf(d.replace), c.replace},
				"add":     {keysOf(d.add), c.add},
				"remove":  {remove, c.remove},
			} {
				want := slices.Clone(got[1])
				slices.Sort(want)
				if !slices.Equal(got[0], want) {
					t.Errorf("%s: %q, want %q", what, got[0], want)
				}
			}
		})
	}
}

// TestReloadShards checks that a kept HTTP/3 bind keeps the number of
// shards it runs with (one, when steering could not be loaded at startup,
// although the file asks for more), and that a bind given HTTP/3 by a
// reload gets one shard, with a note saying why.
func TestReloadShards(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	yaml := listenersConfig(fmt.Sprintf(webHTTPS, ""))
	g1, err := compileFile(t, dir, yaml)
	if err != nil {
		t.Fatal(err)
	}
	g1.BindAt["127.0.0.1:8443"].QUIC.Shards = 1 // no steering at startup
	running := map[string]unitSpec{}
	for _, us := range unitSpecs(g1) {
		running[us.key] = us
	}
	g2, _ := compileFile(t, dir, yaml)
	if notes := reloadShards(g2, running); len(notes) != 0 {
		t.Errorf("notes for a kept bind: %q", notes)
	}
	if n := g2.BindAt["127.0.0.1:8443"].QUIC.Shards; n != 1 {
		t.Errorf("a kept bind runs 1 shard, the new graph says %d", n)
	}
	d, err := diffUnits(running, unitSpecs(g2))
	if err != nil || len(d.keep) != 3 {
		t.Errorf("the same file with fewer shards running than configured: %+v, %v", d, err)
	}

	g3, _ := compileFile(t, dir, yaml)
	notes := reloadShards(g3, map[string]unitSpec{})
	if n := g3.BindAt["127.0.0.1:8443"].QUIC.Shards; n != 1 {
		t.Errorf("HTTP/3 added by a reload gets %d shards, want 1", n)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "one shard instead of 2") || !strings.Contains(notes[0], "restart") {
		t.Errorf("notes = %q, want one saying one shard instead of 2 and to restart", notes)
	}
	if specs := g3.Frontends[0].Binds[1].UDPSpecs(); len(specs) != 1 || specs[0].Shards != 1 {
		t.Errorf("udp specs of an added HTTP/3 bind: %+v", specs)
	}
}
