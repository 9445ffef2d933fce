package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// startProxy serves the proxy in front of backend on 127.0.0.1:0 and
// returns its address.
func startProxy(t *testing.T, backend string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveProxy(t, ln, backend)
}

func serveProxy(t *testing.T, ln net.Listener, backend string) string {
	t.Helper()
	srv := newServer(newProxy(backend, true, log.New(io.Discard, "", 0)), log.New(io.Discard, "", 0))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// roundTrip sends raw on conn and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestRequestHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		got <- h
	}))
	t.Cleanup(backend.Close)
	addr := startProxy(t, backend.Listener.Addr().String())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c), "GET /a?b=c HTTP/1.1\r\nHost: example.test\r\n"+
		"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n"+
		"Upgrade: foo\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Port: 1\r\nx-forwarded-server: evil\r\n"+
		"Forwarded: for=6.6.6.6\r\nVia: 1.0 earlier\r\nX-Kept: yes\r\nCookie: a=\"q\"; b=c\r\n\r\n")
	h := <-got
	for _, k := range []string{"Connection", "X-Private", "Keep-Alive", "Upgrade", "Proxy-Authorization", "X-Forwarded-Port", "X-Forwarded-Server"} {
		if v, ok := h[k]; ok {
			t.Errorf("%s reached the backend: %q", k, v)
		}
	}
	want := map[string]string{
		"Host":              "example.test",
		"X-Kept":            "yes",
		"Te":                "trailers",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "example.test",
		"Forwarded":         "for=127.0.0.1;host=example.test;proto=http",
		"Via":               "1.0 earlier, 1.1 portcullis",
		// As sent: fasthttp re-serializes a Cookie header it has parsed,
		// dropping values it finds invalid (quoted ones).
		"Cookie": `a="q"; b=c`,
	}
	for k, v := range want {
		if g := strings.Join(h.Values(k), "|"); g != v {
			t.Errorf("%s: got %q, want %q", k, g, v)
		}
	}
}

func TestResponse(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			// The backend closes its connection: the client's stays.
			w.Header().Set("Connection", "close, X-Private")
			w.Header().Set("X-Private", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			io.WriteString(w, "closing\n")
		case "/big":
			// Chunked (no Content-Length), larger than any buffer.
			w.(http.Flusher).Flush()
			w.Write(bytes.Repeat([]byte("x"), 5<<20))
		case "/echo":
			io.Copy(w, r.Body)
		}
	}))
	t.Cleanup(backend.Close)
	addr := startProxy(t, backend.Listener.Addr().String())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)

	resp, body := roundTrip(t, c, br, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
	if string(body) != "closing\n" || resp.Close {
		t.Errorf("/close: body %q, client connection closed: %v", body, resp.Close)
	}
	for _, k := range []string{"X-Private", "Keep-Alive"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("%s reached the client: %q", k, v)
		}
	}
	if v := resp.Header.Get("Via"); v != "1.1 portcullis" {
		t.Errorf("Via: %q", v)
	}

	// Same client connection, a new backend connection.
	_, body = roundTrip(t, c, br, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if len(body) != 5<<20 {
		t.Errorf("/big: %d bytes, want %d", len(body), 5<<20)
	}
	_, body = roundTrip(t, c, br, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if string(body) != "hello" {
		t.Errorf("/echo: %q", body)
	}
	_, body = roundTrip(t, c, br, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
	if string(body) != "abcde" {
		t.Errorf("/echo chunked: %q", body)
	}
}

func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	addr := startProxy(t, dead)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
}

// TestTLS: a request over TLS reaches the plain backend (HostClient
// refuses an https URI toward a plain server unless the proxy rewrites
// it) and says so in X-Forwarded-Proto and Forwarded.
func TestTLS(t *testing.T) {
	got := make(chan http.Header, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	t.Cleanup(backend.Close)
	// Borrow httptest's certificate.
	certSrv := httptest.NewTLSServer(http.NotFoundHandler())
	cert := certSrv.TLS.Certificates[0]
	certSrv.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	addr := serveProxy(t, ln, backend.Listener.Addr().String())
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", p)
	}
	h := <-got
	if g := h.Get("X-Forwarded-Proto"); g != "https" {
		t.Errorf("X-Forwarded-Proto %q", g)
	}
	if g := h.Get("Forwarded"); g != "for=127.0.0.1;host=example.test;proto=https" {
		t.Errorf("Forwarded %q", g)
	}
}
