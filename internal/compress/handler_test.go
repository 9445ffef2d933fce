package compress

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	stdgzip "compress/gzip"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

var all = []Algorithm{Zstd, Brotli, Gzip}

// text is a compressible body well above MinSize.
var text = []byte(strings.Repeat("portcullis compresses text bodies on the fly.\n", 200))

// decode decodes body of coding enc, failing t on error.
func decode(t *testing.T, enc string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "gzip":
		zr, err := stdgzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return body
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return out
}

// serve runs a request through Handler(next, algos) and returns the
// recorded response.
func serve(next http.HandlerFunc, algos []Algorithm, method, accept string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/", nil)
	if accept != "" {
		req.Header.Set("Accept-Encoding", accept)
	}
	rec := httptest.NewRecorder()
	Handler(next, algos).ServeHTTP(rec, req)
	return rec
}

func textHandler(ct string, body []byte, withLength bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("ETag", `"v1"`)
		if withLength {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.Write(body[:len(body)/3])
		w.Write(body[len(body)/3:])
	}
}

func TestCompressEachAlgorithm(t *testing.T) {
	for _, name := range Names {
		a, err := Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, withLength := range []bool{true, false} {
			// Twice: the second response reuses a pooled encoder.
			for range 2 {
				rec := serve(textHandler("text/plain; charset=utf-8", text, withLength), []Algorithm{a}, "GET", name)
				res := rec.Result()
				if got := res.Header.Get("Content-Encoding"); got != name {
					t.Fatalf("%s (length %v): Content-Encoding %q", name, withLength, got)
				}
				if res.Header.Get("Content-Length") != "" {
					t.Errorf("%s: Content-Length %q kept on a compressed body", name, res.Header.Get("Content-Length"))
				}
				if got := res.Header.Get("Vary"); got != "Accept-Encoding" {
					t.Errorf("%s: Vary %q", name, got)
				}
				if got := res.Header.Get("Etag"); got != `W/"v1"` {
					t.Errorf("%s: ETag %q, want W/\"v1\"", name, got)
				}
				if rec.Body.Len() >= len(text) {
					t.Errorf("%s: %d bytes for %d", name, rec.Body.Len(), len(text))
				}
				if got := decode(t, name, rec.Body.Bytes()); !bytes.Equal(got, text) {
					t.Fatalf("%s: decoded %d bytes, not the original %d", name, len(got), len(text))
				}
			}
		}
	}
}

func TestRoutePreference(t *testing.T) {
	rec := serve(textHandler("application/json", text, true), []Algorithm{Brotli, Gzip}, "GET", "gzip, br;q=0.1, zstd")
	if got := rec.Header().Get("Content-Encoding"); got != "br" {
		t.Fatalf("Content-Encoding %q, want br (the route's first that the client accepts)", got)
	}
}

// TestNotCompressed checks every response that passes untouched.
func TestNotCompressed(t *testing.T) {
	small := []byte("short")
	cases := []struct {
		name   string
		next   http.HandlerFunc
		method string
		accept string
		vary   bool
	}{
		{"no Accept-Encoding", textHandler("text/html", text, true), "GET", "", true},
		{"refused q=0", textHandler("text/html", text, true), "GET", "gzip;q=0, br;q=0, zstd;q=0.000", true},
		{"unknown coding only", textHandler("text/html", text, true), "GET", "compress, deflate", true},
		{"HEAD", textHandler("text/html", text, true), "HEAD", "gzip", true},
		{"image", textHandler("image/png", text, true), "GET", "gzip", false},
		{"no Content-Type", textHandler("", text, true), "GET", "gzip", false},
		{"small with length", textHandler("text/html", small, true), "GET", "gzip", true},
		{"small without length", textHandler("text/html", small, false), "GET", "gzip", true},
		{"already encoded", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			textHandler("text/html", text, true)(w, r)
		}, "GET", "gzip", false},
		{"no-transform", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, no-transform")
			textHandler("text/html", text, true)(w, r)
		}, "GET", "gzip", true},
		{"206", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Range", "bytes 0-4999/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(text)
		}, "GET", "gzip", false},
		{"204", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNoContent)
		}, "GET", "gzip", false},
		{"304", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		}, "GET", "gzip", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := httptest.NewRecorder()
			c.next(want, httptest.NewRequest(c.method, "/", nil))
			rec := serve(c.next, all, c.method, c.accept)
			if got := rec.Header().Get("Content-Encoding"); got != want.Header().Get("Content-Encoding") {
				t.Errorf("Content-Encoding %q, want %q", got, want.Header().Get("Content-Encoding"))
			}
			if rec.Code != want.Code || !bytes.Equal(rec.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("got %d with %d bytes, want %d with %d bytes untouched", rec.Code, rec.Body.Len(), want.Code, want.Body.Len())
			}
			if got := rec.Header().Get("Etag"); got != want.Header().Get("Etag") {
				t.Errorf("ETag %q changed on an uncompressed response", got)
			}
			if got := rec.Header().Get("Vary") == "Accept-Encoding"; got != c.vary {
				t.Errorf("Vary: Accept-Encoding present %v, want %v", got, c.vary)
			}
		})
	}
}

