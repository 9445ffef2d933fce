package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// response is what a client got.
type response struct {
	proto  string // "HTTP/1.1", "HTTP/2" or "HTTP/3"
	status int
	header http.Header
	body   string
}

func (r response) String() string {
	return fmt.Sprintf("%s %d\n%v\n%s", r.proto, r.status, r.header, r.body)
}

// curl runs curl with args (and the site's CA, names resolved to
// 127.0.0.1, no proxy, no .curlrc) and parses the response.
func curl(t *testing.T, s *site, args ...string) response {
	t.Helper()
	bin := needTool(t, "curl", "curl")
	base := []string{"-q", "-sS", "--noproxy", "*", "-i",
		"--max-time", strconv.Itoa(int(scaled(10 * time.Second).Seconds())),
		"--cacert", s.ca,
		"--resolve", "localhost:443:127.0.0.1",
		"--resolve", "api.example.test:443:127.0.0.1",
		"--resolve", "api.example.test:80:127.0.0.1",
	}
	cmd := exec.Command(bin, append(base, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("curl %q: %v\n%s%s", args, err, stderr, out)
	}
	resp, err := parseCurl(string(out))
	if err != nil {
		t.Fatalf("curl %q: %v\n%s", args, err, out)
	}
	return resp
}

// parseCurl parses the output of curl -i.
func parseCurl(out string) (response, error) {
	var r response
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		return r, fmt.Errorf("no end of headers in curl's output")
	}
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(head + "\r\n\r\n")))
	line, err := tp.ReadLine()
	if err != nil {
		return r, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return r, fmt.Errorf("bad status line %q", line)
	}
	r.proto = f[0]
	if r.status, err = strconv.Atoi(f[1]); err != nil {
		return r, fmt.Errorf("bad status line %q", line)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil && err != io.EOF {
		return r, err
	}
	r.header = http.Header(mh)
	r.body = body
	return r, nil
}

// h3Get fetches url over HTTP/3 with quic-go, trusting the site's CA. Every
// name is dialed at 127.0.0.1.
func h3Get(t *testing.T, s *site, url string) response {
	t.Helper()
	r, err := h3Try(s, url, scaled(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// h3Try is h3Get with a timeout, returning the error.
func h3Try(s *site, url string, timeout time.Duration) (response, error) {
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool},
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return quic.DialAddrEarly(ctx, net.JoinHostPort("127.0.0.1", port), tlsCfg, cfg)
		},
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return response{}, fmt.Errorf("HTTP/3 GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("HTTP/3 GET %s: read body: %w", url, err)
	}
	return response{proto: fmt.Sprintf("HTTP/%d", resp.ProtoMajor), status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

// gtlsGet fetches https://127.0.0.1:443/PATH over HTTP/3 with ngtcp2's
// gtlsclient and returns the body it saved. gtlsclient exits 0 even when it
// fails, so the saved file is the evidence.
func gtlsGet(t *testing.T, path string) string {
	t.Helper()
	bin := needTool(t, "gtlsclient", "ngtcp2-client")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-q", "--exit-on-all-streams-close", "--download="+dir,
		"127.0.0.1", "443", "https://127.0.0.1:443/"+path)
	out, err := cmd.CombinedOutput()
	body, rerr := os.ReadFile(filepath.Join(dir, path))
	if rerr != nil {
		t.Fatalf("gtlsclient saved no response for /%s (exit: %v): %v\n%s", path, err, rerr, out)
	}
	return string(body)
}

// altSvc is the Alt-Svc header of HTTP/1.1 and HTTP/2 responses on a bind
// that also serves HTTP/3.
const altSvc = `h3=":443"; ma=86400`

// checkServes checks that portcullis, started with the example
// configuration, serves HTTP/1.1 on port 80 and 443, HTTP/2 and HTTP/3 on
// 443, and routes api.example.test/v1/ to the api upstream.
func checkServes(t *testing.T, s *site) {
	t.Helper()
	expect := func(what string, r response, proto, upstream string, lines ...string) {
		t.Helper()
		if r.proto != proto || r.status != 200 || !strings.HasPrefix(r.body, "upstream: "+upstream) {
			t.Errorf("%s: want %s 200 from upstream %s, got:\n%v", what, proto, upstream, r)
			return
		}
		for _, l := range lines {
			if !strings.Contains(r.body, "\n"+l+"\n") {
				t.Errorf("%s: the upstream did not see %q; it saw:\n%s", what, l, r.body)
			}
		}
	}
	expectAltSvc := func(what string, r response) {
		t.Helper()
		if got := r.header.Get("Alt-Svc"); got != altSvc {
			t.Errorf("%s: Alt-Svc = %q, want %q", what, got, altSvc)
		}
	}

	r := curl(t, s, "--http1.1", "http://127.0.0.1/h1")
	expect("HTTP/1.1 on :80", r, "HTTP/1.1", "app-",
		"path: /h1", "header Via: 1.1 portcullis", "header X-Forwarded-For: 127.0.0.1",
		"header X-Forwarded-Proto: http", "header X-Forwarded-Host: 127.0.0.1",
		"header Forwarded: for=127.0.0.1;host=127.0.0.1;proto=http")

	r = curl(t, s, "--http1.1", "https://localhost/h1s")
	expect("HTTP/1.1 on :443", r, "HTTP/1.1", "app-",
		"path: /h1s", "header Via: 1.1 portcullis", "header X-Forwarded-Proto: https")
	expectAltSvc("HTTP/1.1 on :443", r)

	r = curl(t, s, "--http2", "https://localhost/h2")
	expect("HTTP/2 on :443", r, "HTTP/2", "app-",
		"path: /h2", "header Via: 2 portcullis", "header X-Forwarded-Proto: https")
	expectAltSvc("HTTP/2 on :443", r)

	r = h3Get(t, s, "https://localhost/h3")
	expect("HTTP/3 on :443 (quic-go)", r, "HTTP/3", "app-",
		"path: /h3", "header Via: 3 portcullis", "header X-Forwarded-Proto: https")

	r = curl(t, s, "--http2", "https://api.example.test/v1/users")
	expect("HTTP/2 route api.example.test/v1/", r, "HTTP/2", "api",
		"path: /v1/users", "host: api.example.test")
	r = curl(t, s, "--http1.1", "http://api.example.test/v1/users")
	expect("HTTP/1.1 route api.example.test/v1/ on :80", r, "HTTP/1.1", "api", "path: /v1/users")
	r = h3Get(t, s, "https://api.example.test/v1/h3")
	expect("HTTP/3 route api.example.test/v1/", r, "HTTP/3", "api", "path: /v1/h3", "header Via: 3 portcullis")
	r = curl(t, s, "--http2", "https://api.example.test/v2/users")
	expect("HTTP/2 api.example.test outside /v1/", r, "HTTP/2", "app-", "path: /v2/users")
}
