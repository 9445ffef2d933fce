package l4

import "time"

// The timeouts the configuration gives a frontend that sets none
// (config.DefaultProxyTimeout, config.DefaultTCPIdleTimeout,
// config.DefaultUDPIdleTimeout): l4 has no defaults of its own, so the
// tests pass them as compile does.
const (
	testHeaderTimeout  = 5 * time.Second
	testTCPIdleTimeout = 10 * time.Minute
	testUDPIdleTimeout = 30 * time.Second
)
