// Package health decides whether a server is up: active checks probe it on
// a timer (HTTP GET, TCP connect or a UDP datagram that must be answered),
// passive checks watch the results of real requests. One Monitor per
// server writes the verdict into the server's balance.State, which the
// balancer reads and which survives reloads.
//
// Semantics:
//
//   - A server starts up (optimistic), so a fresh start serves at once. A
//     Monitor never resets the health it finds in its State: a server that
//     was down before a reload stays down until its checks bring it back.
//   - Active: after Fall consecutive failed checks the server goes down;
//     after Rise consecutive successful checks it comes back. A check fails
//     when it cannot connect, times out, (HTTP) answers a status outside
//     [StatusMin, StatusMax], or (UDP) gets no datagram back within Timeout
//     or an ICMP port unreachable. One lost datagram alone does not take a
//     server down unless Fall is 1. Checks run one at a time in one
//     goroutine per server, the first soon after Start, then every Interval
//     with a little jitter; they never block the request path.
//   - Passive: Failures consecutive failed requests (as reported to
//     Monitor.Observe) take the server down; a successful request resets
//     the count. With an active check the server then comes back only after
//     Rise consecutive successful checks that started after it went down;
//     without one it comes back when Cooldown has passed (one timer per
//     server).
//   - Every change of state is logged once: Warn "server down" with the
//     reason (e.g. "3 consecutive failed requests" or "health check: GET
//     /healthz: status 503"), Info "server up" with the reason. Nothing is
//     logged while a state holds.
//   - Monitor.Update takes new settings on reload without touching the
//     current health or the consecutive counts. If the active check is
//     removed while the server is down, it comes back after Cooldown (at
//     once when passive checks are off too), since nothing else would
//     bring it back. A new Monitor for a State that is down (rather than
//     Update) likewise needs Rise good checks, or the Cooldown.
//   - Stop abandons a check in flight (it does not count), cancels a
//     pending cooldown and leaves the health as it is.
package health

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"
)

// Active is an active health check. It holds no defaults of its own: the
// caller passes every setting (the configuration's defaults are
// config.DefaultCheckInterval and its neighbours). Interval must be
// positive; what zero means for the other fields is said on each.
type Active struct {
	// Kind is "http" (GET Path, expect a status in [StatusMin, StatusMax]),
	// "tcp" (connect only) or "udp" (send Send as one datagram; any
	// datagram back within Timeout passes, an ICMP port unreachable fails
	// at once), in any case. Empty: "http" when Path is set, else "tcp".
	// Any other kind makes every check fail, saying why.
	Kind string
	// Port is the port checked on the server's host, for every kind, when
	// the check is served beside the server (e.g. a status page next to a
	// database). 0 or negative: the server's own port.
	Port int
	// Path is the path to GET, e.g. "/healthz"; a missing leading "/" is
	// added, so an empty Path is "/" (as an empty path is in HTTP).
	Path string
	// Host is the Host header of HTTP checks; empty: the address checked
	// (the server's address, with Port when set). With TLS and no
	// TLS.ServerName, it is also the SNI server name.
	Host string
	// Send is the payload of the one datagram of a UDP check; other kinds
	// ignore it. Empty: a zero-length datagram.
	Send string
	// StatusMin and StatusMax bound the accepted HTTP status, inclusive.
	// HTTP checks need both: the zero range accepts no status. Redirects
	// are not followed.
	StatusMin, StatusMax int
	// Interval between the starts of two checks. It must be positive:
	// NewMonitor and Monitor.Update panic otherwise, as time.NewTicker
	// does, since the configuration refuses such an interval and a check
	// loop cannot run without one.
	Interval time.Duration
	// Timeout of one check: connect, request and response. A Timeout that
	// is zero, negative or not shorter than Interval is Interval/2, so
	// that a check ends before the next one starts.
	Timeout time.Duration
	// Rise consecutive successful checks bring a server up; Fall
	// consecutive failed ones take it down. 0 or negative acts as 1.
	Rise, Fall int
	// TLS, when not nil, makes HTTP checks HTTPS with this configuration
	// (a backend with tls); checks offer only HTTP/1.1 in ALPN. TCP checks
	// only connect; UDP checks ignore it.
	TLS *tls.Config
}

// Passive marks a server down from real traffic. Its zero value is off.
type Passive struct {
	// Failures is how many consecutive failed requests (connect errors,
	// timeouts, resets; and 5xx when Count5xx) mark the server down. 0 or
	// negative: passive checks off.
	Failures int
	// Count5xx counts 5xx responses as failures (see Monitor.ResponseOK).
	Count5xx bool
	// Cooldown is how long the server stays down when there is no active
	// check to bring it back. 0 or negative: no cooldown, the server comes
	// back at once.
	Cooldown time.Duration
}

// normalized returns a copy of a ready for a prober, or nil: Kind
// lower-cased (or inferred), Path starting with "/" for HTTP, Port and
// Timeout within their bounds, TLS cloned to offer HTTP/1.1 only. It
// panics if Interval is not positive (see Active.Interval).
func (a *Active) normalized() *Active {
	if a == nil {
		return nil
	}
	if a.Interval <= 0 {
		panic(fmt.Sprintf("health: Active.Interval %v: must be positive", a.Interval))
	}
	c := *a
	c.Kind = strings.ToLower(strings.TrimSpace(c.Kind))
	if c.Kind == "" {
		c.Kind = "tcp"
		if c.Path != "" {
			c.Kind = "http"
		}
	}
	if c.Kind == "http" && !strings.HasPrefix(c.Path, "/") {
		c.Path = "/" + c.Path
	}
	if c.Port < 0 {
		c.Port = 0
	}
	if c.Timeout <= 0 || c.Timeout >= c.Interval {
		c.Timeout = c.Interval / 2
	}
	if c.TLS != nil {
		c.TLS = c.TLS.Clone()
		// Checks speak HTTP/1.1; offering h2 to a server that takes it would
		// fail the check for the wrong reason.
		c.TLS.NextProtos = []string{"http/1.1"}
		if c.TLS.ServerName == "" && c.Host != "" {
			c.TLS.ServerName = hostOnly(c.Host)
		}
	}
	return &c
}

// normalized returns p with a negative Failures made 0 (off).
func (p Passive) normalized() Passive {
	p.Failures = max(p.Failures, 0)
	return p
}

// hostOnly strips a port from a Host header value ("example.com:8443",
// "[::1]:443").
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}
