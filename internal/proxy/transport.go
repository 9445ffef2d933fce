package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// Upstream is how a backend's HTTP requests reach its servers. The
// configuration's defaults are filled in by the compile step; here a zero
// value means none or the standard library's, as each field says.
type Upstream struct {
	// Protocol is http1 (also ""), h2c, h2 (TLS only) or auto (TLS:
	// HTTP/2 by ALPN when the server offers it, else HTTP/1.1).
	Protocol string
	// TLS, when set, connects over TLS with this client configuration
	// (trusted roots, server name, verification).
	TLS *tls.Config
	// ServerTimeout bounds the wait for response headers after the request
	// was sent. 0: no bound.
	ServerTimeout time.Duration
	// IdleTimeout closes pooled connections idle this long. 0: never.
	IdleTimeout time.Duration
	// MaxConnsPerServer caps the connections to each server, in use,
	// being dialed or idle; a request that would need one more waits for
	// one to come back. 0: no cap. NewBackend sets it to the largest
	// max_conns of its servers: those bound the requests in flight, and
	// this keeps a response's connection, returned to the pool a moment
	// after the response ended, from being replaced by a new one.
	MaxConnsPerServer int
	// MaxIdlePerServer is how many idle keep-alive connections are pooled
	// per server; the compile step gives a server's default max_conns, so
	// that the connections a burst opened are kept for the next one
	// instead of being closed and dialed again. 0: net/http's default (2).
	MaxIdlePerServer int
}

// newTransport builds the pooled connection manager of one backend.
// connectTimeout bounds the TCP connect and the TLS handshake (0: no
// bound but the system's). Dial and handshake failures come back as
// *dialError, so that the round trip knows the request never left. onConnect, when set, runs on every new
// connection right after the TCP connect and before any TLS handshake (to
// send a PROXY header); it closes the connection when it fails, and what
// it returns is the connection used from then on.
func newTransport(u Upstream, connectTimeout time.Duration, onConnect func(net.Conn) (net.Conn, error)) *http.Transport {
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	connect := func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, newDialError(err, start, connectTimeout)
		}
		if lg := logFrom(ctx); lg != nil {
			lg.connect.Store(int64(time.Since(start)))
		}
		if onConnect != nil {
			return onConnect(c)
		}
		return c, nil
	}
	protocols := new(http.Protocols)
	switch u.Protocol {
	case "h2c":
		protocols.SetUnencryptedHTTP2(true)
	case "h2":
		protocols.SetHTTP2(true)
	case "auto":
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
	default:
		protocols.SetHTTP1(true)
	}
	t := &http.Transport{
		Proxy:                 nil, // never take HTTP_PROXY from the environment
		MaxIdleConnsPerHost:   u.MaxIdlePerServer,
		MaxConnsPerHost:       u.MaxConnsPerServer,
		IdleConnTimeout:       u.IdleTimeout,
		ResponseHeaderTimeout: u.ServerTimeout,
		DisableCompression:    true, // pass Accept-Encoding through untouched
		Protocols:             protocols,
		DialContext:           connect,
	}
	if u.TLS != nil {
		conf := u.TLS.Clone()
		switch u.Protocol {
		case "h2":
			conf.NextProtos = []string{"h2"}
		case "auto":
			conf.NextProtos = []string{"h2", "http/1.1"}
		default:
			conf.NextProtos = []string{"http/1.1"}
		}
		t.TLSClientConfig = conf
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			start := time.Now()
			if connectTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, connectTimeout)
				defer cancel()
			}
			raw, err := connect(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := conf
			if c.ServerName == "" {
				c = conf.Clone()
				c.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(raw, c)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, newDialError(err, start, connectTimeout)
			}
			if lg := logFrom(ctx); lg != nil {
				lg.connect.Store(int64(time.Since(start))) // with the handshake
			}
			return tc, nil
		}
	}
	return t
}
