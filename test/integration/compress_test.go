package integration

import (
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// compressBody is the large text the backend serves: lines of words
// drawn with a fixed seed, about 256 KiB.
var compressBody = func() []byte {
	words := strings.Fields("portcullis proxies requests to backends over HTTP/1.1 HTTP/2 and HTTP/3 and compresses text on the way")
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < 256<<10 {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()
}()

// compressBackend serves /large (compressBody with Content-Length and a
// strong ETag), /stream (two chunks, the second once the test releases
// it), /encoded (a body already gzip-encoded) and /image (a PNG type).
type compressBackend struct {
	*upstream
	mu      sync.Mutex
	release map[string]chan struct{} // by the stream's id query
	encoded []byte
	image   []byte
}

func startCompressBackend(t *testing.T) *compressBackend {
	t.Helper()
	b := &compressBackend{release: map[string]chan struct{}{}}
	var gz bytes.Buffer
	zw := stdgzip.NewWriter(&gz)
	zw.Write(compressBody)
	zw.Close()
	b.encoded = gz.Bytes()
	b.image = bytes.Repeat([]byte("\x89PNG not really"), 1000)
	b.upstream = startUpstream(t, "app", http.HandlerFunc(b.serve))
	return b
}

// releaseFor returns the channel that lets stream id send its second
// chunk.
func (b *compressBackend) releaseFor(id string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.release[id] == nil {
		b.release[id] = make(chan struct{})
	}
	return b.release[id]
}

func (b *compressBackend) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Path {
	case "/large":
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("ETag", `"large-1"`)
		h.Set("Content-Length", strconv.Itoa(len(compressBody)))
		w.Write(compressBody)
	case "/stream":
		h.Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "first chunk\n")
		http.NewResponseController(w).Flush()
		select {
		case <-b.releaseFor(r.URL.Query().Get("id")):
		case <-time.After(30 * time.Second):
		}
		io.WriteString(w, "second chunk\n")
	case "/encoded":
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Encoding", "gzip")
		w.Write(b.encoded)
	case "/image":
		h.Set("Content-Type", "image/png")
		w.Write(b.image)
	default:
		http.NotFound(w, r)
	}
}

// compressConfig routes everything to server through a route with
// compress: [zstd, br, gzip], with a JSON access log at logPath.
func compressConfig(logPath, server string) string {
	c := lbConfig("", lbServer{addr: server})
	c = strings.Replace(c, "      - backend: pool\n", "      - compress: [zstd, br, gzip]\n        backend: pool\n", 1)
	return strings.Replace(c, "  web:\n", fmt.Sprintf("  web:\n    access_log: {format: json, to: %s}\n", logPath), 1)
}

// decodeBody returns a reader of body r decoded from coding enc.
func decodeBody(t *testing.T, enc string, r io.Reader) io.Reader {
	t.Helper()
	switch enc {
	case "gzip":
		zr, err := stdgzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		return zr
	case "br":
		return brotli.NewReader(r)
	case "zstd":
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		t.Cleanup(zr.Close)
		return zr
	}
	t.Fatalf("unknown coding %q", enc)
	return nil
}

// curlCodings are the codings this curl decodes, from its features.
func curlCodings(t *testing.T) (codings []string, http3 bool) {
	out, err := exec.Command(needTool(t, "curl", "curl"), "-V").Output()
	if err != nil {
		t.Fatalf("curl -V: %v", err)
	}
	var features []string
	for _, l := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(l, "Features:"); ok {
			features = strings.Fields(f)
		}
	}
	has := func(f string) bool { return containsFold(features, f) }
	for coding, feature := range map[string]string{"gzip": "libz", "br": "brotli", "zstd": "zstd"} {
		if has(feature) {
			codings = append(codings, coding)
		}
	}
	return codings, has("HTTP3")
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// TestCompressCurl: curl --compressed, asking for one coding at a time,
// gets it and decodes the exact original bytes, over each protocol this
// curl speaks; the codings it lacks are covered by TestCompressGoClients.
func TestCompressCurl(t *testing.T) {
	be := startCompressBackend(t)
	s, _ := startLB(t, compressConfig(filepath.Join(logDir(t), "access.log"), be.addr))
	codings, h3 := curlCodings(t)
	protos := map[string]string{"--http1.1": "HTTP/1.1", "--http2": "HTTP/2"}
	if h3 {
		protos["--http3-only"] = "HTTP/3"
	}
	for flag, proto := range protos {
		for _, coding := range codings {
			r := curl(t, s, flag, "--compressed", "-H", "Accept-Encoding: "+coding, "https://localhost/large")
			if r.status != http.StatusOK || r.proto != proto {
				t.Fatalf("%s %s: %s %d", proto, coding, r.proto, r.status)
			}
			if got := r.header.Get("Content-Encoding"); got != coding {
				t.Errorf("%s: Content-Encoding %q, want %s", proto, got, coding)
			}
			if r.body != string(compressBody) {
				t.Errorf("%s %s: curl decoded %d bytes, not the original %d", proto, coding, len(r.body), len(compressBody))
			}
			if got := r.header.Get("Etag"); got != `W/"large-1"` {
				t.Errorf("%s %s: ETag %q, want W/\"large-1\"", proto, coding, got)
			}
		}
	}
	t.Logf("curl decodes %v; HTTP/3: %v", codings, h3)
}

