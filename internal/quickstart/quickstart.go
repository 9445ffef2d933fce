// Package quickstart is the embedded configuration `portcullis run` uses
// without -c: two listeners in front of two in-process demo upstreams, with a
// self-signed certificate made at start.
package quickstart

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

//go:embed quickstart.yaml
var configTemplate string

// File is the name the embedded configuration has in messages.
const File = "quickstart.yaml"

// Quickstart is a running demo: its configuration, its certificate and its
// upstream servers.
type Quickstart struct {
	Config []byte
	files  map[string][]byte
	// Fingerprint is the certificate's SHA-256, colon-separated hex.
	Fingerprint string
	// Pin is the SHA-256 of the public key, base64, for curl --pinnedpubkey.
	Pin   string
	demos []*http.Server
}

// Start makes the certificate and starts the two demo upstreams on
// ephemeral loopback ports.
func Start() (*Quickstart, error) {
	q := &Quickstart{files: map[string][]byte{}}
	if err := q.makeCertificate(); err != nil {
		return nil, err
	}
	cfg := configTemplate
	for i, name := range []string{"demo-1", "demo-2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			q.Close()
			return nil, fmt.Errorf("quickstart: start demo upstream: %w", err)
		}
		srv := &http.Server{Handler: Demo(name), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		q.demos = append(q.demos, srv)
		cfg = strings.Replace(cfg, fmt.Sprintf("{{UPSTREAM%d}}", i+1), ln.Addr().String(), 1)
	}
	q.Config = []byte(cfg)
	return q, nil
}

// ReadFile serves the generated certificate and key by name.
func (q *Quickstart) ReadFile(name string) ([]byte, error) {
	if b, ok := q.files[filepath.Base(name)]; ok {
		return b, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// Close stops the demo upstreams.
func (q *Quickstart) Close() {
	for _, s := range q.demos {
		s.Close()
	}
}

// Instructions is what to try, printed at start.
func (q *Quickstart) Instructions() string {
	pin := "--pinnedpubkey sha256//" + q.Pin
	return fmt.Sprintf(`portcullis quickstart: two demo upstreams behind 127.0.0.1:8080 (HTTP/1.1, h2c) and 127.0.0.1:8443 (HTTPS, HTTP/2, HTTP/3)
self-signed certificate for localhost, 127.0.0.1, ::1 (made now, valid 7 days)
  SHA-256 fingerprint: %s
try:
  curl http://127.0.0.1:8080/
  curl --http2-prior-knowledge http://127.0.0.1:8080/
  curl -k %s --http1.1 https://127.0.0.1:8443/
  curl -k %s --http2 https://127.0.0.1:8443/
  curl -k %s --http3-only https://127.0.0.1:8443/    (needs a curl built with HTTP/3)
repeat a request to see round robin between demo-1 and demo-2; Ctrl-C stops
watch it: http://127.0.0.1:9100/stats (live), /metrics (Prometheus), /api/backends (JSON)
`, q.Fingerprint, pin, pin, pin)
}

func (q *Quickstart) makeCertificate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "portcullis quickstart"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	q.files["quickstart.pem"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	q.files["quickstart.key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	sum := sha256.Sum256(der)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	q.Fingerprint = strings.Join(hexes, ":")
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pin := sha256.Sum256(spki)
	q.Pin = base64.StdEncoding.EncodeToString(pin[:])
	return nil
}

// Demo is a demo upstream: it answers with its name, the protocol the
// client used to reach the proxy (from Via) and the headers it received.
func Demo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s answered %s %s\n", name, r.Method, r.URL.RequestURI())
		fmt.Fprintf(&b, "client protocol: %s\n", clientProtocol(r.Header.Get("Via")))
		b.WriteString("headers received:\n")
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "  Host: %s\n", r.Host)
		for _, k := range keys {
			for _, v := range r.Header[k] {
				fmt.Fprintf(&b, "  %s: %s\n", k, v)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(b.String()))
	})
}

// clientProtocol reads the first hop of Via: "2 portcullis" → "HTTP/2".
func clientProtocol(via string) string {
	first, _, _ := strings.Cut(via, ",")
	version, _, _ := strings.Cut(strings.TrimSpace(first), " ")
	if version == "" {
		return "unknown (no Via header)"
	}
	return "HTTP/" + version
}
