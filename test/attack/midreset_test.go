package attack

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

func TestMidResetDirect(t *testing.T) {
	b := &Backend{MidReset: 1000}
	tg := target(startBackend(t, b))
	res, err := MidReset(context.Background(), MidResetOptions{Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Status != 200 || res.Announced != 2000 || res.Body != 1000 || res.End != EndReset {
		t.Fatalf("want 200, Content-Length 2000, 1000 bytes, then a reset; got %v", res)
	}
	if res.Header.Get(BackendHeader) == "" {
		t.Errorf("no %s header", BackendHeader)
	}
}

// Through a proxy that passes on the status and headers, then cuts the
// response: net/http/httputil's ReverseProxy over HTTP/1.1 and HTTP/2.
// (On the backend's reset it aborts the handler, so the client gets the
// body only up to the server's last flush of its 4 KiB buffer.)
func TestMidResetThroughProxy(t *testing.T) {
	u, _ := url.Parse("http://" + startBackend(t, &Backend{}))
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = quiet
	proxy := httptest.NewUnstartedServer(rp)
	proxy.EnableHTTP2 = true
	proxy.Config.ErrorLog = quiet
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	for _, h2 := range []bool{false, true} {
		tg := target(proxy.Listener.Addr().String())
		tg.TLS, tg.Path = true, "/midreset?bytes=5000"
		res, err := MidReset(context.Background(), MidResetOptions{Target: tg, HTTP2: h2})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(res)
		if res.Status != 200 || res.Announced != 10000 || res.Body == 0 || res.Body > 5000 ||
			res.End == EndComplete || res.End == EndShort || res.End == EndTimeout {
			t.Errorf("HTTP2=%v: want 200, Content-Length 10000, part of the 5000 bytes, then a cut; got %v", h2, res)
		}
		if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]; res.Proto != want {
			t.Errorf("proto %s, want %s", res.Proto, want)
		}
	}
}

// A proxy that ends the body normally, short of the announced length
// (chunked over HTTP/1.1, END_STREAM over HTTP/2): the worst outcome.
func TestMidResetShort(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(LengthHeader, "2000")
		io.WriteString(w, strings.Repeat("a", 1000))
		w.(http.Flusher).Flush()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for _, h2 := range []bool{false, true} {
		tg := target(srv.Listener.Addr().String())
		tg.TLS = true
		res, err := MidReset(context.Background(), MidResetOptions{Target: tg, HTTP2: h2})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 200 || res.Announced != 2000 || res.Body != 1000 || res.End != EndShort {
			t.Errorf("HTTP2=%v: want 200, 1000 of 2000 bytes, short; got %v", h2, res)
		}
	}
}
