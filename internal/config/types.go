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

	At Positions `yaml:"-"`
}

// DefaultGrace is Global.Grace when the file does not set it.
const DefaultGrace = 30 * time.Second

// Frontend is a set of listening addresses that share routes.
type Frontend struct {
	Name   string   `yaml:"-"` // the mapping key
	Bind   []*Bind  `yaml:"bind"`
	Routes []*Route `yaml:"routes"`

	At Positions `yaml:"-"`
}

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

// Route sends matching requests to a backend. Routes are tried in order;
// the first match wins; no match is a 404.
type Route struct {
	// Host matches the request's host (without port, case-insensitive):
	// exactly, or "*.example.com" for any name ending in ".example.com".
	// Empty: any host.
	Host string `yaml:"host"`
	// PathPrefix matches requests whose path starts with it. Empty: any path.
	PathPrefix string `yaml:"path_prefix"`
	// Backend is the name of a backend. Required.
	Backend string `yaml:"backend"`

	At Positions `yaml:"-"`
}

// Backend is a pool of servers.
type Backend struct {
	Name    string    `yaml:"-"` // the mapping key
	Servers []*Server `yaml:"servers"`

	At Positions `yaml:"-"`
}

// Server is one upstream server of a backend.
type Server struct {
	// Address is "host:port" of the server, plain HTTP/1.1. Required.
	Address string `yaml:"address"`

	At Positions `yaml:"-"`
}
