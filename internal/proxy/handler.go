package proxy

import (
	"log/slog"
	"net/http"
)

// Handler is the http.Handler of one frontend: route, then proxy.
type Handler struct {
	Router *Router
	// AltSvc, when set, is sent as Alt-Svc on HTTP/1.1 and HTTP/2 responses
	// to announce HTTP/3 (RFC 7838), e.g. `h3=":443"; ma=86400`.
	AltSvc string
	// Log receives one line per request answered here with a 5xx. Nil:
	// slog.Default().
	Log *slog.Logger
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g := guardFrom(r.Context()); g != nil {
		if !g.admit(w, r) {
			return
		}
		defer g.done(r)
	}
	if h.AltSvc != "" && r.ProtoMajor < 3 {
		w.Header().Set("Alt-Svc", h.AltSvc)
	}
	if r.Method == http.MethodConnect {
		// A reverse proxy does not tunnel. Plain CONNECT (RFC 9110
		// §9.3.6) is for forward proxies; extended CONNECT (RFC 8441,
		// RFC 9220: WebSocket over HTTP/2 and HTTP/3) would have to be
		// turned into an HTTP/1.1 Upgrade toward the server. Forwarded
		// as it is, either would reach the server as a malformed
		// "CONNECT /path HTTP/1.1".
		log := h.Log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("request failed", "status", http.StatusNotImplemented, "reason", "CONNECT is not supported (no tunnels, no WebSocket over HTTP/2 or HTTP/3)",
			"proto", r.Proto, "host", r.Host, "path", r.URL.Path, "client", r.RemoteAddr)
		Error(w, http.StatusNotImplemented)
		return
	}
	rt := h.Router.Lookup(r.Host, r.URL.Path)
	switch {
	case rt == nil:
		Error(w, http.StatusNotFound)
	case rt.Handler != nil:
		rt.Handler.ServeHTTP(w, r)
	default:
		rt.Backend.ServeHTTP(w, r)
	}
}
