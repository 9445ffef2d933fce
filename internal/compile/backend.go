package compile

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/health"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/upstream"
)

// compileBackend builds a backend: its servers (with their live state
// from live), balancer, queue and retry budget (upstream), and its HTTP
// side: upstream TLS and connection pool (proxy). The balance algorithm,
// the hash key and the servers' states are parsed here, by the packages
// that own them.
func compileBackend(cfg *config.Config, b *config.Backend, readFile config.ReadFileFunc, live Live, log *slog.Logger) (*proxy.Backend, *upstream.Backend, config.ErrorList) {
	var errs config.ErrorList
	algorithm, err := balance.ParseAlgorithm(b.Balance)
	if err != nil {
		errs = append(errs, cfg.Errorf(b.At.Value("balance"), "backend %q: %v", b.Name, err))
	}
	var hashKey upstream.HashKey
	if algorithm == balance.Hash { // else the configuration refuses a hash_key
		if hashKey, err = upstream.ParseHashKey(b.HashKey); err != nil {
			errs = append(errs, cfg.Errorf(b.At.Value("hash_key"), "backend %q: hash_key %q: %v", b.Name, b.HashKey, err))
		}
	}
	up := proxy.Upstream{
		Protocol:         b.Protocol,
		ServerTimeout:    b.Timeouts.Server,
		IdleTimeout:      b.Timeouts.Idle,
		MaxIdlePerServer: config.DefaultServerMaxConns,
	}
	if t := b.TLS; t != nil {
		conf, err := upstreamTLS(cfg, b.Name, t, readFile, log)
		if err != nil {
			errs = append(errs, err)
		}
		up.TLS = conf
		if conf != nil {
			conf.InsecureSkipVerify = t.Verify != nil && !*t.Verify
		}
	}
	servers, serr := compileServers(cfg, b, up.TLS, live, log)
	errs = append(errs, serr...)
	if len(errs) > 0 && algorithm == "" {
		return nil, nil, errs
	}
	ub, err := upstream.NewBackend(b.Name, servers, upstream.Options{
		Algorithm:      algorithm,
		HashKey:        hashKey,
		Sticky:         sticky(b),
		Retries:        *b.Retries,
		RetryBudget:    *b.RetryBudget,
		QueueTimeout:   b.QueueTimeout,
		ConnectTimeout: b.Timeouts.Connect,
		Count5xx:       b.PassiveHealth.Count5xx,
		Metrics:        live.Metrics().Backend(b.Name),
	})
	if err != nil {
		errs = append(errs, cfg.Errorf(b.At.Value("balance"), "backend %q: %v", b.Name, err))
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	return proxy.NewBackend(ub, proxy.BackendOptions{Upstream: up}, log), ub, nil
}

// compileServers returns the servers of b, with the live state live has
// for them and their health checks (HTTP checks over tlsConf when set),
// and the errors of their state settings.
func compileServers(cfg *config.Config, b *config.Backend, tlsConf *tls.Config, live Live, log *slog.Logger) ([]*upstream.Server, config.ErrorList) {
	var active *health.Active
	if hc := b.HealthCheck; hc != nil {
		lo, hi, _ := config.ParseStatusRange(hc.ExpectStatus)
		active = &health.Active{
			Kind: hc.Type, Port: hc.Port, Send: hc.Send,
			Path: hc.Path, Host: hc.Host,
			StatusMin: lo, StatusMax: hi,
			Interval: hc.Interval, Timeout: hc.Timeout,
			Rise: hc.Rise, Fall: hc.Fall,
			TLS: tlsConf,
		}
	}
	passive := health.Passive{
		Failures: *b.PassiveHealth.Failures,
		Count5xx: b.PassiveHealth.Count5xx,
		Cooldown: b.PassiveHealth.Cooldown,
	}
	var errs config.ErrorList
	servers := make([]*upstream.Server, 0, len(b.Servers))
	for _, s := range b.Servers {
		admin, err := balance.ParseAdmin(s.State)
		if err != nil {
			errs = append(errs, cfg.Errorf(s.At.Value("state"), "backend %q: %v", b.Name, err))
		}
		sc := upstream.ServerConfig{
			Address:   s.Address,
			Weight:    s.Weight,
			Backup:    s.Backup,
			MaxConns:  s.MaxConns,
			SlowStart: s.SlowStart,
			Admin:     admin,
		}
		switch s.SendProxy {
		case "v1":
			sc.SendProxy = 1
		case "v2":
			sc.SendProxy = 2
		}
		servers = append(servers, live.Servers().Server(b.Name, sc, active, passive, log))
	}
	return servers, errs
}

// sticky is b's sticky cookie; the zero upstream.Sticky without one.
func sticky(b *config.Backend) upstream.Sticky {
	if b.Sticky == nil {
		return upstream.Sticky{}
	}
	return upstream.Sticky{Cookie: b.Sticky.Cookie, MaxAge: b.Sticky.MaxAge}
}

// upstreamTLS builds the client TLS configuration toward a backend's
// servers: trusted roots from ca (else the system's), the server name.
func upstreamTLS(cfg *config.Config, backend string, t *config.BackendTLS, readFile config.ReadFileFunc, log *slog.Logger) (*tls.Config, *config.Error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pem, err := readFile(cfg.Path(t.CA))
		if err != nil {
			return nil, cfg.Errorf(t.At.Value("ca"), "backend %q: cannot read tls ca: %v", backend, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, cfg.Errorf(t.At.Value("ca"), "backend %q: tls ca %s holds no PEM certificate", backend, t.CA)
		}
		conf.RootCAs = pool
	}
	if t.Verify != nil && !*t.Verify {
		log.Warn("TLS to the servers is not verified (tls verify: false): anyone on the path can impersonate them", "backend", backend)
	}
	return conf, nil
}
