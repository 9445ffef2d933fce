package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that a rejected input
// gets a well-formed ErrorList, and that an accepted one holds what the
// runtime relies on without checking again.
func FuzzParse(f *testing.F) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "golden", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(example))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("frontends: &f {web: {bind: [{address: ':80'}], routes: [{backend: b}]}}\nbackends: {b: {servers: [{address: 'x:1'}]}}\nx: *f\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		const file = "fuzz.yaml"
		cfg, err := Parse(file, "/etc/portcullis", data)
		if err != nil {
			// A partial configuration may come with the error, for
			// Join; it is never served, so nothing is checked in it.
			checkErrorList(t, file, err)
			return
		}
		checkValid(t, cfg)
	})
}

// checkValid checks the promises of a configuration that Parse accepted.
func checkValid(t *testing.T, cfg *Config) {
	t.Helper()
	if cfg.Global.Grace <= 0 {
		t.Errorf("accepted grace %v", cfg.Global.Grace)
	}
	if cfg.Global.Group != "" && cfg.Global.User == "" {
		t.Errorf("accepted a group without a user")
	}
	if len(cfg.Frontends) == 0 {
		t.Errorf("accepted a configuration without frontends")
	}
	backends := map[string]bool{}
	for _, b := range cfg.Backends {
		if b == nil {
			t.Fatalf("nil backend")
		}
		if backends[b.Name] {
			t.Errorf("accepted backend %q twice", b.Name)
		}
		backends[b.Name] = true
		if len(b.Servers) == 0 {
			t.Errorf("accepted backend %q without servers", b.Name)
		}
		for _, s := range b.Servers {
			if s == nil || serverAddress(s.Address) != nil {
				t.Errorf("accepted a bad server in backend %q", b.Name)
			}
		}
	}
	uses := cfg.backendUses()
	for _, b := range cfg.Backends {
		checkValidBackend(t, b, uses[b.Name])
	}
	frontends := map[string]bool{}
	bound := map[socket]bool{}
	for _, fe := range cfg.Frontends {
		if fe == nil {
			t.Fatalf("nil frontend")
		}
		if frontends[fe.Name] {
			t.Errorf("accepted frontend %q twice", fe.Name)
		}
		frontends[fe.Name] = true
		if len(fe.Bind) == 0 || len(fe.Routes) == 0 {
			t.Errorf("accepted frontend %q without binds or routes", fe.Name)
		}
		layer4 := fe.Mode == ModeTCP || fe.Mode == ModeUDP
		if !slices.Contains(modeNames, fe.Mode) {
			t.Errorf("accepted mode %q", fe.Mode)
		}
		if layer4 != (fe.IdleTimeout > 0) {
			t.Errorf("accepted idle_timeout %v in %s mode", fe.IdleTimeout, fe.Mode)
		}
		if fe.Mode == ModeUDP && len(fe.Routes) != 1 {
			t.Errorf("accepted a udp frontend with %d routes", len(fe.Routes))
		}
		for _, b := range fe.Bind {
			if b == nil {
				t.Fatalf("nil bind in frontend %q", fe.Name)
			}
			if canon, err := ListenAddress(b.Address); err != nil || canon != b.Address {
				t.Errorf("accepted bind address %q, canonical %q, %v", b.Address, canon, err)
			}
			networks := map[string][]string{ModeHTTP: {"tcp"}, ModeTCP: {"tcp"}, ModeUDP: {"udp"}}[fe.Mode]
			if b.HTTP3 {
				networks = append(networks, "udp")
			}
			for _, n := range networks {
				if bound[socket{n, b.Address}] {
					t.Errorf("accepted %s address %s twice", n, b.Address)
				}
				bound[socket{n, b.Address}] = true
			}
			if b.HTTP3 && b.TLS == nil {
				t.Errorf("accepted http3 without tls")
			}
			if layer4 && (b.TLS != nil || b.HTTP3 || b.QUIC != nil || b.FDNameUDP != "") {
				t.Errorf("accepted tls, http3, quic or fd_name_udp on a %s bind", fe.Mode)
			}
			if b.AcceptProxy == (len(b.TrustedProxies) == 0) || b.AcceptProxy && fe.Mode == ModeUDP {
				t.Errorf("accepted accept_proxy %v with %d trusted_proxies in %s mode", b.AcceptProxy, len(b.TrustedProxies), fe.Mode)
			}
			for _, s := range b.TrustedProxies {
				if p, err := netip.ParsePrefix(s); err != nil || p.String() != s {
					t.Errorf("accepted trusted_proxies entry %q, not a canonical prefix", s)
				}
			}
			if (fe.Mode == ModeUDP) != (b.ProxyTimeout == 0) || b.ProxyTimeout < 0 {
				t.Errorf("accepted proxy_timeout %v in %s mode", b.ProxyTimeout, fe.Mode)
			}
			if b.TLS != nil {
				if len(b.TLS.Certificates) == 0 {
					t.Errorf("accepted tls without certificates")
				}
				for _, c := range b.TLS.Certificates {
					if c == nil || c.Cert == "" || c.Key == "" {
						t.Errorf("accepted a certificate without cert or key")
					}
				}
			}
		}
		for i, r := range fe.Routes {
			if r == nil {
				t.Fatalf("nil route in frontend %q", fe.Name)
			}
			if fe.Mode == ModeTCP && r.SNI == "" && i != len(fe.Routes)-1 {
				t.Errorf("accepted a tcp route without sni before others")
			}
			if !backends[r.Backend] {
				t.Errorf("accepted a route to unknown backend %q", r.Backend)
			}
			if r.Host != "" {
				if h, err := HostPattern(r.Host); err != nil || h != r.Host {
					t.Errorf("accepted host %q (canonical %q, %v)", r.Host, h, err)
				}
			}
			if r.PathPrefix != "" && r.PathPrefix[0] != '/' {
				t.Errorf("accepted path_prefix %q", r.PathPrefix)
			}
			if r.SNI != "" {
				if s, err := SNIPattern(r.SNI); err != nil || s != r.SNI {
					t.Errorf("accepted sni %q (canonical %q, %v)", r.SNI, s, err)
				}
			}
			if len(r.ALPN) > 0 && r.SNI == "" || slices.Contains(r.ALPN, "") {
				t.Errorf("accepted alpn %q with sni %q", r.ALPN, r.SNI)
			}
			if (layer4 || r.SNI != "") && (r.Host != "" || r.PathPrefix != "") {
				t.Errorf("accepted host or path_prefix on a %s route with sni %q", fe.Mode, r.SNI)
			}
			if fe.Mode == ModeUDP && r.SNI != "" {
				t.Errorf("accepted sni on a udp route")
			}
		}
	}
}

