// Package admin serves the admin interface over HTTP (docs/admin.md): the
// JSON API that lists frontends, backends and servers with their live
// state and changes servers' states and weights or reloads the
// configuration; /metrics (Prometheus); and the /stats page. The runtime
// serves it on the admin unix socket (everything) and on admin.listen
// (reads, and changes only with the bearer token). What it shows and does
// comes from a Control, which the runtime implements.
package admin

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure Handler.
type Options struct {
	// Control is the running process.
	Control Control
	// Gatherer is the process's metrics, served at /metrics and read for
	// the servers' request counts and latencies; nil: no /metrics.
	Gatherer prometheus.Gatherer
	// Token is the bearer token with which a request may change things
	// when Full is not set; "": no change is allowed.
	Token string
	// Full allows every request to change things (the unix socket, whose
	// file mode decides who may connect).
	Full bool
	// Log receives the changes made, with who made them.
	Log *slog.Logger
}

// Control is the running process as the admin API sees it. Its methods
// are safe for concurrent use.
type Control interface {
	// Status is the process's identity and reload history.
	Status() Status
	// Frontends lists the frontends and their binds, in file order.
	Frontends() []Frontend
	// Backends lists the backends with their servers' live state, in
	// file order.
	Backends() []Backend
	// SetServer changes a server's state and/or weight (an override);
	// the error is a *NotFoundError for an unknown backend or server.
	SetServer(backend, server string, c Change) error
	// ClearServer removes a server's override.
	ClearServer(backend, server string) error
	// Reload reads the configuration file again and applies it, or
	// refuses it as a whole (the error says why, FILE:LINE:COL).
	Reload() error
}

// NotFoundError is an unknown backend or server.
type NotFoundError struct {
	// What is "backend" or "server"; Name its name.
	What, Name string
	// Known lists the names that exist.
	Known []string
}

func (e *NotFoundError) Error() string {
	return "no " + e.What + " " + quote(e.Name) + " (there are: " + joinOrNone(e.Known) + ")"
}

// Change is a change of a server: a state, a weight, or both.
type Change struct {
	// State is "active", "drain" or "disabled"; "": unchanged.
	State string `json:"state,omitempty"`
	// Weight is the new weight, 1 to 1000; 0: unchanged.
	Weight int `json:"weight,omitempty"`
}

// Status is the process's identity and reload history.
type Status struct {
	Version    string     `json:"version"`
	PID        int        `json:"pid"`
	Generation int        `json:"generation"` // 0 at a fresh start, +1 per binary upgrade
	Started    time.Time  `json:"started"`
	Config     Config     `json:"config"`
	Reloads    Reloads    `json:"reloads"`
	Overrides  []Override `json:"overrides"`
	// Writable says whether the request's credentials may change things
	// (filled by the handler).
	Writable bool `json:"writable"`
}

// Config names the running configuration.
type Config struct {
	Path   string `json:"path"`   // "" for the embedded quickstart
	Digest string `json:"digest"` // "sha256:HEX" of the configuration file's bytes
}

// Reloads is the reload history since the process started.
type Reloads struct {
	Total       int    `json:"total"`
	Failed      int    `json:"failed"`
	LastSuccess string `json:"last_success"` // RFC 3339; "": none
	LastError   string `json:"last_error"`   // "": the last reload succeeded, or none was tried
}

// Override is a server's override, as listed in Status.
type Override struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	State   string `json:"state,omitempty"`
	Weight  int    `json:"weight"` // 0: not overridden
}

// Frontend is a frontend and what it serves.
type Frontend struct {
	Name  string `json:"name"`
	Mode  string `json:"mode"`
	Binds []Bind `json:"binds"`
	// Connections and Requests are by protocol (http1, http2, http3,
	// tcp, udp), read from the metrics.
	Connections map[string]ConnCount `json:"connections"`
	Requests    map[string]ReqCount  `json:"requests"`
}

// Bind is one address of a frontend.
type Bind struct {
	Address   string   `json:"address"`
	Protocols []string `json:"protocols"`
}

// ConnCount counts a protocol's connections.
type ConnCount struct {
	Open     float64 `json:"open"`
	Accepted float64 `json:"accepted"`
}

// ReqCount counts a protocol's requests; Errors are 5xx responses.
type ReqCount struct {
	Total  float64 `json:"total"`
	Errors float64 `json:"errors"`
}

// Backend is a backend and its servers.
type Backend struct {
	Name          string   `json:"name"`
	Algorithm     string   `json:"algorithm"`
	Queue         float64  `json:"queue"`
	QueueTimeouts float64  `json:"queue_timeouts"`
	Servers       []Server `json:"servers"`
}

// Server is a server's live state.
type Server struct {
	Address          string  `json:"address"`
	State            string  `json:"state"` // up, down, drain or disabled
	Admin            string  `json:"admin"` // active, drain or disabled
	Healthy          bool    `json:"healthy"`
	Weight           int     `json:"weight"`
	ConfiguredWeight int     `json:"configured_weight"`
	Override         *Change `json:"override"`
	InFlight         int64   `json:"in_flight"`
	Requests         float64 `json:"requests"`
	Failures         float64 `json:"failures"`
	Latency          Latency `json:"latency"`
	Checks           []Check `json:"checks"`
	LastError        string  `json:"last_error"`
}

// Latency is a server's response time quantiles, in seconds, estimated
// from its histogram; 0 without a sample.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// Check is one active health check.
type Check struct {
	Time  time.Time `json:"time"`
	OK    bool      `json:"ok"`
	Error string    `json:"error"`
}

// Handler returns the admin interface: /api/, /metrics, /stats.
func Handler(o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	a := &api{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", a.status)
	mux.HandleFunc("GET /api/frontends", a.frontends)
	mux.HandleFunc("GET /api/backends", a.backends)
	mux.HandleFunc("POST /api/servers/{backend}/{server}", a.write(a.setServer))
	mux.HandleFunc("DELETE /api/servers/{backend}/{server}/override", a.write(a.clearServer))
	mux.HandleFunc("POST /api/reload", a.write(a.reload))
	mux.HandleFunc("/api/", notFound)
	mux.Handle("GET /metrics", a.metrics())
	mux.Handle("GET /stats", statsPage())
	mux.Handle("GET /{$}", http.RedirectHandler("/stats", http.StatusFound))
	return mux
}
