package compress

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A handler that breaks off (panics, as the proxy does when a backend's
// body fails) leaves a truncated coding, never a valid end that would
// make the truncated body look complete.
func TestAbortLeavesTruncated(t *testing.T) {
	for _, name := range Names {
		a, _ := Parse(name)
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Accept-Encoding", name)
		rec := httptest.NewRecorder()
		func() {
			defer func() { recover() }()
			Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.Write(text)
				http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}), []Algorithm{a}).ServeHTTP(rec, req)
		}()
		out, err := io.ReadAll(decoder(t, name, bytes.NewReader(rec.Body.Bytes())))
		if err == nil {
			t.Errorf("%s: an aborted response decodes completely (%d bytes): its end was written", name, len(out))
		}
	}
}

// Every flush of a compressed response sends what was written before it.
func TestFlushEachChunk(t *testing.T) {
	for _, name := range Names {
		a, _ := Parse(name)
		pr, pw := io.Pipe()
		w := &pipeWriter{h: http.Header{}, w: pw}
		steps := make(chan struct{})
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Accept-Encoding", name)
		go func() {
			Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				for _, chunk := range []string{"one\n", "two\n", "three\n"} {
					io.WriteString(w, chunk)
					http.NewResponseController(w).Flush()
					<-steps
				}
			}), []Algorithm{a}).ServeHTTP(w, req)
			pw.Close()
		}()
		got := make(chan string, 1)
		go func() {
			dec := decoder(t, name, pr)
			for _, n := range []int{4, 4, 6} {
				b := make([]byte, n)
				if _, err := io.ReadFull(dec, b); err != nil {
					got <- err.Error()
					return
				}
				got <- string(b)
			}
		}()
		for _, want := range []string{"one\n", "two\n", "three\n"} {
			select {
			case g := <-got:
				if g != want {
					t.Fatalf("%s: chunk %q, want %q", name, g, want)
				}
			case <-time.After(10 * time.Second):
				pr.CloseWithError(errors.New("timed out")) // ends the decoder
				t.Fatalf("%s: chunk %q did not arrive after its flush", name, want)
			}
			steps <- struct{}{}
		}
	}
}

// hijacker is a ResponseWriter whose connection can be taken.
type hijacker struct {
	*httptest.ResponseRecorder
	hijacked bool
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.hijacked = true
	return nil, nil, errors.New("test hijacker")
}

// Hijack and http.ResponseController reach the server's ResponseWriter.
func TestHijackUnwrap(t *testing.T) {
	hw := &hijacker{ResponseRecorder: httptest.NewRecorder()}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).Hijack()
		if w.(interface{ Unwrap() http.ResponseWriter }).Unwrap() != hw {
			t.Errorf("Unwrap does not give the server's ResponseWriter")
		}
	}), all).ServeHTTP(hw, req)
	if !hw.hijacked {
		t.Fatal("Hijack did not reach the server's ResponseWriter")
	}
}
