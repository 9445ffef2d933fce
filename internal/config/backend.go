package config

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxWeight is the highest weight of a server, in the file and through
// the admin API.
const MaxWeight = 1000

// Backend defaults: what a backend gets for a key the file leaves out.
// They are defined here only; the compile step passes the values to the
// packages that use them (health takes its settings as given).
const (
	DefaultRetries         = 2
	DefaultRetryBudget     = 20 // percent
	DefaultQueueTimeout    = 5 * time.Second
	DefaultConnectTimeout  = 5 * time.Second
	DefaultServerTimeout   = 60 * time.Second
	DefaultIdleTimeout     = 90 * time.Second
	DefaultCheckInterval   = 2 * time.Second
	DefaultCheckTimeout    = time.Second // or half an interval not longer than it
	DefaultRise            = 2
	DefaultFall            = 3
	DefaultPassiveFailures = 3
	DefaultPassiveCooldown = 10 * time.Second
	DefaultStickyCookie    = "portcullis_server"
	DefaultExpectStatus    = "200-399"
	maxRetries             = 10
	// defaultBalance is balance.RoundRobin; the compile step parses the
	// name (balance.ParseAlgorithm).
	defaultBalance = "round_robin"
	// defaultState is balance.Active; the compile step parses a server's
	// state (balance.ParseAdmin).
	defaultState  = "active"
	protocolHTTP1 = "http1"
	protocolAuto  = "auto"
)

var protocolNames = []string{"http1", "h2c", "h2", "auto"}

// setDefaults fills what the file left out: a written zero is kept, so that
// validation can refuse it with its position. uses are the frontends that
// route to the backend.
func (b *Backend) setDefaults(uses []backendUse) {
	if b.Balance == "" {
		b.Balance = defaultBalance
	}
	if b.Protocol == "" {
		b.Protocol = protocolHTTP1
		if b.TLS != nil {
			b.Protocol = protocolAuto
		}
	}
	if b.Sticky != nil && b.Sticky.Cookie == "" {
		b.Sticky.Cookie = DefaultStickyCookie
	}
	t := &b.Timeouts
	defaultDuration(&t.Connect, t.At, "connect", DefaultConnectTimeout)
	defaultDuration(&t.Server, t.At, "server", DefaultServerTimeout)
	defaultDuration(&t.Idle, t.At, "idle", DefaultIdleTimeout)
	defaultDuration(&b.QueueTimeout, b.At, "queue_timeout", DefaultQueueTimeout)
	if b.Retries == nil {
		b.Retries = intPtr(DefaultRetries)
	}
	if b.RetryBudget == nil {
		b.RetryBudget = intPtr(DefaultRetryBudget)
	}
	if hc := b.HealthCheck; hc != nil {
		if hc.Type == "" {
			switch {
			case hc.Path != "":
				hc.Type = "http"
			case usedBy(uses, ModeUDP) != nil:
				hc.Type = "udp"
			default:
				hc.Type = "tcp"
			}
		}
		if hc.Type == "http" && hc.Path == "" && !hc.At.hasValue("path") {
			hc.Path = "/"
		}
		if hc.ExpectStatus == "" {
			hc.ExpectStatus = DefaultExpectStatus
		}
		defaultDuration(&hc.Interval, hc.At, "interval", DefaultCheckInterval)
		defaultDuration(&hc.Timeout, hc.At, "timeout", DefaultCheckTimeout)
		// With an interval no longer than the default timeout, a timeout
		// the file leaves out is half the interval, so that a check ends
		// before the next one starts.
		if !hc.At.hasValue("timeout") && hc.Interval > 1 && hc.Interval <= hc.Timeout {
			hc.Timeout = hc.Interval / 2
		}
		if !hc.At.hasValue("rise") {
			hc.Rise = DefaultRise
		}
		if !hc.At.hasValue("fall") {
			hc.Fall = DefaultFall
		}
	}
	if b.PassiveHealth == nil {
		b.PassiveHealth = &PassiveHealth{}
	}
	if p := b.PassiveHealth; p.Failures == nil {
		p.Failures = intPtr(DefaultPassiveFailures)
	}
	defaultDuration(&b.PassiveHealth.Cooldown, b.PassiveHealth.At, "cooldown", DefaultPassiveCooldown)
	for _, s := range b.Servers {
		if s == nil {
			continue
		}
		if !s.At.hasValue("weight") {
			s.Weight = 1
		}
		defaultInt(&s.MaxConns, s.At, "max_conns", DefaultServerMaxConns)
		if s.State == "" {
			s.State = defaultState
		}
	}
}

// DefaultServerMaxConns is a server's max_conns when the file sets none:
// as Envoy's circuit breakers, enough for a busy server, and a bound on
// the connections any set of clients can make the proxy open to it.
const DefaultServerMaxConns = 1024

func defaultDuration(d *time.Duration, at Positions, key string, def time.Duration) {
	if !at.hasValue(key) {
		*d = def
	}
}

