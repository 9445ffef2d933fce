package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxBody is how much of a check response's body is read (and discarded)
// before the connection is closed.
const maxBody = 4 << 10

// userAgent identifies health checks in the servers' access logs.
const userAgent = "portcullis-health-check"

// prober runs one configured check against one server. It is immutable;
// Update builds a new one.
type prober struct {
	cfg  *Active // normalized
	addr string  // the address checked: the server's, or its host and Port
	url  string
	tr   *http.Transport // HTTP checks only
}

// newProber returns the prober of cfg for the server at addr.
func newProber(cfg *Active, addr string) *prober {
	p := &prober{cfg: cfg, addr: checkAddr(addr, cfg.Port)}
	if cfg.Kind != "http" {
		return p
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	p.url = scheme + "://" + p.addr + cfg.Path
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

// checkAddr is the address a check of the server at addr connects to:
// addr itself, or its host with port when port is set.
func checkAddr(addr string, port int) string {
	if port <= 0 {
		return addr
	}
	return net.JoinHostPort(hostOnly(addr), strconv.Itoa(port))
}

// close releases the prober's resources.
func (p *prober) close() {
	if p.tr != nil {
		p.tr.CloseIdleConnections()
	}
}

// check runs one check; nil means the server passed. The error text is the
// reason logged when the server goes down, without the "health check: "
// prefix. With Port set it starts with the port, since the server's name
// logged beside it carries another one.
func (p *prober) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var err error
	switch p.cfg.Kind {
	case "tcp":
		err = p.tcp(ctx)
	case "http":
		err = p.http(ctx)
	case "udp":
		err = p.udp(ctx)
	default:
		return fmt.Errorf("unknown check kind %q: want http, tcp or udp", p.cfg.Kind)
	}
	if err != nil && p.cfg.Port != 0 {
		err = fmt.Errorf("port %d: %w", p.cfg.Port, err)
	}
	return err
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

// describe turns a dial, round-trip or datagram error into a short reason:
// the server name is logged beside it, so the addresses inside net errors
// are left out. UDP has no connection to fail, so its failures are told
// apart by what the server did: no datagram back in time ("no reply within
// 1s"), or an ICMP port unreachable, which Linux reports on a connected UDP
// socket as ECONNREFUSED ("port closed").
func describe(err error, timeout time.Duration) string {
	var op *net.OpError
	isOp := errors.As(err, &op)
	udp := isOp && strings.HasPrefix(op.Net, "udp")
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		if udp && op.Op == "read" {
			return "no reply within " + timeout.String()
		}
		return "timeout after " + timeout.String()
	}
	if udp && errors.Is(err, syscall.ECONNREFUSED) {
		return "port closed (ICMP port unreachable)"
	}
	if isOp && op.Err != nil {
		// "read: no route to host" says nothing more than its errno.
		var sc *os.SyscallError
		if udp && errors.As(op.Err, &sc) {
			return sc.Err.Error()
		}
		return op.Err.Error()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed without a response"
	}
	return err.Error()
}
