package compile

import (
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/testutil"
)

// The layer-4 timeouts have their defaults in the configuration only:
// compile passes them on whole, and an http frontend's sni passthrough
// routes, which have no idle_timeout of their own, get the tcp default.
func TestL4TimeoutsFromConfiguration(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "web.test")
	g, err := compileFile(t, dir, `frontends:
  web:
    bind:
      - address: 127.0.0.1:8443
        tls:
          certificates:
            - cert: web.test.pem
              key: web.test.key
    routes:
      - sni: pass.test
        backend: app
      - backend: app
  db:
    mode: tcp
    bind:
      - address: 127.0.0.1:5432
      - address: 127.0.0.1:5433
        proxy_timeout: 2s
    routes:
      - backend: app
  kept:
    mode: tcp
    idle_timeout: 1h
    bind:
      - address: 127.0.0.1:5434
    routes:
      - backend: app
  dns:
    mode: udp
    bind:
      - address: 127.0.0.1:5353
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		address      string
		header, idle time.Duration
	}{
		{"127.0.0.1:8443", config.DefaultProxyTimeout, config.DefaultTCPIdleTimeout},
		{"127.0.0.1:5432", config.DefaultProxyTimeout, config.DefaultTCPIdleTimeout},
		{"127.0.0.1:5433", 2 * time.Second, config.DefaultTCPIdleTimeout},
		{"127.0.0.1:5434", config.DefaultProxyTimeout, time.Hour},
	} {
		b := g.BindAt[c.address]
		if b == nil || b.L4 == nil {
			t.Errorf("bind %s: no layer-4 side", c.address)
			continue
		}
		if b.L4.HeaderTimeout != c.header || b.L4.IdleTimeout != c.idle {
			t.Errorf("bind %s: header timeout %v, idle timeout %v; want %v, %v", c.address, b.L4.HeaderTimeout, b.L4.IdleTimeout, c.header, c.idle)
		}
	}
	if r := g.RelayAt["127.0.0.1:5353"]; r == nil || r.IdleTimeout != config.DefaultUDPIdleTimeout {
		t.Errorf("udp relay %+v, want idle timeout %v", r, config.DefaultUDPIdleTimeout)
	}
}
