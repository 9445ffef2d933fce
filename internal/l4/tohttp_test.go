package l4

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
	"github.com/portcullis/portcullis/internal/hostname"
)

func TestTCPToHTTP(t *testing.T) {
	for _, withProxy := range []bool{false, true} {
		t.Run(fmt.Sprint("accept_proxy=", withProxy), func(t *testing.T) {
			pass := startTLSServer(t, "pass", nil, "pass.test")
			termCert, termLeaf := selfSigned(t, "term.test")
			log, logs := testLog()
			ln := listen(t)
			h := accept.NewListener(ln.Addr())
			if h.Addr() != ln.Addr() {
				t.Errorf("Addr %v, want %v", h.Addr(), ln.Addr())
			}
			tab := NewTable([]Route{{SNI: hostname.MustParsePattern("pass.test"), Backend: newFakeBackend(pass.addr).Backend, BackendName: "pass"}})
			p := &TCP{Frontend: "mixed", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log, ToHTTP: h, AcceptProxy: withProxy, Trusted: loopback}
			go acceptLoop(p, nil).Serve(ln)
			t.Cleanup(func() { ln.Close(); p.Shutdown(context.Background()) })

			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					fmt.Fprintf(w, "%s %s %s from %s to %s", r.TLS.ServerName, r.Proto, r.URL.Path, r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey))
				}),
				TLSConfig: &tls.Config{Certificates: []tls.Certificate{termCert}},
			}
			served := make(chan error, 1)
			go func() { served <- srv.ServeTLS(h, "", "") }()

			var clientAddr net.Addr
			roots := x509.NewCertPool()
			roots.AddCert(termLeaf)
			client := &http.Client{Timeout: bound(), Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: roots},
				ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					c, err := net.Dial("tcp4", ln.Addr().String())
					if err == nil && withProxy {
						_, err = c.Write(mustHeader(t, 2, headerSrc, headerDst))
					}
					if err == nil {
						clientAddr = c.LocalAddr()
					}
					return c, err
				},
			}}
			t.Cleanup(client.CloseIdleConnections)
			resp, err := client.Get("https://term.test/hello")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			from, to := clientAddr.String(), ln.Addr().String()
			if withProxy {
				from, to = headerSrc.String(), headerDst.String()
			}
			if want := "term.test HTTP/2.0 /hello from " + from + " to " + to; string(body) != want {
				t.Errorf("terminated request answered %q, want %q", body, want)
			}

			// The passthrough name on the same port still goes through.
			if !withProxy {
				if _, line, err := tlsDial(t, ln.Addr().String(), "pass.test", nil, pass.cert); err != nil || line != "pass " {
					t.Errorf("pass.test: %q, %v", line, err)
				}
			}

			// Once the http.Server is shut down, ToHTTP is closed and
			// the names it served are closed at once.
			client.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), bound())
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("ServeTLS: %v", err)
			}
			if _, err := client.Get("https://term.test/again"); err == nil {
				t.Error("a request after the Shutdown was answered")
			}
			waitFor(t, "the refusal logged", func() bool {
				return len(logLines(logs, "level=INFO", "listener for names without a passthrough route is closed")) >= 1
			})
		})
	}
}

func TestTCPToHTTPOnlyTLS(t *testing.T) {
	// Without a route for it, a connection that is not TLS is closed, not
	// given to ToHTTP.
	log, logs := testLog()
	ln := listen(t)
	h := accept.NewListener(ln.Addr())
	t.Cleanup(func() { h.Close() })
	p := &TCP{Frontend: "mixed", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return NewTable(nil) }, Log: log, ToHTTP: h}
	go acceptLoop(p, nil).Serve(ln)
	c := dial(t, ln.Addr().String())
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
		t.Errorf("read %d bytes, %v; want the connection closed", n, err)
	}
	waitFor(t, "a warning", func() bool { return len(logLines(logs, "level=WARN", "no route matches", "tls=false")) == 1 })
}

func TestReplayConn(t *testing.T) {
	ln := listen(t)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, " world")
			c.Close()
		}
	}()
	c := dial(t, ln.Addr().String())
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1}
	rc := &replayConn{Conn: c, prefix: []byte("hello"), remote: remote, local: headerDst}
	b, err := io.ReadAll(readerOnly{rc, 2})
	if err != nil || string(b) != "hello world" {
		t.Errorf("read %q, %v", b, err)
	}
	if rc.RemoteAddr() != remote || rc.LocalAddr() != headerDst {
		t.Errorf("addresses %v → %v", rc.RemoteAddr(), rc.LocalAddr())
	}
}

// readerOnly reads through r in reads of at most n bytes.
type readerOnly struct {
	r io.Reader
	n int
}

func (r readerOnly) Read(b []byte) (int, error) { return r.r.Read(b[:min(len(b), r.n)]) }

// TestTCPRouting checks the accept loop's Pending: a connection counts while its ClientHello
// is awaited and while it waits for ToHTTP to accept it, and
// no longer once it is relayed or given to ToHTTP.
func TestTCPRouting(t *testing.T) {
	pass := startTLSServer(t, "pass", nil, "pass.test")
	ln := listen(t)
	h := accept.NewListener(ln.Addr())
	tab := NewTable([]Route{{SNI: hostname.MustParsePattern("pass.test"), Backend: newFakeBackend(pass.addr).Backend, BackendName: "pass"}})
	p := &TCP{Frontend: "mixed", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, ToHTTP: h}
	loop := acceptLoop(p, nil)
	go loop.Serve(ln)
	t.Cleanup(func() { ln.Close(); h.Close(); p.Shutdown(context.Background()) })
	if n := loop.Pending(); n != 0 {
		t.Fatalf("Pending() = %d before any connection", n)
	}

	// A connection that sends nothing yet.
	c := dial(t, ln.Addr().String())
	waitFor(t, "one connection awaiting its ClientHello", func() bool { return loop.Pending() == 1 })

	// A passthrough connection is routed once its ClientHello is read.
	if _, line, err := tlsDial(t, ln.Addr().String(), "pass.test", nil, pass.cert); err != nil || line != "pass " {
		t.Fatalf("pass.test: %q, %v", line, err)
	}
	if n := loop.Pending(); n != 1 {
		t.Errorf("Pending() = %d after a relayed connection, want 1 (the silent one)", n)
	}

	// A connection for ToHTTP counts until its listener accepts it.
	tc := tls.Client(c, &tls.Config{ServerName: "term.test", InsecureSkipVerify: true})
	go tc.Handshake()
	time.Sleep(50 * time.Millisecond)
	if n := loop.Pending(); n != 1 {
		t.Errorf("Pending() = %d while a connection waits for ToHTTP to accept it, want 1", n)
	}
	got, err := h.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	waitFor(t, "no connection left to route", func() bool { return loop.Pending() == 0 })
}
