package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPKI is a test CA and a server certificate it signed for localhost,
// api.example.test and 127.0.0.1, made once per test binary.
type testPKI struct {
	caPEM, certPEM, keyPEM string
	pool                   *x509.CertPool
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
)

func getPKI(t *testing.T) testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pki
}

func makePKI() (testPKI, error) {
	var p testPKI
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "portcullis test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return p, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost", "api.example.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return p, err
	}
	p.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	p.keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p, nil
}

// site is a directory (mode 0755) with a configuration, the server
// certificate and key, and the CA certificate for clients.
type site struct {
	dir    string
	config string // the configuration file
	ca     string // the CA certificate, for curl --cacert
	key    string // the server's private key
	pool   *x509.CertPool
}

// siteOptions shape the configuration, which is the example of the issue
// with the upstreams' real addresses.
type siteOptions struct {
	// User adds global.user nobody and global.group nogroup (started as
	// root).
	User bool
	// PrivateKey makes the key file mode 0600, owned by root; otherwise it
	// is readable by anybody (for portcullis started unprivileged).
	PrivateKey bool
	// FDNames sets fd_name on the port 80 bind and fd_name and
	// fd_name_udp on the port 443 bind.
	FDNames *fdNames
	// App and API are the upstream addresses of backends app (two
	// servers) and api.
	App [2]string
	API string
	// Grace is global.grace; default 5s.
	Grace string
}

type fdNames struct{ HTTP, HTTPS, QUIC string }

func newSite(t *testing.T, opt siteOptions) *site {
	t.Helper()
	p := getPKI(t)
	s := &site{dir: sharedDir(t), pool: p.pool}
	s.config = filepath.Join(s.dir, "portcullis.yaml")
	s.ca = filepath.Join(s.dir, "ca.pem")
	s.key = filepath.Join(s.dir, "site.key")
	writeFile(t, s.ca, p.caPEM, 0o644)
	writeFile(t, filepath.Join(s.dir, "site.pem"), p.certPEM, 0o644)
	keyPerm := os.FileMode(0o644)
	if opt.PrivateKey {
		keyPerm = 0o600
	}
	writeFile(t, s.key, p.keyPEM, keyPerm)
	if err := os.Chown(s.key, 0, 0); err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.config, exampleConfig(opt), 0o644)
	return s
}

// exampleConfig is the configuration of the issue, with the options.
func exampleConfig(opt siteOptions) string {
	var b strings.Builder
	grace := opt.Grace
	if grace == "" {
		grace = "5s"
	}
	b.WriteString("global:\n")
	if opt.User {
		b.WriteString("  user: nobody\n  group: nogroup\n")
	}
	fmt.Fprintf(&b, "  grace: %s\n", grace)
	b.WriteString("frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:80\n")
	if opt.FDNames != nil {
		fmt.Fprintf(&b, "        fd_name: %s\n", opt.FDNames.HTTP)
	}
	b.WriteString("      - address: 127.0.0.1:443\n")
	if opt.FDNames != nil {
		fmt.Fprintf(&b, "        fd_name: %s\n        fd_name_udp: %s\n", opt.FDNames.HTTPS, opt.FDNames.QUIC)
	}
	b.WriteString(`        tls:
          certificates:
            - cert: site.pem
              key: site.key
        http3: true
    routes:
      - host: api.example.test
        path_prefix: /v1/
        backend: api
      - backend: app
backends:
  app:
    servers:
`)
	fmt.Fprintf(&b, "      - address: %s\n      - address: %s\n", opt.App[0], opt.App[1])
	fmt.Fprintf(&b, "  api:\n    servers:\n      - address: %s\n", opt.API)
	return b.String()
}

// upstream is an HTTP server in the test process that portcullis proxies
// to.
type upstream struct {
	name string
	addr string
	mu   sync.Mutex
	seen []http.Header // request headers, in arrival order
}

// startUpstream serves h on 127.0.0.1:0, or, when h is nil, a handler
// that answers "upstream: NAME" and echoes the request.
func startUpstream(t *testing.T, name string, h http.Handler) *upstream {
	t.Helper()
	u := &upstream{name: name}
	if h == nil {
		h = http.HandlerFunc(u.echo)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

// echo answers with the upstream's name, then the request's method, path,
// host and headers, one per line.
func (u *upstream) echo(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	u.seen = append(u.seen, r.Header.Clone())
	u.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: %s\nmethod: %s\npath: %s\nhost: %s\n", u.name, r.Method, r.URL.Path, r.Host)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "header %s: %s\n", k, v)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, b.String())
}

// upstreams are the three servers of the example configuration.
type upstreams struct {
	app1, app2, api *upstream
}

func startUpstreams(t *testing.T) *upstreams {
	t.Helper()
	return &upstreams{
		app1: startUpstream(t, "app-1", nil),
		app2: startUpstream(t, "app-2", nil),
		api:  startUpstream(t, "api", nil),
	}
}

// options fills the upstream addresses into o.
func (u *upstreams) options(o siteOptions) siteOptions {
	o.App = [2]string{u.app1.addr, u.app2.addr}
	o.API = u.api.addr
	return o
}

// readString reads a whole file.
func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
