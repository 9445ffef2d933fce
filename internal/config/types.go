// Package config defines the portcullis configuration schema and turns YAML
// bytes into a validated *Config: parse (strict, with line and column for
// every key) → defaults → validate. It holds no live state; the runtime
// compiles a *Config into its own immutable objects.
package config

import "time"

// Config is one parsed, defaulted and validated configuration file.
type Config struct {
	// File is the name used in error messages ("FILE:LINE:COL: ...").
	File string `yaml:"-"`
	// Dir is the directory relative paths (certificates, keys) are resolved
	// against: the directory of the configuration file.
	Dir string `yaml:"-"`

	Global    Global      `yaml:"global"`
	Frontends []*Frontend `yaml:"frontends"` // a YAML mapping: name → frontend, in file order
	Backends  []*Backend  `yaml:"backends"`  // a YAML mapping: name → backend, in file order
	// Admin is the admin socket and listener (docs/admin.md). Nil: none.
	Admin *Admin `yaml:"admin"`

	At Positions `yaml:"-"`
}

// Global holds process-wide settings.
type Global struct {
	// User is the account to switch to after every socket is bound, when
	// started as root. Empty: keep running as whoever started the process
	// (a warning at every start when that is root).
	User string `yaml:"user"`
	// Group is the primary group to switch to. Empty: the user's primary group.
	Group string `yaml:"group"`
	// Grace is how long a graceful stop waits for in-flight requests before
	// closing what remains. Default 30s; zero after defaults is impossible.
	Grace time.Duration `yaml:"grace"`
	// MaxConns bounds the client connections of the whole process, every
	// frontend and protocol together (TCP connections, QUIC connections,
	// UDP flows); one over it is closed at once. 0 (default): derived at
	// startup from the open-files limit, (RLIMIT_NOFILE - 256) / 2, so
	// that a client connection and its server connection always have a
	// descriptor each and the process never runs itself out of them.
	MaxConns int `yaml:"max_conns"`

	At Positions `yaml:"-"`
}

// DefaultGrace is Global.Grace when the file does not set it.
const DefaultGrace = 30 * time.Second

// Frontend modes.
const (
	ModeHTTP = "http"
	ModeTCP  = "tcp"
	ModeUDP  = "udp"
)

// Idle timeouts of layer-4 frontends when the file sets none.
const (
	DefaultTCPIdleTimeout = 10 * time.Minute
	DefaultUDPIdleTimeout = 30 * time.Second
)

// Frontend is a set of listening addresses that share routes.
type Frontend struct {
	Name string `yaml:"-"` // the mapping key
	// Mode is http (default: HTTP/1.1, HTTP/2, HTTP/3 terminated and routed
	// by request), tcp (each connection proxied as a byte stream, routed by
	// TLS SNI when routes name one) or udp (datagrams relayed per client
	// flow).
	Mode string `yaml:"mode"`
	// IdleTimeout closes a tcp connection or forgets a udp flow that has
	// carried no byte in either direction for this long. Default 10m for
	// tcp, 30s for udp; refused in http mode (see backend timeouts).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	Bind        []*Bind       `yaml:"bind"`
	Routes      []*Route      `yaml:"routes"`
	// Limits bound what the frontend's clients can take
	// (docs/security.md). Every key has a default.
	Limits Limits `yaml:"limits"`
	// RateLimits limit each client's request rate (http frontends). Nil:
	// no limit.
	RateLimits *RateLimits `yaml:"rate_limits"`
	// AccessLog, when set, logs one line per HTTP request, tcp connection
	// or udp flow (docs/logging.md). Nil: no access log.
	AccessLog *AccessLog `yaml:"access_log"`
	// Errors are the pages of the errors portcullis answers itself
	// (docs/configuration.md, errors). Default: none.
	Errors ErrorPages `yaml:"errors"`

	At Positions `yaml:"-"`
}

// AccessLog is where and how a frontend writes its access log.
type AccessLog struct {
	// Format is json (default: one object per line), combined (Apache's
	// and nginx's) or logfmt; compile checks the name
	// (accesslog.ParseFormat).
	Format string `yaml:"format"`
	// To is stdout (default), stderr, or a file's path, relative to the
	// configuration file's directory. Frontends that name the same path
	// share one file.
	To string `yaml:"to"`

	At Positions `yaml:"-"`
}

