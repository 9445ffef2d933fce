package integration

// Helpers of the protocol and balancing tests (protocols_*_test.go): a
// portcullis configuration built from routes and backends, upstreams that
// record what they saw (protocol, TLS, headers, connections), and clients
// that reach portcullis on 127.0.0.1 whatever the URL's host.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxyRoute sends requests whose path starts with prefix to backend.
type proxyRoute struct{ prefix, backend string }

// backendYAML is one entry of the configuration's backends mapping:
// settings are "key: value" lines of the backend, servers are the inside
// of a flow mapping ("address: 127.0.0.1:8080, weight: 3").
func backendYAML(name string, settings []string, servers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n", name)
	for _, s := range settings {
		fmt.Fprintf(&b, "    %s\n", s)
	}
	b.WriteString("    servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "      - {%s}\n", s)
	}
	return b.String()
}

// serverYAML is the flow mapping of a server at addr with extra settings.
func serverYAML(addr string, extra ...string) string {
	return strings.Join(append([]string{"address: " + addr}, extra...), ", ")
}

// startProxy starts portcullis as root, switching to nobody, with frontend
// web on 127.0.0.1:80 (plain HTTP/1.1 and h2c) and 127.0.0.1:443 (TLS:
// HTTP/1.1 and HTTP/2; HTTP/3 on UDP), routing by path prefix, and the
// backends given (see backendYAML). The site's directory holds ca.pem,
// the test CA, which a backend's tls ca may name. It returns once portcullis is ready.
func startProxy(t *testing.T, routes []proxyRoute, backends ...string) (*site, *proc) {
	t.Helper()
	s := newSite(t, siteOptions{App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	var b strings.Builder
	b.WriteString(webFrontend)

	for _, r := range routes {
		fmt.Fprintf(&b, "      - path_prefix: %s\n        backend: %s\n", r.prefix, r.backend)
	}
	b.WriteString("backends:\n")
	for _, be := range backends {
		b.WriteString(be)
	}
	writeFile(t, s.config, b.String(), 0o644)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()
	return s, p
}

// testUpstream is an HTTP server in the test process that records every
// request and counts the connections it accepted.
type testUpstream struct {
	name  string
	addr  string
	srv   *http.Server
	conns atomic.Int64
	hits  atomic.Int64

	mu   sync.Mutex
	seen []seenRequest
}

// seenRequest is what an upstream saw of one request.
type seenRequest struct {
	protoMajor int
	tls        bool
	sni, alpn  string
	header     http.Header
}

// upstreamOptions say how a testUpstream serves.
type upstreamOptions struct {
	// h2c also accepts HTTP/2 without TLS (prior knowledge).
	h2c bool
	// tls serves TLS with the test certificate, offering h2 and http/1.1
	// by ALPN (only http/1.1 with h1Only).
	tls, h1Only bool
	// handler answers; nil: header X-Upstream and body the upstream's name.
	handler http.Handler
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newUpstream(t *testing.T, name string, opt upstreamOptions) *testUpstream {
	t.Helper()
	u := &testUpstream{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	h := opt.handler
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Upstream", name)
			io.WriteString(w, name+"\n")
		})
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(opt.h2c)
	protocols.SetHTTP2(opt.tls && !opt.h1Only)
	u.srv = &http.Server{
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sr := seenRequest{protoMajor: r.ProtoMajor, tls: r.TLS != nil, header: r.Header.Clone()}
			if r.TLS != nil {
				sr.sni, sr.alpn = r.TLS.ServerName, r.TLS.NegotiatedProtocol
			}
			u.mu.Lock()
			u.seen = append(u.seen, sr)
			u.mu.Unlock()
			u.hits.Add(1)
			h.ServeHTTP(w, r)
		}),
	}
	cl := countingListener{ln, &u.conns}
	if opt.tls {
		u.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCertificate(t)}}
		go u.srv.ServeTLS(cl, "", "")
	} else {
		go u.srv.Serve(cl)
	}
	t.Cleanup(u.stop)
	return u
}

// stop closes the upstream's listener and connections: new connections
// are refused.
func (u *testUpstream) stop() { u.srv.Close() }

// requests returns what the upstream saw so far.
func (u *testUpstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// last returns the last request the upstream saw; it fails the test if
// there was none.
func (u *testUpstream) last(t *testing.T) seenRequest {
	t.Helper()
	seen := u.requests()
	if len(seen) == 0 {
		t.Fatalf("upstream %s saw no request", u.name)
	}
	return seen[len(seen)-1]
}

// testCertificate is the test PKI's server certificate for localhost,
// api.example.test and 127.0.0.1.
func testCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	p := getPKI(t)
	cert, err := tls.X509KeyPair([]byte(p.certPEM), []byte(p.keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// toLoopback dials 127.0.0.1 at the port of addr, whatever its host.
func toLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

// proxyClient is a client of portcullis: http:// URLs go to 127.0.0.1:80
// over HTTP/1.1, https:// URLs to 127.0.0.1:443 over TLS (trusting the
// test CA) with HTTP/2 when h2, else HTTP/1.1. Idle connections are closed
// when the test ends.
func proxyClient(t *testing.T, s *site, h2 bool) *http.Client {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(!h2)
	protocols.SetHTTP2(h2)
	tr := &http.Transport{
		Proxy:           nil,
		DialContext:     toLoopback,
		TLSClientConfig: &tls.Config{RootCAs: s.pool},
		Protocols:       protocols,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: scaled(10 * time.Second)}
}

// fetch sends a request and returns the response with its body read; it
// fails the test on a transport error.
func fetchURL(t *testing.T, c *http.Client, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(body)
}

// upstreamOf fetches url and returns the name of the upstream that
// answered (its X-Upstream header); it fails the test unless the status
// is 200.
func upstreamOf(t *testing.T, c *http.Client, url string, header http.Header) string {
	t.Helper()
	resp, body := fetchURL(t, c, http.MethodGet, url, header)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200: %s", url, resp.StatusCode, body)
	}
	return resp.Header.Get("X-Upstream")
}
