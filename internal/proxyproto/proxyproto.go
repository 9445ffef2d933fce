// Package proxyproto is portcullis's policy for the PROXY protocol (v1 text
// and v2 binary, https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt)
// on both sides of the proxy: on a bind with accept_proxy it reads the header
// that a trusted load balancer puts in front of each connection and refuses
// one from anybody else (Accept, Conn, Trusted); towards a server with
// send_proxy it writes the header carrying the client's address (Header).
//
// Parsing and formatting are github.com/pires/go-proxyproto's; this package
// decides who may send a header, how long to wait for it, what a connection's
// addresses are afterwards, and how the bytes that follow the header reach
// the caller without a copy through the wrapper (Conn.WriteTo, Conn.Raw).
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	pp "github.com/pires/go-proxyproto"
)

var (
	// ErrUntrustedHeader is returned by Conn.Read (and Verify, WriteTo) when
	// a peer that is not trusted starts its connection with a PROXY
	// signature. The error returned wraps it and names the peer; the caller
	// closes the connection.
	ErrUntrustedHeader = errors.New("PROXY header from an untrusted peer")
	// ErrNoHeader is wrapped by Accept's error when a trusted peer's
	// connection does not start with a PROXY signature: it sent other bytes,
	// closed the connection, or sent nothing complete within the timeout.
	ErrNoHeader = errors.New("no PROXY header")
	// ErrBadHeader is wrapped by Accept's error when a trusted peer sent a
	// PROXY signature followed by a header that does not parse.
	ErrBadHeader = errors.New("malformed PROXY header")
)

// Signatures, per section 2.1 (v1: "PROXY" and a space) and section 2.2
// (v2: twelve fixed bytes) of the specification.
var (
	sigV1 = []byte("PROXY ")
	sigV2 = pp.SIGV2
)

// maxV1Len is the longest v1 header, CRLF included (specification 2.1).
const maxV1Len = 107

// v2PrefixLen is the fixed part of a v2 header: signature, version and
// command, family and transport, and the 16-bit length of what follows.
const v2PrefixLen = 16

// sigKind is what the first bytes of a connection are known to start.
type sigKind int

const (
	sigUndecided sigKind = iota // a strict prefix of a signature: need more bytes
	sigNone                     // cannot be the start of a PROXY header
	sigV1Kind                   // starts with the v1 signature
	sigV2Kind                   // starts with the v2 signature
)

// classify reports what b, the first bytes of a connection, starts with.
// It never needs more than len(sigV2) (12) bytes to decide.
func classify(b []byte) sigKind {
	undecided := false
	for _, s := range []struct {
		sig  []byte
		kind sigKind
	}{{sigV1, sigV1Kind}, {sigV2, sigV2Kind}} {
		if len(b) >= len(s.sig) {
			if bytes.Equal(b[:len(s.sig)], s.sig) {
				return s.kind
			}
		} else if bytes.Equal(b, s.sig[:len(b)]) {
			undecided = true
		}
	}
	if undecided {
		return sigUndecided
	}
	return sigNone
}

// Accept prepares c, a connection accepted on a bind with accept_proxy.
//
// When c's peer is in trusted, a PROXY header (v1 or v2) is required: Accept
// reads it, waiting at most timeout (the bind's proxy_timeout, which the
// configuration defaults; zero or less: no bound) through a read deadline
// on c that it clears before returning, and returns a Conn whose
// RemoteAddr and LocalAddr are the header's source and destination.
// For the LOCAL command, and for a transport other than TCP over IPv4 or
// IPv6 (UNKNOWN, UNSPEC, UDP, unix), they stay c's own, as HAProxy does. A
// header split over several packets is accepted as long as it is complete
// within timeout. A v2 header may carry at most the library's
// MaxV2HeaderSize (4096 bytes by default) of addresses and TLVs. A missing,
// truncated or malformed header is an error that wraps ErrNoHeader or
// ErrBadHeader (and os.ErrDeadlineExceeded on timeout) and names the peer.
//
// When c's peer is not trusted, Accept reads nothing, so a client that waits
// for the server to speak first (SMTP, MySQL) is served at once. The
// returned Conn checks the first bytes as they arrive: if they start a v1 or
// v2 signature, Read returns an error wrapping ErrUntrustedHeader.
//
// On error, c is left open for the caller to close.
func Accept(c net.Conn, trusted Trusted, timeout time.Duration) (*Conn, error) {
	if !trusted.Contains(c.RemoteAddr()) {
		return &Conn{conn: c, pending: true}, nil
	}
	var deadline time.Time // zero: none
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("proxyproto: trusted peer %s: %w", c.RemoteAddr(), err)
	}
	// The buffer holds the longest v2 header the parser accepts, so
	// readHeader can peek all of it before parsing.
	br := bufio.NewReaderSize(c, v2PrefixLen+int(pp.MaxV2HeaderSize))
	h, err := readHeader(br, timeout)
	if err != nil {
		return nil, fmt.Errorf("proxyproto: trusted peer %s: %w", c.RemoteAddr(), err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("proxyproto: trusted peer %s: %w", c.RemoteAddr(), err)
	}
	pc := &Conn{conn: c, header: h}
	// What the peer sent after the header. The slice points into br's
	// buffer, which nothing reads from again.
	if n := br.Buffered(); n > 0 {
		pc.buf, _ = br.Peek(n)
	}
	if h.Command.IsProxy() && (h.TransportProtocol == pp.TCPv4 || h.TransportProtocol == pp.TCPv6) {
		pc.remote, pc.local = h.SourceAddr, h.DestinationAddr
	}
	return pc, nil
}