// Defaults of AccessLog.
const (
	DefaultAccessLogFormat = "json"
	DefaultAccessLogTo     = "stdout"
)

// Limits bound the resources a frontend's clients can hold. The
// connection limits apply to every mode; the others to http frontends
// only (tcp and udp frontends have idle_timeout).
type Limits struct {
	// HeaderTimeout bounds the reading of a whole request head (request
	// line and headers) from its first byte. Default 10s.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
	// BodyTimeout bounds the wait between two reads of a request body; a
	// client stalled longer gets 408. Default 30s.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// SendTimeout cuts a client that accepts no response byte for this
	// long (a full TCP window, an HTTP/2 or HTTP/3 flow-control window
	// never opened). Default 30s.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// IdleTimeout closes a keep-alive connection (HTTP/1.1, HTTP/2,
	// HTTP/3) with no request for this long. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds the request line and headers of a request, in
	// bytes; beyond it the client gets 431. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body, in bytes: 413 beyond it,
	// counted as the body passes when its length is not announced.
	// Default 10485760 (10 MiB); 0: no limit.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxConns bounds the frontend's client connections, every bind and
	// protocol together (TCP, QUIC, UDP flows); one over it is closed at
	// once. Default 50000; 0: only global.max_conns.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerClient bounds the connections of one client IP address
	// (the one a trusted PROXY header names). Default 1000; 0: no limit.
	// Raise it for clients behind a large NAT.
	MaxConnsPerClient int `yaml:"max_conns_per_client"`
	// H2MaxStreams is how many requests one HTTP/2 or HTTP/3 connection
	// may have open at once. Default 100.
	H2MaxStreams int `yaml:"h2_max_streams"`

	At Positions `yaml:"-"`
}

// Defaults of Limits.
const (
	DefaultHeaderTimeout     = 10 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultSendTimeout       = 30 * time.Second
	DefaultHTTPIdleTimeout   = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 10 << 20
	DefaultMaxConns          = 50000
	DefaultMaxConnsPerClient = 1000
	DefaultH2MaxStreams      = 100
)

// Bind is one listening address of a frontend.
type Bind struct {
	// Address is "host:port" ("127.0.0.1:443", "[::1]:443") or ":port" for
	// every address. Required.
	Address string `yaml:"address"`
	// FDName selects the socket-activated socket with this name
	// (LISTEN_FDNAMES, systemd's FileDescriptorName=). Empty: a passed
	// socket with the same address and type is used, if there is one.
	FDName string `yaml:"fd_name"`
	// FDNameUDP is like FDName for the UDP (HTTP/3) socket of the bind.
	// Empty: FDName.
	FDNameUDP string `yaml:"fd_name_udp"`
	// TLS terminates TLS on this bind. Nil: plain HTTP/1.1 and h2c.
	TLS *TLS `yaml:"tls"`
	// HTTP3 also binds UDP on the same address at startup and serves HTTP/3
	// there. Requires TLS. Default false.
	HTTP3 bool `yaml:"http3"`
	// QUIC tunes HTTP/3 on this bind. Only with http3.
	QUIC *QUIC `yaml:"quic"`
	// AcceptProxy reads a PROXY protocol header (v1 or v2) at the start of
	// every TCP connection from TrustedProxies, and uses the client address
	// it carries for routing, logs and X-Forwarded-For. Connections from
	// other addresses must not send one: a header from them is refused.
	// Default false. Not on udp frontends; never for HTTP/3.
	AcceptProxy bool `yaml:"accept_proxy"`
	// TrustedProxies are the networks ("10.0.0.0/8", "192.0.2.7") allowed
	// to send PROXY headers. Required with accept_proxy, refused without.
	// Validation rewrites each entry as a prefix in canonical form
	// ("192.0.2.7/32"), which netip.ParsePrefix reads back.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ProxyTimeout bounds the wait for the PROXY header (and, when routes
	// match sni, for the TLS ClientHello) after accepting. Default 5s;
	// refused on udp frontends, whose binds keep 0.
	ProxyTimeout time.Duration `yaml:"proxy_timeout"`

	At Positions `yaml:"-"`
}

