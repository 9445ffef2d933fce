package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/test/attack"
)

// Who a failed request is blamed on (docs/configuration.md, "Why a
// request got a 4xx or 5xx"), and the request limits, against the real
// binary, each with a legitimate client alongside that must never notice.

// legitLoop runs one client per protocol (HTTP/1.1, HTTP/2, HTTP/3) that
// sends GET /legit one at a time until the function it returns is
// called; that function fails t unless every request got 200 from one of
// the upstreams named.
func legitLoop(t *testing.T, s *site, names ...string) func() {
	t.Helper()
	stop := make(chan struct{})
	var waits []func() []result
	protos := []string{"HTTP/1.1", "HTTP/2", "HTTP/3"}
	for _, proto := range protos {
		waits = append(waits, loop(clientFor(t, s, proto, 1), 1, "/legit", stop))
	}
	return func() {
		t.Helper()
		close(stop)
		for i, wait := range waits {
			results := wait()
			bad := 0
			for _, r := range results {
				ok := r.err == nil && r.status == 200
				if ok {
					ok = false
					for _, n := range names {
						ok = ok || r.server() == n
					}
				}
				if !ok {
					if bad++; bad <= 3 {
						t.Errorf("legitimate %s client: %v", protos[i], r)
					}
				}
			}
			if len(results) == 0 {
				t.Errorf("the legitimate %s client made no request", protos[i])
			}
			t.Logf("legitimate %s client: %d requests, %d failed", protos[i], len(results), bad)
		}
	}
}

