package runtime

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// TestTLSSessionResumption checks that clients resume TLS sessions (RFC
// 8446 §2.2, RFC 5077) although every handshake gets its certificates from
// a tls.Config that GetConfigForClient returns: crypto/tls then encrypts
// tickets with the keys of the server's own Config (Config.ticketKeys),
// which the serving set keeps across reloads, so resumption survives a
// reload too.
func TestTLSSessionResumption(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "default.test")
	writeCert(t, dir, "other.test", "*.other.test")
	g1, err := compileFile(t, dir, twoCerts)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := compileFile(t, dir, twoCerts) // a reload of the same file
	if err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:8443"
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			s := &serving{}
			s.graph.Store(g1)
			// http.Server.ServeTLS clones its TLSConfig once and serves
			// every connection with the clone.
			conf := s.tlsConfig(addr).Clone()
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
			cache := tls.NewLRUClientSessionCache(4)
			dial := func() bool {
				t.Helper()
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: scaledTimeout()}, "tcp", l.Addr().String(), &tls.Config{
					ServerName: "www.other.test", InsecureSkipVerify: true,
					MinVersion: version, MaxVersion: version, ClientSessionCache: cache,
				})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(scaledTimeout()))
				// Reading the server's byte makes the client take the TLS
				// 1.3 NewSessionTicket sent after the handshake.
				if _, err := c.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				return c.ConnectionState().DidResume
			}
			if dial() {
				t.Fatal("the first handshake resumed a session")
			}
			if !dial() {
				t.Error("the second handshake did not resume the session")
			}
			s.graph.Store(g2)
			if !dial() {
				t.Error("after a reload, the handshake did not resume the session")
			}
		})
	}
}

func scaledTimeout() time.Duration { return testutil.Scaled(10 * time.Second) }
