package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
)

// Errors of the balancing round trip, mapped to statuses by statusFor.
var (
	errNoServer     = errors.New("no server is up: every server is down, draining or disabled")
	errQueueTimeout = errors.New("every server is at max_conns and the queue timeout passed")
)

// dialError marks a failure to reach a server (connect or TLS handshake):
// the request was never sent, so it may be retried whatever its method.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// statusFor maps a round-trip failure to the client's status: 503 when no
// server could take the request, 504 when a server or the connection to it
// timed out, 502 for everything else (refused, reset, bad response, TLS).
func statusFor(err error) int {
	var nerr net.Error
	switch {
	case errors.Is(err, errNoServer), errors.Is(err, errQueueTimeout):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// reason is a short operator-facing cause for logs.
func reason(err error) string {
	var (
		de   *dialError
		ce   *clientConnError
		cerr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &ce):
		return "no private connection for the client (send_proxy)"
	case errors.Is(err, errNoServer):
		return "no server up"
	case errors.Is(err, errQueueTimeout):
		return "queue timeout"
	case errors.As(err, &cerr), errors.As(err, &uerr):
		return "server certificate not trusted"
	case errors.As(err, &de):
		if statusFor(err) == http.StatusGatewayTimeout {
			return "connect timeout"
		}
		return "connect failed"
	case statusFor(err) == http.StatusGatewayTimeout:
		return "server timeout"
	}
	return "server error"
}

// Error writes a short plain-text error response.
func Error(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(http.StatusText(status) + "\n"))
}
