package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// newBrowser starts Debian's chromium, headless, for the test; the
// context ends with the test or after a minute.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := needTool(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancel := context.WithTimeout(ctx, scaled(time.Minute))
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	return ctx
}

// statsPage is the stats page open in a browser tab.
type statsPage struct {
	t   *testing.T
	ctx context.Context
}

// do runs browser actions and fails the test on an error.
func (p statsPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// text is the text of the first element that matches the CSS selector,
// or "" when there is none.
func (p statsPage) text(selector string) string {
	p.t.Helper()
	sel, _ := json.Marshal(selector)
	got, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%s)?.textContent ?? ""`, sel)))
	if err != nil {
		p.t.Fatalf("read %s: %v", selector, err)
	}
	return strings.TrimSpace(got)
}

// dump is the page's text as a user reads it.
func (p statsPage) dump() string {
	got, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return err.Error()
	}
	return got
}

// cell is the text of column col of the row of server backend/address.
func (p statsPage) cell(server, col string) string {
	p.t.Helper()
	return p.text(fmt.Sprintf(`tr[data-server=%q] [data-col=%q]`, server, col))
}

// waitFor waits until ok (the page updates every 2 s); it fails the test
// after 10 s, saying what it waited for and what the page shows.
func (p statsPage) waitFor(what func() string, ok func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(scaled(10 * time.Second))
	for !ok() {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s after %v; the page shows:\n%s", what(), scaled(10*time.Second), p.dump())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCell waits until ok accepts the text of a server's cell.
func (p statsPage) waitCell(server, col string, ok func(string) bool) {
	p.t.Helper()
	var got string
	p.waitFor(func() string { return fmt.Sprintf("the %s cell of %s shows %q", col, server, got) },
		func() bool { got = p.cell(server, col); return ok(got) })
}

// count is the number of elements that match the CSS selector.
func (p statsPage) count(selector string) int {
	p.t.Helper()
	sel, _ := json.Marshal(selector)
	n, err := chromedp.Run(p.ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%s).length`, sel)))
	if err != nil {
		p.t.Fatalf("count %s: %v", selector, err)
	}
	return n
}

func is(want string) func(string) bool { return func(s string) bool { return s == want } }

// TestStatsPage opens /stats on admin.listen in chromium: it lists both
// servers of the backend, up, with their health checks; its numbers follow
// a load; with the token typed in, the drain button drains a server, and
// the next requests go to the other one only. Without the token, or with a
// wrong one, nothing changes and the page says why.
func TestStatsPage(t *testing.T) {
	ctx := newBrowser(t)
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	sock := filepath.Join(sharedDir(t), "run", "admin.sock")
	s, _ := startLB(t, withAdmin(t, lbConfig(checkHealth, lbServer{addr: a.addr}, lbServer{addr: b.addr}), sock, true))
	srvA, srvB := "pool/"+a.addr, "pool/"+b.addr
	page := statsPage{t, ctx}

	page.do("open the stats page", chromedp.Navigate("http://"+adminListen+"/stats"))
	for _, srv := range []string{srvA, srvB} {
		page.waitCell(srv, "state", is("up"))
		passed := fmt.Sprintf(`tr[data-server=%q] .checks span.ok`, srv)
		page.waitFor(func() string { return "no passed health check shown for " + srv },
			func() bool { return page.count(passed) > 0 })
	}
	if got := page.text(`#status [data-key=Config] dd`); !strings.Contains(got, "portcullis.yaml · sha256:") {
		t.Errorf("the header shows the configuration %q, want its path and digest", got)
	}
	if got := page.text(`#status [data-key=Generation] dd`); got != "0" {
		t.Errorf("the header shows generation %q, want 0", got)
	}

	// Numbers follow a bounded load.
	before := page.cell(srvA, "requests")
	c := clientFor(t, s, "HTTP/1.1", 4)
	for _, r := range load(c, 40, 4, func(i int) string { return fmt.Sprintf("/load/%d", i) }, 0, nil) {
		if r.err != nil || r.status != 200 {
			t.Fatalf("load: %v", r)
		}
	}
	page.waitCell(srvA, "requests", func(s string) bool { return s != before })
	page.waitCell(srvB, "rps", func(s string) bool { return s != "" && s != "–" && s != "0.00" })
	if got := page.text(`[data-key=protocols] [data-key=http1] [data-col=requests]`); got == "" || got == "0" {
		t.Errorf("the frontend's http1 requests show %q after 40 requests", got)
	}

	// Read-only without the token: no buttons.
	if page.count("body.can-write") != 0 {
		t.Fatal("the page offers buttons on admin.listen without a token")
	}
	drain := fmt.Sprintf(`tr[data-server=%q] button[data-action=drain]`, srvA)
	// A wrong token: the error is shown and the server stays up.
	page.do("drain with a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token-0123456789"),
		chromedp.Click(chromedp.ID("token-use")),
		chromedp.Click(chromedp.CSS(drain)))
	page.waitMessage("wrong token")
	if got := page.cell(srvA, "state"); got != "up" {
		t.Fatalf("after a drain with a wrong token %s shows %q", srvA, got)
	}
	// The right token drains.
	page.do("drain with the token",
		chromedp.SendKeys(chromedp.ID("token"), adminToken),
		chromedp.Click(chromedp.ID("token-use")),
		chromedp.Click(chromedp.CSS(drain)))
	page.waitCell(srvA, "state", func(s string) bool { return strings.HasPrefix(s, "drain") })
	for _, r := range load(c, 20, 4, func(i int) string { return fmt.Sprintf("/after/%d", i) }, 0, nil) {
		if r.err != nil || r.status != 200 || r.server() != "b" {
			t.Fatalf("after the drain of %s: %v (want every response from b)", srvA, r)
		}
	}
}

// waitMessage waits until the page's message line contains want.
func (p statsPage) waitMessage(want string) {
	p.t.Helper()
	deadline := time.Now().Add(scaled(5 * time.Second))
	for !strings.Contains(p.text("#message"), want) {
		if time.Now().After(deadline) {
			p.t.Fatalf("the page's message is %q, want one with %q; the page shows:\n%s", p.text("#message"), want, p.dump())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
