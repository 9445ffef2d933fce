package admin

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// statsHTML is the stats page: one self-contained document, its style
// and script inline, that polls the read-only API every 2 s.
//
//go:embed stats.html
var statsHTML []byte

// statsPage serves the stats page (GET and HEAD).
//
// Its Content-Security-Policy allows nothing but the page's own inline
// <style> and <script>, named by their SHA-256 hashes (computed here from
// the embedded file, so an edit of the page cannot forget them), and
// fetches from the page's own origin: no 'unsafe-inline', no other
// script, style, image, font, frame or form target, even if an injected
// server name or error text got past the page's escaping.
func statsPage() http.Handler {
	csp := statsCSP(statsHTML)
	sum := sha256.Sum256(statsHTML)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the stats page is read with GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		http.ServeContent(w, r, "stats.html", time.Time{}, bytes.NewReader(statsHTML))
	})
}

// statsCSP is the Content-Security-Policy of page: its inline <style>
// and <script> elements allowed by hash, fetches to its own origin.
func statsCSP(page []byte) string {
	return strings.Join([]string{
		"default-src 'none'",
		"script-src " + inlineHashes(page, "script"),
		"style-src " + inlineHashes(page, "style"),
		"connect-src 'self'",
		"img-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

// inlineHashes returns the CSP sources ('sha256-…') of the contents of
// every <tag>…</tag> element of page; the opening tag has no attributes.
// It returns 'none' when there is no such element.
func inlineHashes(page []byte, tag string) string {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	var srcs []string
	for {
		i := bytes.Index(page, open)
		if i < 0 {
			break
		}
		page = page[i+len(open):]
		j := bytes.Index(page, end)
		if j < 0 {
			break
		}
		sum := sha256.Sum256(page[:j])
		srcs = append(srcs, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		page = page[j+len(end):]
	}
	if len(srcs) == 0 {
		return "'none'"
	}
	return strings.Join(srcs, " ")
}
