package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// maxBody is how much of a check response's body is read (and discarded)
// before the connection is closed.
const maxBody = 4 << 10

// userAgent identifies health checks in the servers' access logs.
const userAgent = "portcullis-health-check"

// prober runs one configured check against one server address. It is
// immutable; Update builds a new one.
type prober struct {
	cfg  *Active // with defaults
	addr string
	url  string
	tr   *http.Transport // HTTP checks only
}

func newProber(cfg *Active, addr string) *prober {
	p := &prober{cfg: cfg, addr: addr}
	if cfg.Kind != "http" {
		return p
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	p.url = scheme + "://" + addr + cfg.Path
	p.tr = &http.Transport{
		// Never a proxy from the environment: the check is about the server.
		Proxy:                  nil,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
		TLSClientConfig:        cfg.TLS,
		// The check's Timeout bounds connect, TLS handshake, request and
		// response through the request's context.
	}
	return p
}

// close releases the prober's resources.
func (p *prober) close() {
	if p.tr != nil {
		p.tr.CloseIdleConnections()
	}
}

// check runs one check; nil means the server passed. The error text is the
// reason logged when the server goes down, without the "health check: "
// prefix.
func (p *prober) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	switch p.cfg.Kind {
	case "tcp":
		return p.tcp(ctx)
	case "http":
		return p.http(ctx)
	}
	return fmt.Errorf("unknown check kind %q: want http or tcp", p.cfg.Kind)
}

// tcp connects and closes at once.
func (p *prober) tcp(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		msg := describe(err, p.cfg.Timeout)
		if !strings.HasPrefix(msg, "connect: ") {
			msg = "connect: " + msg
		}
		return errors.New(msg)
	}
	c.Close()
	return nil
}

// http sends GET Path and expects a status in [StatusMin, StatusMax]. It
// does not follow redirects.
func (p *prober) http(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %v", p.cfg.Path, err)
	}
	if p.cfg.Host != "" {
		req.Host = p.cfg.Host
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("GET %s: %s", p.cfg.Path, describe(err, p.cfg.Timeout))
	}
	// Read a little of the body so that small servers that write it before
	// looking at the connection are not cut off; errors do not matter.
	io.CopyN(io.Discard, resp.Body, maxBody)
	resp.Body.Close()
	if resp.StatusCode < p.cfg.StatusMin || resp.StatusCode > p.cfg.StatusMax {
		return fmt.Errorf("GET %s: status %d", p.cfg.Path, resp.StatusCode)
	}
	return nil
}

// describe turns a dial or round-trip error into a short reason: the
// server name is logged beside it, so the addresses inside net errors are
// left out.
func describe(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return "timeout after " + timeout.String()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed without a response"
	}
	return err.Error()
}