// TestCompressGoClients: over HTTP/1.1, HTTP/2 and HTTP/3 (quic-go),
// each coding decodes with its library (the standard library for gzip)
// to the exact original bytes; the access log counts the compressed
// bytes sent; an encoded body and an image pass untouched.
func TestCompressGoClients(t *testing.T) {
	be := startCompressBackend(t)
	path := filepath.Join(logDir(t), "access.log")
	s, _ := startLB(t, compressConfig(path, be.addr))
	sent := map[string]int{} // by path + coding: bytes on the wire
	requests := 0
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 1)
		for _, coding := range []string{"zstd", "br", "gzip"} {
			resp := getWith(t, c, "https://localhost/large?"+coding, "gzip;q=0.5, "+coding)
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			requests++
			if err != nil {
				t.Fatalf("%s %s: %v", proto, coding, err)
			}
			if got := resp.Header.Get("Content-Encoding"); got != coding {
				t.Fatalf("%s: Content-Encoding %q, want %s", proto, got, coding)
			}
			if resp.Header.Get("Content-Length") != "" || resp.Header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("%s %s: Content-Length %q, Vary %q", proto, coding, resp.Header.Get("Content-Length"), resp.Header.Get("Vary"))
			}
			got, err := io.ReadAll(decodeBody(t, coding, bytes.NewReader(raw)))
			if err != nil || !bytes.Equal(got, compressBody) {
				t.Fatalf("%s %s: decoded %d bytes (%v), not the original %d", proto, coding, len(got), err, len(compressBody))
			}
			if len(raw) >= len(compressBody)/2 {
				t.Errorf("%s %s: %d bytes on the wire for %d", proto, coding, len(raw), len(compressBody))
			}
			sent["/large "+proto+" "+coding] = len(raw)
		}
		for _, p := range []struct{ path, encoding string }{{"/encoded", "gzip"}, {"/image", ""}} {
			resp := getWith(t, c, "https://localhost"+p.path, "zstd, br, gzip")
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			requests++
			want := be.encoded
			if p.path == "/image" {
				want = be.image
			}
			if got := resp.Header.Get("Content-Encoding"); got != p.encoding || !bytes.Equal(raw, want) || resp.Header.Get("Vary") != "" {
				t.Errorf("%s %s: Content-Encoding %q, Vary %q, %d bytes: want it untouched (%q, %d bytes)", proto, p.path, got, resp.Header.Get("Vary"), len(raw), p.encoding, len(want))
			}
		}
	}
	lines := parseJSONLines(t, waitLines(t, requests, path))
	checked := 0
	for _, e := range lines {
		if !strings.HasPrefix(e.Path, "/large") {
			continue
		}
		coding := strings.TrimPrefix(e.Path, "/large?")
		if n := sent["/large "+e.Protocol+" "+coding]; n != 0 && e.BytesOut != int64(n) {
			t.Errorf("access log %s %s: bytes_out %d, the client got %d compressed bytes", e.Protocol, coding, e.BytesOut, n)
		}
		checked++
	}
	if checked != 9 {
		t.Errorf("%d access-log lines of /large, want 9", checked)
	}
}

// getWith GETs url with Accept-Encoding accept (which turns off the
// client's own decoding).
func getWith(t *testing.T, c *http.Client, url, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept-Encoding", accept)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	return resp
}

// TestCompressStreamed: a streamed response arrives compressed chunk by
// chunk: its first chunk decodes before the backend sends the second,
// with each coding over each protocol.
func TestCompressStreamed(t *testing.T) {
	be := startCompressBackend(t)
	s, _ := startLB(t, compressConfig(filepath.Join(logDir(t), "access.log"), be.addr))
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 1)
		for _, coding := range []string{"zstd", "br", "gzip"} {
			id := queryID(proto + coding)
			resp := getWith(t, c, "https://localhost/stream?id="+id, coding)
			if got := resp.Header.Get("Content-Encoding"); got != coding {
				t.Fatalf("%s: Content-Encoding %q, want %s", proto, got, coding)
			}
			first := make([]byte, len("first chunk\n"))
			read := make(chan error, 1)
			var dec io.Reader
			go func() {
				dec = decodeBody(t, coding, resp.Body)
				_, err := io.ReadFull(dec, first)
				read <- err
			}()
			select {
			case err := <-read:
				if err != nil || string(first) != "first chunk\n" {
					t.Fatalf("%s %s: first chunk %q, %v", proto, coding, first, err)
				}
			case <-time.After(scaled(5 * time.Second)):
				close(be.releaseFor(id))
				resp.Body.Close() // ends the decoder
				t.Fatalf("%s %s: the first chunk did not arrive while the backend held the second", proto, coding)
			}
			close(be.releaseFor(id))
			rest, err := io.ReadAll(dec)
			resp.Body.Close()
			if err != nil || string(rest) != "second chunk\n" {
				t.Fatalf("%s %s: then %q, %v", proto, coding, rest, err)
			}
		}
	}
}

// queryID makes s fit a query without escaping.
func queryID(s string) string { return strings.NewReplacer("/", "", ".", "").Replace(s) }
