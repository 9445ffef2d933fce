package attack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Target is where an attack goes.
type Target struct {
	// Addr is the proxy's host:port. Required.
	Addr string
	// TLS speaks TLS to Addr. The certificate is not verified.
	TLS bool
	// Host is the Host header (HTTP/1.1) or :authority (HTTP/2), and the
	// TLS server name when it is not an IP address. Default: Addr.
	Host string
	// Path is the request target. Default "/".
	Path string
	// Timeout bounds dialing (TLS handshake included) and each wait for
	// the peer's answer. Default 10s; at most 5m.
	Timeout time.Duration
}

// Bounds shared by the options of every attack.
const (
	defaultTimeout = 10 * time.Second
	maxTimeout     = 5 * time.Minute
	// maxHold bounds every duration an attack holds or sends for.
	maxHold = 10 * time.Minute
)

func (t Target) withDefaults() (Target, error) {
	if t.Addr == "" {
		return t, errors.New("attack: Target.Addr is empty: give the proxy's host:port")
	}
	if t.Host == "" {
		t.Host = t.Addr
	}
	if t.Path == "" {
		t.Path = "/"
	}
	t.Timeout = bound(t.Timeout, defaultTimeout, maxTimeout)
	return t, nil
}

// scheme is the :scheme of HTTP/2 requests.
func (t Target) scheme() string {
	if t.TLS {
		return "https"
	}
	return "http"
}

// dial connects to t.Addr, with TLS when t.TLS, offering alpn. With alpn
// "h2" a TLS connection must negotiate it.
func (t Target) dial(ctx context.Context, alpn string) (net.Conn, error) {
	d := &net.Dialer{Timeout: t.Timeout}
	if !t.TLS {
		return d.DialContext(ctx, "tcp", t.Addr)
	}
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}
	if host, _, err := net.SplitHostPort(t.Host); err == nil && net.ParseIP(host) == nil {
		cfg.ServerName = host
	} else if err != nil && net.ParseIP(t.Host) == nil {
		cfg.ServerName = t.Host
	}
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	if alpn == "h2" && c.(*tls.Conn).ConnectionState().NegotiatedProtocol != "h2" {
		c.Close()
		return nil, fmt.Errorf("attack: %s did not negotiate h2 by ALPN: enable HTTP/2 on its TLS bind", t.Addr)
	}
	return c, nil
}

// bound returns v, or def when v <= 0, and at most ceiling.
func bound[T int | int64 | time.Duration](v, def, ceiling T) T {
	if v <= 0 {
		v = def
	}
	return min(v, ceiling)
}

// How a connection or a stream ended, in results.
const (
	EndClosed  = "closed"  // the peer closed the connection (EOF)
	EndReset   = "reset"   // the peer reset the connection (RST)
	EndTimeout = "timeout" // nothing more arrived within the time allowed
	EndError   = "error"   // another error; see the result's Err
)

// endOf names how err ended a read.
func endOf(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return EndClosed
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return EndReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return EndTimeout
	}
	return EndError
}