// readHeader reads one PROXY header from br and consumes exactly its bytes.
// It first waits until the whole header is buffered, so that the parser,
// which reads the v1 line only from bytes already buffered, sees a header
// that came in several packets as one.
func readHeader(br *bufio.Reader, timeout time.Duration) (*pp.Header, error) {
	var kind sigKind
	for n := 1; ; {
		b, err := br.Peek(n)
		if kind = classify(b); kind != sigUndecided {
			if kind == sigNone {
				// Quote what is already there (it often names the protocol
				// the peer speaks instead), without waiting for more.
				b, _ = br.Peek(min(br.Buffered(), len(sigV2)))
				return nil, fmt.Errorf("%w: the connection starts with %q; the peer is trusted, so every connection from it must start with a PROXY header: enable send-proxy (or send-proxy-v2) on it, or remove it from trusted_proxies", ErrNoHeader, b)
			}
			break
		}
		if err != nil {
			return nil, missing(b, err, timeout)
		}
		n = min(max(n+1, br.Buffered()), len(sigV2))
	}

	var size int // of the whole header
	if kind == sigV1Kind {
		for n := len(sigV1); ; {
			b, err := br.Peek(n)
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				size = i + 1
				break
			}
			if len(b) >= maxV1Len {
				return nil, fmt.Errorf("%w: v1 line longer than %d bytes without CRLF", ErrBadHeader, maxV1Len)
			}
			if err != nil {
				return nil, truncated(1, len(b), err, timeout)
			}
			n = min(max(n+1, br.Buffered()), maxV1Len)
		}
	} else {
		b, err := br.Peek(v2PrefixLen)
		if err != nil {
			return nil, truncated(2, len(b), err, timeout)
		}
		length := binary.BigEndian.Uint16(b[14:16])
		if length > pp.MaxV2HeaderSize {
			return nil, fmt.Errorf("%w: v2 header announces %d bytes of addresses and TLVs, more than the %d accepted", ErrBadHeader, length, pp.MaxV2HeaderSize)
		}
		size = v2PrefixLen + int(length)
		if b, err := br.Peek(size); err != nil {
			return nil, truncated(2, len(b), err, timeout)
		}
	}

	before := br.Buffered()
	h, err := pp.Read(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if used := before - br.Buffered(); used != size {
		// The parser read a different length than the framing above: the
		// bytes after the header cannot be trusted to be the payload.
		return nil, fmt.Errorf("%w: v%d header of %d bytes parsed as %d bytes", ErrBadHeader, h.Version, size, used)
	}
	return h, nil
}

// missing describes a connection that ended, failed or timed out while the
// first bytes b could still have begun a header.
func missing(b []byte, err error, timeout time.Duration) error {
	switch {
	case isTimeout(err) && len(b) == 0:
		return fmt.Errorf("%w: nothing received within %v (proxy_timeout): %w", ErrNoHeader, timeout, err)
	case isTimeout(err):
		return fmt.Errorf("%w: only %q received within %v (proxy_timeout): %w", ErrNoHeader, b, timeout, err)
	case errors.Is(err, io.EOF) && len(b) == 0:
		return fmt.Errorf("%w: the peer closed the connection before sending anything", ErrNoHeader)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: the peer closed the connection after %q", ErrNoHeader, b)
	}
	return fmt.Errorf("%w: reading the first bytes: %w", ErrNoHeader, err)
}

// truncated describes a header whose signature arrived but whose rest did
// not: got bytes of it came before err.
func truncated(version, got int, err error, timeout time.Duration) error {
	switch {
	case isTimeout(err):
		return fmt.Errorf("%w: v%d header incomplete after %v (proxy_timeout), %d bytes received: %w", ErrBadHeader, version, timeout, got, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: v%d header truncated: the peer closed the connection after %d bytes", ErrBadHeader, version, got)
	}
	return fmt.Errorf("%w: reading the v%d header: %w", ErrBadHeader, version, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