// DefaultProxyTimeout is Bind.ProxyTimeout when the file sets none.
const DefaultProxyTimeout = 5 * time.Second

// QUIC tunes the HTTP/3 sockets of a bind (docs/quic.md).
type QUIC struct {
	// Shards is how many UDP sockets (SO_REUSEPORT, one quic.Transport
	// each) serve the address, steered by connection ID. 0 (default): the
	// number of CPUs, at most 8. More than one needs the steering program,
	// which needs CAP_BPF or CAP_SYS_ADMIN at startup; without it portcullis
	// runs one shard and says why.
	Shards int `yaml:"shards"`
	// ServerID is this instance's server ID in connection IDs, as hex (1 to
	// 10 bytes), for QUIC-LB-aware load balancers in front. Empty (default):
	// connection IDs say "unroutable" to such balancers.
	ServerID string `yaml:"server_id"`
	// StatelessResetKeyFile holds 32 bytes (raw or 64 hex digits) shared by
	// instances and restarts. Empty (default): a random key per start.
	StatelessResetKeyFile string `yaml:"stateless_reset_key_file"`
	// TokenKeyFile holds 32 bytes (raw or hex) for Retry and resumption
	// tokens. Empty (default): a random key per start.
	TokenKeyFile string `yaml:"token_key_file"`
	// Retry is address validation: auto (default: only under a handshake
	// flood, see RetryRate and RetryInProgress), always or never.
	Retry string `yaml:"retry"`
	// RetryRate: with retry auto, clients are sent a Retry once more than
	// this many handshakes from unvalidated addresses started in the last
	// second. Default 1000.
	RetryRate int `yaml:"retry_rate"`
	// RetryInProgress: with retry auto, clients are sent a Retry once this
	// many handshakes are in progress. Default: half of MaxHandshakes;
	// less than MaxHandshakes.
	RetryInProgress int `yaml:"retry_in_progress"`
	// MaxHandshakes bounds the handshakes in progress on the bind (all
	// shards): beyond it, new connection attempts are refused
	// (CONNECTION_REFUSED) before any state is kept for them. Default
	// 2000.
	MaxHandshakes int `yaml:"max_handshakes"`
	// HandshakeTimeout drops a handshake when its client has sent nothing
	// for this long (and any handshake not done in twice this time).
	// Default 5s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes an HTTP/3 connection idle for this long. 0
	// (default): the frontend's limits.idle_timeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RcvBuf and SndBuf are the sockets' buffer sizes in bytes, set before
	// privileges are dropped. Default 7340032 (7 MiB).
	RcvBuf int `yaml:"rcvbuf"`
	SndBuf int `yaml:"sndbuf"`

	At Positions `yaml:"-"`
}

// TLS is the TLS configuration of a bind.
type TLS struct {
	// Certificates are chosen by the client's SNI among their names; the
	// first is the default for clients that send no or an unknown name.
	Certificates []*Certificate `yaml:"certificates"`

	At Positions `yaml:"-"`
}