// defaultInt sets *v to def when the file left key out.
func defaultInt(v *int, at Positions, key string, def int) {
	if !at.hasValue(key) {
		*v = def
	}
}

func intPtr(i int) *int { return &i }

// validate checks one backend, used by the frontends uses; add records a
// problem.
func (b *Backend) validate(uses []backendUse, add func(Pos, string, ...any)) {
	where := fmt.Sprintf("backend %q", b.Name)
	oneOf := func(key, value string, valid []string) {
		if slices.Contains(valid, value) {
			return
		}
		add(b.At.Value(key), "%s: %s %q: want one of %s", where, key, value, strings.Join(valid, ", "))
	}
	oneOf("protocol", b.Protocol, protocolNames)
	for _, u := range uses {
		if u.passthrough {
			b.validatePassthrough(u.fe, where, add)
			break
		}
	}
	switch {
	case b.Balance == "hash" && b.HashKey == "":
		add(b.At.Value("balance"), "%s: balance hash needs hash_key: source, uri, header:NAME or cookie:NAME", where)
	case b.Balance != "hash" && b.HashKey != "":
		add(b.At.Key("hash_key"), "%s: hash_key is only used with balance: hash", where)
	}
	// The names of balance and the grammar of hash_key are checked by the
	// compile step (balance.ParseAlgorithm, upstream.ParseHashKey).
	b.validateSettings(where, add)
	b.validateServers(uses, where, add)
}

// validateSettings checks the backend's settings other than balance,
// hash_key and its servers: sticky, protocol against tls, timeouts,
// retries and health checks.
func (b *Backend) validateSettings(where string, add func(Pos, string, ...any)) {
	if s := b.Sticky; s != nil && !validToken(s.Cookie) {
		add(s.At.Value("cookie"), "%s: sticky cookie %q is not a valid cookie name (letters, digits, - and _)", where, s.Cookie)
	}
	if b.Sticky != nil && b.Sticky.MaxAge < 0 {
		add(b.Sticky.At.Value("max_age"), "%s: sticky max_age must not be negative", where)
	}
	switch {
	case b.Protocol == "h2c" && b.TLS != nil:
		add(b.At.Value("protocol"), "%s: protocol h2c is HTTP/2 without TLS, but tls is set: use h2 (or auto) with tls", where)
	case (b.Protocol == "h2" || b.Protocol == protocolAuto) && b.TLS == nil:
		add(b.At.Value("protocol"), "%s: protocol %s needs tls: (use h2c for HTTP/2 without TLS)", where, b.Protocol)
	}
	t := b.Timeouts
	positive(add, t.At, "connect", t.Connect, where+": timeouts connect")
	positive(add, t.At, "server", t.Server, where+": timeouts server")
	positive(add, t.At, "idle", t.Idle, where+": timeouts idle")
	positive(add, b.At, "queue_timeout", b.QueueTimeout, where+": queue_timeout")
	if r := *b.Retries; r < 0 || r > maxRetries {
		add(b.At.Value("retries"), "%s: retries %d: want 0 to %d", where, r, maxRetries)
	}
	if r := *b.RetryBudget; r < 0 || r > 100 {
		add(b.At.Value("retry_budget"), "%s: retry_budget %d: want a percentage from 0 to 100", where, r)
	}
	if hc := b.HealthCheck; hc != nil {
		b.validateCheck(hc, where, add)
	}
	if p := b.PassiveHealth; *p.Failures < 0 {
		add(p.At.Value("failures"), "%s: passive_health failures must be 0 (off) or more", where)
	}
	positive(add, b.PassiveHealth.At, "cooldown", b.PassiveHealth.Cooldown, where+": passive_health cooldown")
}

// validateServers checks the server list: at least one server that is
// not a backup, no address twice, and each server's settings.
func (b *Backend) validateServers(uses []backendUse, where string, add func(Pos, string, ...any)) {
	if len(b.Servers) == 0 {
		add(b.At.Value("servers"), "%s: no servers: add servers: [{address: 127.0.0.1:9001}]", where)
	}
	seen := map[string]Pos{}
	primaries := 0
	for _, s := range b.Servers {
		if err := serverAddress(s.Address); err != nil {
			add(s.At.Value("address"), "%s: %v", where, err)
		} else if first, dup := seen[s.Address]; dup {
			add(s.At.Value("address"), "%s: server %s is listed twice (first at line %d): give it a larger weight instead", where, s.Address, first.Line)
		} else {
			seen[s.Address] = s.At.Value("address")
		}
		if s.Weight < 1 || s.Weight > MaxWeight {
			add(s.At.Value("weight"), "%s: weight %d: want 1 to %d (to take a server out, use state: disabled)", where, s.Weight, MaxWeight)
		}
		if s.MaxConns < 0 {
			add(s.At.Value("max_conns"), "%s: max_conns must be 0 (no limit) or more", where)
		}
		if s.SlowStart < 0 {
			add(s.At.Value("slow_start"), "%s: slow_start must not be negative", where)
		}
		// The names of states are checked by the compile step
		// (balance.ParseAdmin).
		switch {
		case s.SendProxy == "":
		case s.SendProxy != "v1" && s.SendProxy != "v2":
			add(s.At.Value("send_proxy"), "%s: send_proxy %q: want v1 (text) or v2 (binary)", where, s.SendProxy)
		case usedBy(uses, ModeUDP) != nil:
			add(s.At.Key("send_proxy"), "%s: send_proxy is refused: udp frontend %q relays datagrams to this backend, and a PROXY header starts TCP connections only", where, usedBy(uses, ModeUDP).Name)
		}
		if !s.Backup {
			primaries++
		}
	}
	if len(b.Servers) > 0 && primaries == 0 {
		add(b.At.Value("servers"), "%s: every server is a backup: at least one must not be", where)
	}
}

