package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// Upstream is how a backend reaches its servers. Zero values take the
// defaults.
type Upstream struct {
	// Protocol is http1 (default), h2c, h2 (TLS only) or auto (TLS: HTTP/2
	// by ALPN when the server offers it, else HTTP/1.1).
	Protocol string
	// TLS, when set, connects over TLS with this client configuration
	// (trusted roots, server name, verification).
	TLS *tls.Config
	// ConnectTimeout bounds the TCP connect and the TLS handshake.
	// Default 5s.
	ConnectTimeout time.Duration
	// ServerTimeout bounds the wait for response headers after the request
	// was sent. Default 60s.
	ServerTimeout time.Duration
	// IdleTimeout closes pooled connections idle this long. Default 90s.
	IdleTimeout time.Duration
	// MaxConnsPerServer caps the connections to each server, in use,
	// being dialed or idle; a request that would need one more waits for
	// one to come back. 0: no cap. NewBackend sets it to the largest
	// max_conns of its servers: those bound the requests in flight, and
	// this keeps a response's connection, returned to the pool a moment
	// after the response ended, from being replaced by a new one.
	MaxConnsPerServer int
	// MaxIdlePerServer is how many idle keep-alive connections are pooled
	// per server. Default 1024, a server's default max_conns: the
	// connections a burst opened are kept for the next one instead of
	// being closed and dialed again.
	MaxIdlePerServer int
}

func (u *Upstream) setDefaults() {
	if u.Protocol == "" {
		u.Protocol = "http1"
	}
	if u.ConnectTimeout <= 0 {
		u.ConnectTimeout = 5 * time.Second
	}
	if u.ServerTimeout <= 0 {
		u.ServerTimeout = 60 * time.Second
	}
	if u.IdleTimeout <= 0 {
		u.IdleTimeout = 90 * time.Second
	}
	if u.MaxIdlePerServer <= 0 {
		u.MaxIdlePerServer = 1024
	}
}

// newTransport builds the pooled connection manager of one backend. Dial
// and handshake failures come back as *dialError, so that the round trip
// knows the request never left. onConnect, when set, runs on every new
// connection right after the TCP connect and before any TLS handshake (to
// send a PROXY header); it closes the connection when it fails, and what
// it returns is the connection used from then on.
func newTransport(u Upstream, onConnect func(net.Conn) (net.Conn, error)) *http.Transport {
	dialer := &net.Dialer{Timeout: u.ConnectTimeout, KeepAlive: 30 * time.Second}
	connect := func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, newDialError(err, start, u.ConnectTimeout)
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
			ctx, cancel := context.WithTimeout(ctx, u.ConnectTimeout)
			defer cancel()
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
				return nil, newDialError(err, start, u.ConnectTimeout)
			}
			return tc, nil
		}
	}
	return t
}
