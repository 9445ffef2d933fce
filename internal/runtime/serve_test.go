package runtime

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/testutil"
)

// TestTLSSessionResumption checks that clients resume TLS sessions (RFC
// 8446 §2.2, RFC 5077) although every handshake gets its certificates from
// a tls.Config that GetConfigForClient returns: crypto/tls then encrypts
// tickets with the keys of the server's own Config (Config.ticketKeys),
// which a listener kept by a reload keeps, so resumption survives a reload
// too.
func TestTLSSessionResumption(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	testutil.WriteCert(t, dir, "other.test", "*.other.test")
	g1, err := compileFile(t, dir, testutil.TwoCerts)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := compileFile(t, dir, testutil.TwoCerts) // a reload of the same file
	if err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:8443"
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			var cur atomic.Pointer[compile.Bind]
			cur.Store(g1.BindAt[addr])
			// http.Server.ServeTLS clones its TLSConfig once and serves
			// every connection with the clone.
			conf := tlsConfig(&cur).Clone()
			dial := ticketServer(t, conf, &tls.Config{MinVersion: version, MaxVersion: version})
			if dial() {
				t.Fatal("the first handshake resumed a session")
			}
			if !dial() {
				t.Error("the second handshake did not resume the session")
			}
			cur.Store(g2.BindAt[addr]) // what a reload does to a kept listener
			if !dial() {
				t.Error("after a reload, the handshake did not resume the session")
			}
		})
	}
}

// ticketServer serves TLS with conf on a loopback listener: each
// connection completes its handshake, gets one byte and is held until the
// client closes it. It returns a dial function that connects with client
// (ServerName www.other.test, a session cache shared by every dial) and
// reports whether the session was resumed.
func ticketServer(t *testing.T, conf, client *tls.Config) func() bool {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(scaledTimeout()))
				tc := tls.Server(c, conf)
				if tc.Handshake() != nil {
					return
				}
				tc.Write([]byte{1})
				io.Copy(io.Discard, tc)
			}()
		}
	}()
	client = client.Clone()
	client.ServerName, client.InsecureSkipVerify = "www.other.test", true
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	return func() bool {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: scaledTimeout()}, "tcp", l.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(scaledTimeout()))
		// Reading the server's byte makes the client take the TLS 1.3
		// NewSessionTicket sent after the handshake.
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().DidResume
	}
}

func scaledTimeout() time.Duration { return testutil.Scaled(10 * time.Second) }

// TestHTTP3SessionResumption checks that a client resumes its TLS session
// on new HTTP/3 connections, and still after a ticket key rotation (see
// tickets.Keys).
func TestHTTP3SessionResumption(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	testutil.WriteCert(t, dir, "other.test", "*.other.test")
	addr := freePort(t)
	yaml := strings.Replace(testutil.TwoCerts, "127.0.0.1:8443\n        http3: true", addr+"\n        http3: true\n        quic: {shards: 1}", 1)
	g, err := compileFile(t, dir, yaml)
	if err != nil {
		t.Fatal(err)
	}
	sockets, err := listen.Acquire(g.Specs(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := serve(g, sockets, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	cache := tls.NewLRUClientSessionCache(4)
	get := func() bool {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{ServerName: "default.test", InsecureSkipVerify: true, ClientSessionCache: cache}}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), scaledTimeout())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.TLS != nil && resp.TLS.DidResume
	}
	if get() {
		t.Fatal("the first connection resumed a session it cannot have")
	}
	for i := 0; i < 3; i++ {
		if !get() {
			t.Fatalf("connection %d did not resume the TLS session", i+2)
		}
	}
	s.tickets.Rotate() // a ticket issued before a rotation still resumes
	if !get() {
		t.Fatal("no resumption after a ticket key rotation")
	}
}