// Certificate is a PEM certificate chain and its private key. Relative paths
// are relative to the configuration file's directory.
type Certificate struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`

	At Positions `yaml:"-"`
}

// Route sends matching requests (or connections) to a backend. Routes are
// tried in order; the first match wins; no match is a 404 (http) or a
// closed connection (tcp).
//
// A route with sni matches TLS connections by the ClientHello, before any
// TLS is terminated, and passes them through to the backend untouched. In
// a tcp frontend every route is such a route, or one without sni that
// takes every connection (plain TCP), which must come last. In an http
// frontend whose binds all have tls, sni routes pass those names through
// and the other routes serve the rest as HTTPS on the same port: the sni
// routes are tried first, in order, when a TCP connection starts, wherever
// they are in the list. HTTP/3 connections are always terminated: sni
// routes do not apply to them. A udp frontend has one route, with only a
// backend.
type Route struct {
	// SNI matches the TLS server name of the ClientHello (case-insensitive):
	// exactly, or "*.example.com" for any name ending in ".example.com".
	SNI string `yaml:"sni"`
	// ALPN, with sni, also requires the client to offer one of these
	// protocols ("h2", "http/1.1", "imap", ...), compared exactly. Empty:
	// any. Refused without sni.
	ALPN []string `yaml:"alpn"`
	// Host matches the request's host (without port, case-insensitive):
	// exactly, or "*.example.com" for any name ending in ".example.com".
	// Empty: any host.
	Host string `yaml:"host"`
	// PathPrefix matches requests whose path starts with it. Empty: any path.
	PathPrefix string `yaml:"path_prefix"`
	// Backend is the name of a backend. Required.
	Backend string `yaml:"backend"`
	// Compress lists the codings the route's responses may be compressed
	// with, in the server's order of preference: zstd, br, gzip (http
	// frontends only; docs/configuration.md, "compress"). Empty: none.
	Compress []string `yaml:"compress"`

	At Positions `yaml:"-"`
}

// Backend is a pool of servers and how to balance, check and reach them.
//
// A backend that bytes are passed through to (by a tcp or udp frontend, or
// an sni route of an http frontend) refuses what only HTTP can use: sticky,
// tls, a written protocol and hash_key other than source. A backend may
// serve frontends of several modes at once under these rules.
type Backend struct {
	Name string `yaml:"-"` // the mapping key
	// Balance is the algorithm: round_robin (smooth weighted; default),
	// least_conn, random (power of two choices) or hash.
	Balance string `yaml:"balance"`
	// HashKey is what hash balancing hashes: source (the client address),
	// uri (path and query), header:NAME or cookie:NAME. Required with
	// balance: hash, refused otherwise.
	HashKey string `yaml:"hash_key"`
	// Sticky pins a client to the server that answered it first, by cookie.
	// Nil: no stickiness.
	Sticky *Sticky `yaml:"sticky"`
	// Protocol to the servers: http1 (HTTP/1.1), h2c (HTTP/2 without TLS,
	// prior knowledge), h2 (HTTP/2 over TLS only) or auto (over TLS: HTTP/2
	// when the server offers it by ALPN, else HTTP/1.1). Default: http1
	// without tls, auto with tls.
	Protocol string `yaml:"protocol"`
	// TLS connects to the servers over TLS. Nil: plain TCP.
	TLS *BackendTLS `yaml:"tls"`
	// Timeouts toward the servers.
	Timeouts Timeouts `yaml:"timeouts"`
	// Retries is how many more servers a request may try after the first
	// failed: always for a request that never reached a server (connect
	// refused or timed out), and for an idempotent request without a body
	// that failed before any response byte. Default 2; 0 disables.
	Retries *int `yaml:"retries"`
	// RetryBudget caps retries at this percentage of the backend's
	// requests over the last 10 seconds (at least 3 retries per second are
	// always allowed), so that retries cannot multiply load on a failing
	// fleet. Default 20.
	RetryBudget *int `yaml:"retry_budget"`
	// QueueTimeout is how long a request waits for a server below its
	// max_conns before it gets 503. Default 5s.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	// HealthCheck is the active check. Nil: none (passive checks only).
	HealthCheck *HealthCheck `yaml:"health_check"`
	// PassiveHealth marks servers down from real traffic. Default: on,
	// 3 consecutive failures, 10s cooldown.
	PassiveHealth *PassiveHealth `yaml:"passive_health"`
	Servers       []*Server      `yaml:"servers"`

	At Positions `yaml:"-"`
}

// Sticky is cookie-based session affinity.
type Sticky struct {
	// Cookie is the cookie's name. Default "portcullis_server".
	Cookie string `yaml:"cookie"`
	// MaxAge is the cookie's lifetime; 0 (default) makes a session cookie.
	MaxAge time.Duration `yaml:"max_age"`

	At Positions `yaml:"-"`
}

// BackendTLS is TLS toward the servers.
type BackendTLS struct {
	// ServerName is sent as SNI and verified. Default: the server's host.
	ServerName string `yaml:"server_name"`
	// CA is a PEM file of the authorities to trust. Default: the system's.
	CA string `yaml:"ca"`
	// Verify checks the server's certificate. Default true; false is for
	// tests only and is logged as a warning.
	Verify *bool `yaml:"verify"`

	At Positions `yaml:"-"`
}

// Timeouts toward the servers of a backend.
type Timeouts struct {
	// Connect bounds establishing a connection (and its TLS handshake).
	// Default 5s.
	Connect time.Duration `yaml:"connect"`
	// Server bounds the wait for the response headers once the request is
	// sent; past it the client gets 504. Default 60s.
	Server time.Duration `yaml:"server"`
	// Idle closes pooled keep-alive connections unused this long. Default
	// 90s.
	Idle time.Duration `yaml:"idle"`

	At Positions `yaml:"-"`
}

// HealthCheck is an active health check of every server of a backend.
type HealthCheck struct {
	// Type is http (GET Path), tcp (connect only) or udp (send Send as one
	// datagram, any datagram back within Timeout passes; an ICMP port
	// unreachable fails at once). Default http when path is set, else udp
	// for backends of udp frontends, else tcp.
	Type string `yaml:"type"`
	// Port checks this port of each server's host instead of the server's
	// own (e.g. an HTTP status page beside a database), 1 to 65535. 0
	// (default): the server's port.
	Port int `yaml:"port"`
	// Send is the datagram of udp checks (YAML escapes such as "\x00"
	// work in double quotes). Default: empty. Only for udp checks.
	Send string `yaml:"send"`
	// Path is the HTTP path to GET, e.g. /healthz. Default "/". Path, Host
	// and ExpectStatus are only for http checks.
	Path string `yaml:"path"`
	// Host is the Host header of HTTP checks. Default: the server address.
	Host string `yaml:"host"`
	// ExpectStatus is the accepted status, "200" or a range "200-399".
	// Default 200-399.
	ExpectStatus string `yaml:"expect_status"`
	// Interval between checks. Default 2s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check; less than Interval. Default 1s, or half of
	// Interval when Interval is 1s or less.
	Timeout time.Duration `yaml:"timeout"`
	// Rise consecutive good checks bring a server up. Default 2.
	Rise int `yaml:"rise"`
	// Fall consecutive failed checks take a server down. Default 3.
	Fall int `yaml:"fall"`

	At Positions `yaml:"-"`
}

// PassiveHealth marks servers down from the results of real requests.
type PassiveHealth struct {
	// Failures is how many consecutive failed requests (connect errors,
	// timeouts, resets) mark a server down. Default 3; 0 disables passive
	// checks.
	Failures *int `yaml:"failures"`
	// Count5xx also counts 5xx responses as failures. Default false.
	Count5xx bool `yaml:"count_5xx"`
	// Cooldown is how long a server stays down without an active check to
	// bring it back. Default 10s.
	Cooldown time.Duration `yaml:"cooldown"`

	At Positions `yaml:"-"`
}

// Server is one upstream server of a backend.
type Server struct {
	// Address is "host:port" of the server. Required; unique in a backend.
	Address string `yaml:"address"`
	// Weight is the server's share relative to the others, 1 to 1000.
	// Default 1.
	Weight int `yaml:"weight"`
	// MaxConns limits concurrent requests (layer 4: connections) at the
	// server, and so the connections to it; excess requests wait in the
	// backend's queue (queue_timeout). Default 1024; 0: no limit.
	MaxConns int `yaml:"max_conns"`
	// Backup servers take requests only when no other server is up.
	Backup bool `yaml:"backup"`
	// SlowStart ramps the weight up over this long after the server comes
	// up. 0 (default): full weight at once.
	SlowStart time.Duration `yaml:"slow_start"`
	// State is active (default), drain (no new requests; in-flight ones
	// finish) or disabled (no requests).
	State string `yaml:"state"`
	// SendProxy starts every connection to the server with a PROXY
	// protocol header carrying the client's address: v1 (text) or v2
	// (binary). Empty (default): none. With HTTP, connections to such a
	// server are not shared between clients. Refused in backends of udp
	// frontends.
	SendProxy string `yaml:"send_proxy"`

	At Positions `yaml:"-"`
}