func TestVaryKept(t *testing.T) {
	rec := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Origin, accept-encoding")
		textHandler("text/css", text, true)(w, r)
	}, all, "GET", "gzip")
	if got := rec.Header().Values("Vary"); len(got) != 1 {
		t.Fatalf("Vary %q: Accept-Encoding added twice", got)
	}
	rec = serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		w.Header().Set("ETag", `W/"weak"`)
		w.Write(text)
	}, all, "GET", "gzip")
	if got := rec.Header().Get("Etag"); got != `W/"weak"` {
		t.Fatalf("ETag %q, want W/\"weak\" unchanged", got)
	}
}

// TestPooled checks that a compressed response reuses a pooled encoder:
// a new one would allocate hundreds of KiB of tables.
func TestPooled(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop encoders")
	}
	for _, name := range Names {
		a, _ := Parse(name)
		h := Handler(textHandler("text/plain", text, true), []Algorithm{a})
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Accept-Encoding", name)
		run := func() { h.ServeHTTP(httptest.NewRecorder(), req) }
		run()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 20
		for range n {
			run()
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 64<<10 {
			t.Errorf("%s: %d bytes allocated per response: the encoder is not reused", name, per)
		}
	}
}

// TestFlushStreams checks that what the handler flushed decodes before
// the handler writes more.
func TestFlushStreams(t *testing.T) {
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			a, _ := Parse(name)
			pr, pw := io.Pipe()
			first, second := []byte("first chunk\n"), []byte("second chunk\n")
			release := make(chan struct{})
			w := &pipeWriter{h: http.Header{}, w: pw}
			go func() {
				req := httptest.NewRequest("GET", "/", nil)
				req.Header.Set("Accept-Encoding", name)
				Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					w.Write(first)
					http.NewResponseController(w).Flush()
					<-release
					w.Write(second)
				}), []Algorithm{a}).ServeHTTP(w, req)
				pw.Close()
			}()
			var dec io.Reader
			got := make([]byte, len(first))
			read := make(chan error, 1)
			go func() {
				dec = decoder(t, name, pr)
				_, err := io.ReadFull(dec, got)
				read <- err
			}()
			select {
			case err := <-read:
				if err != nil || !bytes.Equal(got, first) {
					t.Fatalf("first chunk: %q, %v", got, err)
				}
			case <-time.After(10 * time.Second):
				close(release) // let the handler end
				pr.CloseWithError(io.ErrUnexpectedEOF)
				t.Fatalf("the flushed first chunk did not decode within 10s")
			}
			close(release)
			rest, err := io.ReadAll(dec)
			if err != nil || !bytes.Equal(rest, second) {
				t.Fatalf("second chunk: %q, %v", rest, err)
			}
			if w.h.Get("Content-Encoding") != name {
				t.Fatalf("Content-Encoding %q", w.h.Get("Content-Encoding"))
			}
		})
	}
}

// decoder returns a reader decoding r of coding enc.
func decoder(t *testing.T, enc string, r io.Reader) io.Reader {
	switch enc {
	case "gzip":
		zr, err := stdgzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		return zr
	case "br":
		return brotli.NewReader(r)
	}
	zr, err := zstd.NewReader(r)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	t.Cleanup(zr.Close)
	return zr
}

type pipeWriter struct {
	h    http.Header
	w    io.Writer
	code int
}

func (p *pipeWriter) Header() http.Header         { return p.h }
func (p *pipeWriter) WriteHeader(code int)        { p.code = code }
func (p *pipeWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeWriter) Flush()                      {}
