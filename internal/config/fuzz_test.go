package config

import (
	"os"
	"path/filepath"
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
	frontends := map[string]bool{}
	bound := map[string]bool{}
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
		for _, b := range fe.Bind {
			if b == nil {
				t.Fatalf("nil bind in frontend %q", fe.Name)
			}
			if canon, err := ListenAddress(b.Address); err != nil || canon != b.Address {
				t.Errorf("accepted bind address %q, canonical %q, %v", b.Address, canon, err)
			}
			if bound[b.Address] {
				t.Errorf("accepted address %s twice", b.Address)
			}
			bound[b.Address] = true
			if b.HTTP3 && b.TLS == nil {
				t.Errorf("accepted http3 without tls")
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
		for _, r := range fe.Routes {
			if r == nil {
				t.Fatalf("nil route in frontend %q", fe.Name)
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
		}
	}
}
