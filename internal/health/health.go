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
	"net"
	"strings"
	"time"
)

// Defaults of Active and Passive. They match the configuration's.
const (
	DefaultInterval  = 2 * time.Second
	DefaultTimeout   = time.Second
	DefaultRise      = 2
	DefaultFall      = 3
	DefaultStatusMin = 200
	DefaultStatusMax = 399
	DefaultFailures  = 3
	DefaultCooldown  = 10 * time.Second
)

// Active is an active health check. Zero values take the defaults.
type Active struct {
	// Kind is "http" (GET Path, expect a status in [StatusMin, StatusMax]),
	// "tcp" (connect only) or "udp" (send Send as one datagram; any
	// datagram back within Timeout passes, an ICMP port unreachable fails
	// at once). Default "http" when Path is set, else "tcp". Any other kind
	// makes every check fail, saying why.
	Kind string
	// Port is the port checked on the server's host, for every kind, when
	// the check is served beside the server (e.g. a status page next to a
	// database). 0 or negative (default): the server's own port.
	Port int
	// Path is the path to GET, e.g. "/healthz". Default "/" for HTTP.
	Path string
	// Host is the Host header of HTTP checks; default the address checked
	// (the server's address, with Port when set). With TLS and no
	// TLS.ServerName, it is also the SNI server name.
	Host string
	// Send is the payload of the one datagram of a UDP check; other kinds
	// ignore it. Default empty: a zero-length datagram.
	Send string
	// StatusMin and StatusMax bound the accepted HTTP status, inclusive.
	// Default 200 and 399. Redirects are not followed.
	StatusMin, StatusMax int
	// Interval between the starts of two checks. Default 2s.
	Interval time.Duration
	// Timeout of one check: connect, request and response. Default 1s, or
	// Interval/2 when that is shorter; a Timeout not shorter than Interval
	// is cut to Interval/2.
	Timeout time.Duration
	// Rise consecutive successful checks bring a server up; Fall
	// consecutive failed ones take it down. Default 2 and 3.
	Rise, Fall int
	// TLS, when not nil, makes HTTP checks HTTPS with this configuration
	// (a backend with tls); checks offer only HTTP/1.1 in ALPN. TCP checks
	// only connect; UDP checks ignore it.
	TLS *tls.Config
}

// Passive marks a server down from real traffic.
type Passive struct {
	// Failures is how many consecutive failed requests (connect errors,
	// timeouts, resets; and 5xx when Count5xx) mark the server down. 0
	// disables passive checks; the configuration's default is
	// DefaultFailures.
	Failures int
	// Count5xx counts 5xx responses as failures (see Monitor.ResponseOK).
	// Default false.
	Count5xx bool
	// Cooldown is how long the server stays down when there is no active
	// check to bring it back. Zero or negative: DefaultCooldown.
	Cooldown time.Duration
}

// withDefaults returns a copy of a with every default filled in, or nil.
func (a *Active) withDefaults() *Active {
	if a == nil {
		return nil
	}
	c := *a
	c.Kind = strings.ToLower(strings.TrimSpace(c.Kind))
	if c.Kind == "" {
		c.Kind = "tcp"
		if c.Path != "" {
			c.Kind = "http"
		}
	}
	if c.Kind == "http" {
		if c.Path == "" {
			c.Path = "/"
		} else if !strings.HasPrefix(c.Path, "/") {
			c.Path = "/" + c.Path
		}
	}
	if c.Port < 0 {
		c.Port = 0
	}
	if c.StatusMin <= 0 {
		c.StatusMin = DefaultStatusMin
	}
	if c.StatusMax <= 0 {
		c.StatusMax = DefaultStatusMax
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = min(DefaultTimeout, c.Interval/2)
	} else if c.Timeout >= c.Interval {
		c.Timeout = c.Interval / 2
	}
	if c.Rise <= 0 {
		c.Rise = DefaultRise
	}
	if c.Fall <= 0 {
		c.Fall = DefaultFall
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

func (p Passive) withDefaults() Passive {
	if p.Failures < 0 {
		p.Failures = 0
	}
	if p.Cooldown <= 0 {
		p.Cooldown = DefaultCooldown
	}
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