// checkValidBackend checks the promises of an accepted backend that the
// frontends using it (uses) rely on.
func checkValidBackend(t *testing.T, b *Backend, uses []backendUse) {
	t.Helper()
	if hc := b.HealthCheck; hc != nil {
		if !slices.Contains([]string{"http", "tcp", "udp"}, hc.Type) {
			t.Errorf("accepted health_check type %q", hc.Type)
		}
		if hc.Port < 0 || hc.Port > 65535 {
			t.Errorf("accepted health_check port %d", hc.Port)
		}
		if hc.Timeout <= 0 || hc.Timeout >= hc.Interval {
			t.Errorf("accepted health_check timeout %v with interval %v", hc.Timeout, hc.Interval)
		}
	}
	udp := usedBy(uses, ModeUDP) != nil
	for _, s := range b.Servers {
		if s.SendProxy != "" && (s.SendProxy != "v1" && s.SendProxy != "v2" || udp) {
			t.Errorf("accepted send_proxy %q in backend %q", s.SendProxy, b.Name)
		}
	}
	for _, u := range uses {
		if u.passthrough && (b.TLS != nil || b.Sticky != nil || b.HashKey != "" && b.HashKey != "source") {
			t.Errorf("accepted tls, sticky or hash_key %q in backend %q of passthrough frontend %q", b.HashKey, b.Name, u.fe.Name)
		}
	}
}
