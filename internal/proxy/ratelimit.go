package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/ratelimit"
)

// LimitRatePerClient is the name of the per-client rate limit, as the
// configuration spells it and as it is logged when it fires.
const LimitRatePerClient = "rate_limits.per_client"

// RateLimit is a frontend's per-client rate limit.
type RateLimit struct {
	// Limiter holds the clients' buckets. Nil: no limit.
	Limiter *ratelimit.Limiter
	// Key tells clients apart.
	Key ratelimit.Key
}

// RateLimited returns next behind rl: a request over its client's rate
// gets 429 with Retry-After (whole seconds, at least 1) and never reaches
// next; each refusal is noted in ev (nil: not logged), summarized once a
// second as "limit reached, request refused" with
// limit=rate_limits.per_client and the frontend. With no limiter it
// returns next: a frontend without rate limits pays nothing.
func RateLimited(next http.Handler, rl RateLimit, ev *limit.Events, frontend string) http.Handler {
	if rl.Limiter == nil {
		return next
	}
	return &rateLimited{next: next, rl: rl, events: ev, frontend: frontend}
}

type rateLimited struct {
	next     http.Handler
	rl       RateLimit
	events   *limit.Events
	frontend string
}

func (h *rateLimited) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ok, retry := h.rl.Limiter.Allow(h.key(r), time.Now())
	if ok {
		h.next.ServeHTTP(w, r)
		return
	}
	if h.events != nil {
		h.events.Note("limit reached, request refused", nil, "limit", LimitRatePerClient, "frontend", h.frontend)
	}
	if l := logFrom(r.Context()); l != nil {
		l.refused = accesslog.RateLimited
	}
	secs := (retry + time.Second - 1) / time.Second
	w.Header().Set("Retry-After", strconv.FormatInt(max(int64(secs), 1), 10))
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// A body would have to be read before the next request.
		w.Header().Set("Connection", "close")
	}
	Error(w, http.StatusTooManyRequests)
}

// key returns r's client key: its source IP address, or the header's
// value. A request without the header is keyed by its source, marked so
// that no header value can take its bucket (a field value holds no NUL).
func (h *rateLimited) key(r *http.Request) string {
	if h.rl.Key.Kind == ratelimit.KeyHeader {
		if v := r.Header[h.rl.Key.Name]; len(v) > 0 && v[0] != "" {
			return v[0]
		}
		return "\x00" + sourceIP(r.RemoteAddr)
	}
	return sourceIP(r.RemoteAddr)
}

// sourceIP is the address of "host:port" (RemoteAddr: the PROXY
// header's source when the bind trusts one), without allocating.
func sourceIP(hostport string) string {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		return hostport
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport[:i], "["), "]")
}
