package accept

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxyproto"
)

// ErrClientLimit is ReadProxyHeader's error for a connection whose
// client, as its PROXY header names it, is at max_conns_per_client. The
// Gate has summarized it; it needs no log line of its own.
var ErrClientLimit = errors.New("the client named by the PROXY header is at max_conns_per_client")

// ReadProxyHeader reads the PROXY header of c from a peer in trusted
// (proxyproto.Accept; timeout zero or negative: no bound) and
// counts c against the client the header names (Ticket.Move). It returns
// the connection to read from, whose addresses are the client's, or an
// error; c is left open either way.
func ReadProxyHeader(c *Conn, trusted proxyproto.Trusted, timeout time.Duration) (*proxyproto.Conn, error) {
	pc, err := proxyproto.Accept(c.Conn, trusted, timeout)
	if err != nil {
		return nil, err
	}
	// Not for a LOCAL header, nor for an untrusted peer (no header):
	// those name no client.
	if pc.Header() != nil && limit.AddrOf(pc.RemoteAddr()) != limit.AddrOf(pc.Peer()) && !c.Ticket.Move(pc.RemoteAddr()) {
		return nil, ErrClientLimit
	}
	return pc, nil
}

// ProxyHeader is the step of a bind with accept_proxy whose connections
// all go to Next (an HTTP bind without sni routes): in the connection's
// own goroutine, so that a slow peer holds up nobody else, it reads the
// PROXY header of a trusted peer, or checks that an untrusted peer does
// not start with one, and gives the connection on with the client's
// addresses.
type ProxyHeader struct {
	// Trusted are the peers whose PROXY headers are read.
	Trusted proxyproto.Trusted
	// Timeout bounds the wait for the header, and for the first bytes of
	// an untrusted peer: the bind's proxy_timeout, which the configuration
	// defaults. Zero or negative: no bound for the header, no wait for the
	// first bytes.
	Timeout time.Duration
	// Log receives a line for each connection refused. Nil: slog.Default().
	Log *slog.Logger
	// Next takes the connections once their header is read. Required.
	Next Handler
}

// ServeTCP reads c's PROXY header in a goroutine, then gives c to Next.
func (p *ProxyHeader) ServeTCP(c *Conn) { go p.serve(c) }

func (p *ProxyHeader) serve(c *Conn) {
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	pc, err := ReadProxyHeader(c, p.Trusted, p.Timeout)
	if err != nil {
		if !errors.Is(err, ErrClientLimit) {
			log.Warn("closing connection: no valid PROXY header from a trusted proxy", "peer", c.RemoteAddr().String(), "error", err)
		}
		c.Close()
		return
	}
	if !verifyUntrusted(pc, p.Timeout, log) {
		c.Close()
		return
	}
	c.Conn = pc
	p.Next.ServeTCP(c)
}

// verifyUntrusted waits up to timeout for the first bytes of a peer
// outside trusted_proxies and refuses the connection, with a log line,
// when they start a PROXY header: an http.Server would otherwise answer
// it with a bare 400. A peer that sends nothing in time (a browser's
// preconnection) is served: the check then happens at its first read. It
// reports whether the connection may be served; the caller closes it
// otherwise.
func verifyUntrusted(pc *proxyproto.Conn, timeout time.Duration, log *slog.Logger) bool {
	pc.SetReadDeadline(time.Now().Add(timeout))
	err := pc.Verify()
	pc.SetReadDeadline(time.Time{})
	switch {
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		return true
	case errors.Is(err, proxyproto.ErrUntrustedHeader):
		log.Warn("closing connection: PROXY header from an address outside trusted_proxies; add the address there, or stop the client sending one", "peer", pc.Peer().String(), "error", err)
	}
	return false
}
