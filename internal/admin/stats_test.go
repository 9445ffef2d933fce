package admin

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// maxStatsPage bounds the page's size: it is sent every time a browser
// opens /stats, often over an ssh tunnel.
const maxStatsPage = 32 << 10

func getStats(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	statsPage().ServeHTTP(rec, httptest.NewRequest(method, "/stats", nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestStatsPageServed(t *testing.T) {
	res, body := getStats(t, http.MethodGet)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /stats: %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if body != string(statsHTML) || !strings.Contains(body, "<title>portcullis stats</title>") {
		t.Errorf("the body is not the page (%d bytes)", len(body))
	}
	if len(body) > maxStatsPage {
		t.Errorf("the page has %d bytes, more than %d", len(body), maxStatsPage)
	}
	if res, _ := getStats(t, http.MethodPost); res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /stats: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
}

// TestStatsPageCSP: the policy allows the page's own inline script and
// style (by hash, which a browser checks byte for byte), nothing inline
// besides, and fetches to the page's origin only.
func TestStatsPageCSP(t *testing.T) {
	res, body := getStats(t, http.MethodGet)
	csp := res.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		blocks := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(body, -1)
		if len(blocks) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(blocks), tag)
		}
		sum := sha256.Sum256([]byte(blocks[0][1]))
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("policy %q allows unsafe sources", csp)
	}
	// Inline style attributes and event handlers would be refused by the
	// policy: the page must not rely on them.
	if m := regexp.MustCompile(`(?i)<[^>]*\s(style|on[a-z]+)\s*=`).FindString(body); m != "" {
		t.Errorf("inline attribute the policy refuses: %s", m)
	}
}

// TestStatsPageSelfContained: the page loads nothing from anywhere (it
// works offline) and calls the API by relative URLs (it works behind a
// proxy that serves it under a prefix).
func TestStatsPageSelfContained(t *testing.T) {
	_, body := getStats(t, http.MethodGet)
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)https?:`),                     // absolute URLs
		regexp.MustCompile(`["'(=]\s*//`),                     // scheme-relative URLs
		regexp.MustCompile(`(?i)\s(src|href|action)\s*=`),     // any loaded or linked resource
		regexp.MustCompile(`(?i)url\(|@import|@font-face`),    // CSS resources
		regexp.MustCompile(`(?i)<(link|iframe|img|object)\b`), // elements that load
		regexp.MustCompile(`["'` + "`" + `]/api/`),            // absolute API paths
	} {
		if m := bad.FindString(body); m != "" {
			t.Errorf("the page refers to something outside itself: %q (%s)", m, bad)
		}
	}
	for _, path := range []string{`"api/status"`, `"api/frontends"`, `"api/backends"`, `"api/servers/"`} {
		if !strings.Contains(body, path) {
			t.Errorf("the page does not call %s", path)
		}
	}
}

// TestStatsPageLabels: every input has a label, every table header a
// scope, for screen readers.
func TestStatsPageLabels(t *testing.T) {
	_, body := getStats(t, http.MethodGet)
	for _, m := range regexp.MustCompile(`<input id="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		if !strings.Contains(body, `<label for="`+m[1]+`"`) {
			t.Errorf("input %s has no label", m[1])
		}
	}
	if strings.Contains(body, "<th>") || !strings.Contains(body, `scope: "col"`) {
		t.Error("table headers without a scope")
	}
}
