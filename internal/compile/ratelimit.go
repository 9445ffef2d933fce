package compile

import (
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/ratelimit"
)

// rateLimit compiles fe's rate_limits: the zero RateLimit (no limiter)
// when it has none. The buckets are new with each compile: a reload
// gives every client a full bucket.
func rateLimit(cfg *config.Config, fe *config.Frontend) (proxy.RateLimit, config.ErrorList) {
	if fe.RateLimits == nil || fe.RateLimits.PerClient == nil {
		return proxy.RateLimit{}, nil
	}
	p := fe.RateLimits.PerClient
	key, err := ratelimit.ParseKey(p.Key)
	if err != nil {
		return proxy.RateLimit{}, config.ErrorList{cfg.Errorf(p.At.Value("key"), "frontend %q: rate_limits per_client key %q: %v", fe.Name, p.Key, err)}
	}
	return proxy.RateLimit{
		Limiter: ratelimit.New(ratelimit.Config{Requests: p.Requests, Per: p.Per, Burst: p.Burst, MaxClients: p.MaxClients}),
		Key:     key,
	}, nil
}
