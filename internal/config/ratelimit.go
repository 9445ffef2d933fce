package config

import "time"

// RateLimits are a frontend's request rate limits (http frontends only;
// docs/configuration.md, "rate_limits").
type RateLimits struct {
	// PerClient limits each client's request rate. Nil: no limit.
	PerClient *PerClientLimit `yaml:"per_client"`

	At Positions `yaml:"-"`
}

// PerClientLimit is a token bucket per client: Requests per Per on
// average, Burst at once; beyond it a request gets 429 with Retry-After.
type PerClientLimit struct {
	// Key tells clients apart: source (default: the client IP address,
	// the one a trusted PROXY header names) or header:NAME (the header's
	// value; a request without it is keyed by its source). The compile
	// step checks the grammar (ratelimit.ParseKey).
	Key string `yaml:"key"`
	// Requests is how many requests a client may send per Per on
	// average. Required, 1 to 1000000.
	Requests int `yaml:"requests"`
	// Per is the period of Requests. Default 1s; 1ms to 24h.
	Per time.Duration `yaml:"per"`
	// Burst is how many requests a client may send at once (the bucket's
	// size), 0 to 1000000. Default, and 0: Requests.
	Burst int `yaml:"burst"`
	// MaxClients bounds how many clients are remembered (about 64 bytes
	// each); the least recently seen is forgotten beyond it. Default
	// 1048576; 1024 to 16777216.
	MaxClients int `yaml:"max_clients"`

	At Positions `yaml:"-"`
}

// Defaults and bounds of PerClientLimit.
const (
	DefaultRateKey        = "source"
	DefaultRatePer        = time.Second
	DefaultRateMaxClients = 1 << 20

	maxRateRequests   = 1000000
	minRatePer        = time.Millisecond
	maxRatePer        = 24 * time.Hour
	minRateMaxClients = 1 << 10
	maxRateMaxClients = 1 << 24
)

func (r *RateLimits) setDefaults() {
	p := r.PerClient
	if p == nil {
		return
	}
	if !p.At.hasValue("key") {
		p.Key = DefaultRateKey
	}
	defaultDuration(&p.Per, p.At, "per", DefaultRatePer)
	defaultInt(&p.MaxClients, p.At, "max_clients", DefaultRateMaxClients)
	if p.Burst == 0 && p.Requests >= 1 && p.Requests <= maxRateRequests {
		p.Burst = p.Requests
	}
}

func (r *RateLimits) validate(mode, where string, add func(Pos, string, ...any)) {
	if mode == ModeTCP || mode == ModeUDP {
		add(r.At.Self, "%s: rate_limits are for http frontends; a %s frontend uses limits max_conns_per_client", where, mode)
		return
	}
	p := r.PerClient
	if p == nil {
		return
	}
	where += ": rate_limits per_client"
	switch {
	case !p.At.hasValue("requests"):
		add(p.At.Self, "%s: requests is required: how many requests a client may send in each period per, 1 to %d", where, maxRateRequests)
	case p.Requests < 1 || p.Requests > maxRateRequests:
		add(p.At.Value("requests"), "%s: requests %d: want 1 to %d", where, p.Requests, maxRateRequests)
	}
	if p.Per < minRatePer || p.Per > maxRatePer {
		add(p.At.Value("per"), "%s: per %s: want %s to %s (default %s)", where, p.Per, minRatePer, maxRatePer, DefaultRatePer)
	}
	if p.Burst < 0 || p.Burst > maxRateRequests {
		add(p.At.Value("burst"), "%s: burst %d: want 0 (the same as requests) to %d", where, p.Burst, maxRateRequests)
	}
	if p.MaxClients < minRateMaxClients || p.MaxClients > maxRateMaxClients {
		add(p.At.Value("max_clients"), "%s: max_clients %d: want %d to %d (default %d, about 64 bytes each)", where, p.MaxClients, minRateMaxClients, maxRateMaxClients, DefaultRateMaxClients)
	}
}
