package runtime

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"strconv"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/health"
	"github.com/portcullis/portcullis/internal/proxy"
)

// compileBackend builds a backend: its upstream TLS, health settings,
// servers (with their live state from reg) and balancer.
func compileBackend(cfg *config.Config, b *config.Backend, readFile config.ReadFileFunc, reg *registry, log *slog.Logger) (*proxy.Backend, []serverPlan, config.ErrorList) {
	var errs config.ErrorList
	up := proxy.Upstream{
		Protocol:       b.Protocol,
		ConnectTimeout: b.Timeouts.Connect,
		ServerTimeout:  b.Timeouts.Server,
		IdleTimeout:    b.Timeouts.Idle,
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
	var active *health.Active
	if hc := b.HealthCheck; hc != nil {
		lo, hi, _ := config.ParseStatusRange(hc.ExpectStatus)
		active = &health.Active{
			Kind: hc.Type, Port: hc.Port, Send: hc.Send,
			Path: hc.Path, Host: hc.Host,
			StatusMin: lo, StatusMax: hi,
			Interval: hc.Interval, Timeout: hc.Timeout,
			Rise: hc.Rise, Fall: hc.Fall,
			TLS: up.TLS,
		}
	}
	passive := health.Passive{
		Failures: *b.PassiveHealth.Failures,
		Count5xx: b.PassiveHealth.Count5xx,
		Cooldown: b.PassiveHealth.Cooldown,
	}
	var servers []*proxy.Server
	var plans []serverPlan
	for _, s := range b.Servers {
		key := serverKey{b.Name, s.Address}
		ls := reg.lookup(key, active, passive, log)
		m := &balance.Member{
			State:     ls.state,
			Weight:    s.Weight,
			Backup:    s.Backup,
			MaxConns:  s.MaxConns,
			SlowStart: s.SlowStart,
			ID:        strconv.FormatUint(balance.HashString(b.Name+"\x00"+s.Address), 36),
		}
		ps := &proxy.Server{Member: m, Observe: ls.monitor.Observe}
		switch s.SendProxy {
		case "v1":
			ps.SendProxy = 1
		case "v2":
			ps.SendProxy = 2
		}
		servers = append(servers, ps)
		plans = append(plans, serverPlan{key: key, live: ls, active: active, passive: passive, admin: adminState(s.State)})
	}
	pb, err := proxy.NewBackend(b.Name, servers, proxy.BackendOptions{
		Upstream:     up,
		Algorithm:    b.Balance,
		HashKey:      b.HashKey,
		StickyCookie: stickyCookie(b),
		StickyMaxAge: stickyMaxAge(b),
		Retries:      *b.Retries,
		RetryBudget:  *b.RetryBudget,
		QueueTimeout: b.QueueTimeout,
		Count5xx:     b.PassiveHealth.Count5xx,
	}, log)
	if err != nil {
		errs = append(errs, cfg.Errorf(b.At.Value("balance"), "backend %q: %v", b.Name, err))
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	return pb, plans, nil
}

func adminState(s string) balance.Admin {
	switch s {
	case "drain":
		return balance.Drain
	case "disabled":
		return balance.Disabled
	}
	return balance.Active
}

func stickyCookie(b *config.Backend) string {
	if b.Sticky == nil {
		return ""
	}
	return b.Sticky.Cookie
}

func stickyMaxAge(b *config.Backend) time.Duration {
	if b.Sticky == nil {
		return 0
	}
	return b.Sticky.MaxAge
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