// validatePassthrough refuses what only HTTP can use in a backend that fe
// passes bytes through to: fe is a tcp or udp frontend, or an http
// frontend with an sni route to the backend. Settings that passing bytes
// merely ignores (such as a default protocol) are not reported.
func (b *Backend) validatePassthrough(fe *Frontend, where string, add func(Pos, string, ...any)) {
	by := fmt.Sprintf("%s frontend %q", fe.Mode, fe.Name)
	if fe.Mode == ModeHTTP {
		by = fmt.Sprintf("an sni route of frontend %q", fe.Name)
	}
	if b.Sticky != nil {
		add(b.At.Key("sticky"), "%s: sticky is refused: it pins HTTP clients by cookie, and %s uses this backend; for affinity use balance: hash with hash_key: source", where, by)
	}
	if b.Balance == "hash" && b.HashKey != "" && b.HashKey != "source" {
		add(b.At.Value("hash_key"), "%s: hash_key %s needs HTTP requests, and %s uses this backend: use hash_key: source (the client address)", where, b.HashKey, by)
	}
	if b.TLS != nil {
		add(b.At.Key("tls"), "%s: tls is refused: %s passes bytes through to this backend; TLS origination toward servers is only for the HTTP routes of http frontends (give them a backend of their own)", where, by)
	}
	if b.At.hasValue("protocol") && slices.Contains(protocolNames, b.Protocol) {
		add(b.At.Key("protocol"), "%s: protocol is refused: it says how HTTP requests reach the servers, and %s passes bytes through to them; remove protocol (or give http frontends a backend of their own)", where, by)
	}
}

func (b *Backend) validateCheck(hc *HealthCheck, where string, add func(Pos, string, ...any)) {
	where += ": health_check"
	switch hc.Type {
	case "http":
		if !strings.HasPrefix(hc.Path, "/") {
			add(hc.At.Value("path"), "%s path %q must start with /", where, hc.Path)
		}
		if _, _, err := ParseStatusRange(hc.ExpectStatus); err != nil {
			add(hc.At.Value("expect_status"), "%s expect_status: %v", where, err)
		}
	case "tcp", "udp":
		for _, key := range []string{"path", "host", "expect_status"} {
			if hc.At.hasValue(key) {
				add(hc.At.Key(key), "%s: %s is only used by type: http", where, key)
			}
		}
	default:
		add(hc.At.Value("type"), "%s type %q: want http, tcp or udp", where, hc.Type)
	}
	if hc.Type != "udp" && hc.At.hasValue("send") {
		add(hc.At.Key("send"), "%s: send is only used by type: udp (the datagram each check sends)", where)
	}
	if hc.At.hasValue("port") && (hc.Port < 1 || hc.Port > 65535) {
		add(hc.At.Value("port"), "%s port %d: want 1 to 65535 (leave it out to check each server's own port)", where, hc.Port)
	}
	positive(add, hc.At, "interval", hc.Interval, where+" interval")
	positive(add, hc.At, "timeout", hc.Timeout, where+" timeout")
	if hc.Timeout >= hc.Interval && hc.Interval > 0 {
		add(hc.At.Value("timeout"), "%s timeout %s must be shorter than interval %s", where, hc.Timeout, hc.Interval)
	}
	if hc.Rise < 1 {
		add(hc.At.Value("rise"), "%s rise must be 1 or more", where)
	}
	if hc.Fall < 1 {
		add(hc.At.Value("fall"), "%s fall must be 1 or more", where)
	}
}

func positive(add func(Pos, string, ...any), at Positions, key string, d time.Duration, what string) {
	if d <= 0 {
		add(at.Value(key), "%s must be longer than 0", what)
	}
}

// ParseStatusRange parses "200" or "200-399".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q: want a status such as 200 or a range such as 200-399", s)
	}
	return lo, hi, nil
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return http.CanonicalHeaderKey(s) != ""
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
