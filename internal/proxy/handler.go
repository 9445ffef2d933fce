package proxy

import (
	"net/http"
)

// Handler is the http.Handler of one frontend: route, then proxy.
type Handler struct {
	Router *Router
	// AltSvc, when set, is sent as Alt-Svc on HTTP/1.1 and HTTP/2 responses
	// to announce HTTP/3 (RFC 7838), e.g. `h3=":443"; ma=86400`.
	AltSvc string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.AltSvc != "" && r.ProtoMajor < 3 {
		w.Header().Set("Alt-Svc", h.AltSvc)
	}
	b := h.Router.Match(r.Host, r.URL.Path)
	if b == nil {
		Error(w, http.StatusNotFound)
		return
	}
	b.ServeHTTP(w, r)
}