// TestAttributionBadChunks sends 20 POSTs with an invalid chunk size
// ("zz") over HTTP/1.1 on port 80 and 20 over TLS on 443, through two
// servers with passive health checks. A malformed body is the client's
// fault: each gets 400, no server is marked down, and the legitimate
// clients never get a 503. (Before: 502 for each, counted against the
// servers, which passive health took down after 3, and 503 for everyone
// for 10s.)
func TestAttributionBadChunks(t *testing.T) {
	a, b := startUp(t, "a", "127.0.0.1:0"), startUp(t, "b", "127.0.0.1:0")
	s, p := startLB(t, lbConfig("", lbServer{addr: a.addr}, lbServer{addr: b.addr}))
	mark := len(p.stderr.String())
	end := legitLoop(t, s, "a", "b")
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30*time.Second))
	defer cancel()
	for _, tgt := range []attack.Target{
		{Addr: "127.0.0.1:80", Timeout: scaled(5 * time.Second)},
		{Addr: "127.0.0.1:443", TLS: true, Host: "localhost", Timeout: scaled(5 * time.Second)},
	} {
		res, err := attack.BadChunk(ctx, attack.BadChunkOptions{Target: tgt, Requests: 20})
		if err != nil {
			t.Fatalf("%s: %v", tgt.Addr, err)
		}
		if n := res.Count(http.StatusBadRequest); n != 20 {
			t.Errorf("%s: %d of 20 bad chunked bodies got 400: %v", tgt.Addr, n, res)
		}
	}
	time.Sleep(300 * time.Millisecond) // the legitimate clients go on after
	end()
	if down := logsWith(p, mark, `msg="server down"`); len(down) > 0 {
		t.Errorf("malformed requests took a server down:\n%s", strings.Join(down, "\n"))
	}
	// Logged as the client's, summarized: not one line per request.
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="request failed: the client's fault"`, "status=400", `reason="malformed request body"`, "backend=pool")
	if n := len(logsWith(p, mark, `reason="malformed request body"`)); n > 4 {
		t.Errorf("%d log lines for 40 malformed requests, want a summary", n)
	}
}

// curlCut runs curl -i on url with args, for a response cut short: it
// returns the parsed response and curl's exit code, which must say the
// transfer failed.
func curlCut(t *testing.T, s *site, url string, args ...string) (response, int) {
	t.Helper()
	bin := needTool(t, "curl", "curl")
	argv := append([]string{"-q", "-sS", "--noproxy", "*", "-i",
		"--max-time", strconv.Itoa(int(scaled(10 * time.Second).Seconds())),
		"--cacert", s.ca, "--resolve", "localhost:443:127.0.0.1"}, args...)
	out, err := exec.Command(bin, append(argv, url)...).Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	r, perr := parseCurl(string(out))
	if perr != nil {
		t.Errorf("curl %s (exit %d): no response before the cut: %v\n%q", url, code, perr, out)
	}
	return r, code
}

// TestAttributionCutResponse has the server reset its connection after
// the headers and 10 bytes of the body (/reset: chunked; /cut: 1000
// bytes announced, then closed). The client gets the status, the headers
// and the 10 bytes, then the cut, so that it can tell a truncated body
// from a missing one: curl over HTTP/1.1 (ports 80 and 443) and HTTP/2
// reports a partial transfer, Go's clients get the bytes and then an
// error. (Before: an empty reply over HTTP/1.1, a stream reset without
// headers over HTTP/2, and over HTTP/3 a chunked response that ended as
// if complete.)
func TestAttributionCutResponse(t *testing.T) {
	u := startUp(t, "u", "127.0.0.1:0")
	s, _ := startLB(t, lbConfig("", lbServer{addr: u.addr}))
	end := legitLoop(t, s, "u")

	for _, tc := range []struct{ url, proto string }{
		{"http://127.0.0.1/reset", "--http1.1"},
		{"http://127.0.0.1/cut", "--http1.1"},
		{"https://localhost/reset", "--http1.1"},
		{"https://localhost/reset", "--http2"},
		{"https://localhost/cut", "--http2"},
	} {
		r, code := curlCut(t, s, tc.url, tc.proto)
		if r.status != 200 || r.header.Get("X-Upstream") != "u" || r.body != "0123456789" {
			t.Errorf("curl %s %s: want 200 with X-Upstream and the 10 bytes before the cut, got:\n%v", tc.proto, tc.url, r)
		}
		if code == 0 {
			t.Errorf("curl %s %s: exit status 0: the cut response passed for complete", tc.proto, tc.url)
		}
	}

	for _, tc := range []struct{ path, proto string }{
		{"/reset", "HTTP/1.1"},
		{"/reset", "HTTP/2"},
		{"/cut", "HTTP/2"},
		{"/cut", "HTTP/3"},
	} {
		r := get(clientFor(t, s, tc.proto, 1), tc.path)
		if r.status != 200 || r.header.Get("X-Upstream") != "u" || r.body != "0123456789" || r.err == nil {
			t.Errorf("%s %s: want 200 with X-Upstream, the 10 bytes, then an error; got %d %q %v", tc.proto, tc.path, r.status, r.body, r.err)
		}
	}
	// HTTP/3 without a length: only a stream reset can say the body is
	// cut, and a QUIC reset lets the client drop what it had not read
	// (RFC 9000 §3.2). It must never pass for complete.
	if r := get(clientFor(t, s, "HTTP/3", 1), "/reset"); r.err == nil {
		t.Errorf("HTTP/3 /reset: a response cut without a length passed for complete: %v", r)
	}
	end()
}

// onlyReader hides every method of its reader but Read, so that the
// client cannot learn the body's length.
type onlyReader struct{ io.Reader }

// postBody sends POST / on the TLS bind with body (of unknown length when
// length < 0) and returns the status, the response body and the time it
// took, or the error.
func postBody(c *http.Client, body io.Reader, length int64) (int, string, time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequest("POST", "https://127.0.0.1/upload", body)
	if err != nil {
		return 0, "", 0, err
	}
	req.ContentLength = length
	if length < 0 {
		req.ContentLength = -1
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", time.Since(start), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start), err
}

// TestRequestLimitsBody configures max_body_bytes 1000 and body_timeout
// 500ms and checks both over HTTP/1.1, HTTP/2 and HTTP/3: a body
// announced longer gets 413; a body without a length gets 413 once it
// passes 1000 bytes, and one of exactly 1000 bytes passes; a body that
// stalls after 10 bytes gets 408 after 500ms. Each limit is logged,
// summarized, with its name and the frontend; no server is marked down,
// and a legitimate client alongside is served throughout.
func TestRequestLimitsBody(t *testing.T) {
	const bodyTimeout = 500 * time.Millisecond
	u := startUp(t, "u", "127.0.0.1:0")
	s, p := startLB(t, withLimits(lbConfig("", lbServer{addr: u.addr}), "{max_body_bytes: 1000, body_timeout: 500ms}"))
	mark := len(p.stderr.String())
	end := legitLoop(t, s, "u")

	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 2)
		status, _, _, err := postBody(c, strings.NewReader(strings.Repeat("x", 1001)), 1001)
		if err != nil || status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: Content-Length 1001: %d %v, want 413", proto, status, err)
		}
		status, _, _, err = postBody(c, onlyReader{strings.NewReader(strings.Repeat("x", 64<<10))}, -1)
		if err != nil || status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: 64 KiB without a length: %d %v, want 413", proto, status, err)
		}
		status, body, _, err := postBody(c, onlyReader{strings.NewReader(strings.Repeat("x", 1000))}, -1)
		if err != nil || status != 200 || !strings.HasPrefix(body, "u POST /upload") {
			t.Errorf("%s: 1000 bytes without a length: %d %q %v, want 200 from the server", proto, status, body, err)
		}
		status, _, took, err := postBody(c, testutil.StalledBody("0123456789"), 100)
		if err != nil || status != http.StatusRequestTimeout {
			t.Errorf("%s: a body stalled after 10 of 100 bytes: %d %v, want 408", proto, status, err)
		}
		if took < bodyTimeout || took > bodyTimeout+scaled(time.Second) {
			t.Errorf("%s: 408 after %v, want after body_timeout (%v)", proto, took, bodyTimeout)
		}
	}
	end()
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="limit reached, request refused"`, "limit=max_body_bytes", "frontend=web")
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="limit reached, request refused"`, "limit=body_timeout", "frontend=web")
	if down := logsWith(p, mark, `msg="server down"`); len(down) > 0 {
		t.Errorf("a request over a limit took the server down:\n%s", strings.Join(down, "\n"))
	}
	// The requests the limits stopped were cancelled at the server.
	deadline := time.Now().Add(scaled(3 * time.Second))
	for u.current() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the server still has %d requests after the limits stopped them", u.current())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
