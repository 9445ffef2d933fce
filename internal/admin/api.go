package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxBody bounds a request body of the API, in bytes.
const maxBody = 64 << 10

type api struct {
	o Options
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	st := a.o.Control.Status()
	st.Writable = a.authorized(r) == nil
	if st.Overrides == nil {
		st.Overrides = []Override{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) frontends(w http.ResponseWriter, _ *http.Request) {
	fs := a.o.Control.Frontends()
	readFrontends(a.o.Gatherer, fs)
	writeJSON(w, http.StatusOK, map[string]any{"frontends": nonNil(fs)})
}

func (a *api) backends(w http.ResponseWriter, _ *http.Request) {
	bs := a.o.Control.Backends()
	readBackends(a.o.Gatherer, bs)
	writeJSON(w, http.StatusOK, map[string]any{"backends": nonNil(bs)})
}

// errDenied is a change refused for its credentials; errUnauthorized one
// without any.
var (
	errUnauthorized = errors.New("changes on the admin listener need the token: send Authorization: Bearer TOKEN (admin.token_file), or use the admin socket")
	errNoToken      = errors.New("this admin listener is read-only: set admin.token_file to allow changes with a token, or use the admin socket")
	errDenied       = errors.New("wrong token")
)

// authorized says whether r may change things: always on the socket, with
// the token on the listener.
func (a *api) authorized(r *http.Request) error {
	if a.o.Full {
		return nil
	}
	if a.o.Token == "" {
		return errNoToken
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return errUnauthorized
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.o.Token)) != 1 {
		return errDenied
	}
	return nil
}

// write wraps a handler that changes things: it checks the credentials
// first.
func (a *api) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch err := a.authorized(r); {
		case errors.Is(err, errUnauthorized):
			w.Header().Set("WWW-Authenticate", `Bearer realm="portcullis admin"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		case err != nil:
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		h(w, r)
	}
}

func (a *api) setServer(w http.ResponseWriter, r *http.Request) {
	var c Change
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err == nil {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		err = dec.Decode(&c)
	}
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad body: %v; send JSON such as {\"state\": \"drain\"} or {\"weight\": 5}", err))
		return
	case c.State == "" && c.Weight == 0:
		writeError(w, http.StatusBadRequest, `nothing to change: send {"state": "active|drain|disabled"} and/or {"weight": N}`)
		return
	}
	backend, server := r.PathValue("backend"), r.PathValue("server")
	if a.answer(w, a.o.Control.SetServer(backend, server, c)) {
		a.o.Log.Info("admin: server changed", "backend", backend, "server", server, "state", c.State, "weight", c.Weight, "via", a.via())
		a.server(w, backend, server)
	}
}

func (a *api) clearServer(w http.ResponseWriter, r *http.Request) {
	backend, server := r.PathValue("backend"), r.PathValue("server")
	if a.answer(w, a.o.Control.ClearServer(backend, server)) {
		a.o.Log.Info("admin: server override cleared", "backend", backend, "server", server, "via", a.via())
		a.server(w, backend, server)
	}
}

func (a *api) reload(w http.ResponseWriter, _ *http.Request) {
	a.o.Log.Info("admin: reload requested", "via", a.via())
	if err := a.o.Control.Reload(); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "reload refused; the running configuration keeps serving", "errors": strings.Split(err.Error(), "\n")})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "digest": a.o.Control.Status().Config.Digest})
}

// answer writes the error of a change, if any, and reports whether there
// was none.
func (a *api) answer(w http.ResponseWriter, err error) bool {
	var nf *NotFoundError
	switch {
	case err == nil:
		return true
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusBadRequest, err.Error())
	}
	return false
}

// server writes one server's state.
func (a *api) server(w http.ResponseWriter, backend, address string) {
	bs := a.o.Control.Backends()
	readBackends(a.o.Gatherer, bs)
	for _, b := range bs {
		for _, s := range b.Servers {
			if b.Name == backend && s.Address == address {
				writeJSON(w, http.StatusOK, s)
				return
			}
		}
	}
	writeError(w, http.StatusNotFound, "no server "+quote(address)+" in backend "+quote(backend))
}

// via names where the changes come from, for the log.
func (a *api) via() string {
	if a.o.Full {
		return "admin socket"
	}
	return "admin listener (token)"
}

func (a *api) metrics() http.Handler {
	if a.o.Gatherer == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no metrics in this process", http.StatusNotFound)
		})
	}
	return promhttp.HandlerFor(a.o.Gatherer, promhttp.HandlerOpts{})
}

// notFound answers a request that no endpoint takes: 405 with the
// method that the path takes, or 404.
func notFound(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	allow := ""
	switch {
	case p == "/api/status" || p == "/api/frontends" || p == "/api/backends":
		allow = "GET"
	case p == "/api/reload":
		allow = "POST"
	case strings.HasPrefix(p, "/api/servers/") && strings.HasSuffix(p, "/override"):
		allow = "DELETE"
	case strings.HasPrefix(p, "/api/servers/") && strings.Count(p, "/") == 4:
		allow = "POST"
	}
	if allow == "" {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+p+" (see docs/admin.md)")
		return
	}
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, r.Method+" "+p+": use "+allow)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error": "encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func quote(s string) string { return strconv.Quote(s) }

func joinOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
