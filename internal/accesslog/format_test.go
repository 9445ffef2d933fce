package accesslog

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func sample() *Entry {
	return &Entry{
		Time: time.Date(2026, 12, 8, 1, 2, 3, 4_000_000, time.UTC), Client: "[2001:db8::1]:51234",
		Frontend: "web", Protocol: "HTTP/2", TLSVersion: "TLS1.3", SNI: "example.com",
		Method: "GET", Host: "example.com", Path: `/a "b"\c`, Query: "x=1",
		Referer: "https://r/", UserAgent: "curl/8.0 \x01é",
		Status: 200, BytesIn: 3, BytesOut: 1234, Backend: "app", Server: "127.0.0.1:9001",
		Retries: 1, RequestID: "abc", Queue: 1500 * time.Microsecond, Connect: 2 * time.Millisecond,
		Headers: 10 * time.Millisecond, Total: 12 * time.Millisecond, State: Normal,
	}
}

func TestJSON(t *testing.T) {
	line := JSON.Append(nil, sample())
	if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	want := map[string]any{
		"time": "2026-12-08T01:02:03.004Z", "client_ip": "2001:db8::1", "client_port": 51234.0,
		"frontend": "web", "protocol": "HTTP/2", "tls_version": "TLS1.3", "sni": "example.com",
		"method": "GET", "host": "example.com", "path": `/a "b"\c`, "query": "x=1",
		"status": 200.0, "bytes_in": 3.0, "bytes_out": 1234.0, "backend": "app", "server": "127.0.0.1:9001",
		"retries": 1.0, "request_id": "abc", "referer": "https://r/", "user_agent": "curl/8.0 \x01é",
		"queue_ms": 1.5, "connect_ms": 2.0, "headers_ms": 10.0, "total_ms": 12.0, "state": "--",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("%d keys, want %d: %s", len(m), len(want), line)
	}
	// Every key is written even when empty: the keys are stable.
	var empty map[string]any
	if err := json.Unmarshal(JSON.Append(nil, &Entry{Path: "\xff"}), &empty); err != nil || len(empty) != len(want) || empty["path"] != "\ufffd" {
		t.Errorf("empty entry: %v, %d keys, path %q", err, len(empty), empty["path"])
	}
}

// combinedRE is the standard regular expression of Apache's combined
// format, as log parsers use it.
var combinedRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "((?:[^"\\]|\\.)*)" (\d{3}|-) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$`)

func TestCombined(t *testing.T) {
	line := string(Combined.Append(nil, sample()))
	want := `2001:db8::1 - - [08/Dec/2026:01:02:03 +0000] "GET /a \"b\"\\c?x=1 HTTP/2" 200 1234 "https://r/" "curl/8.0 \x01\xc3\xa9"` + "\n"
	if line != want {
		t.Errorf("got  %s\nwant %s", line, want)
	}
	if !combinedRE.MatchString(strings.TrimSuffix(line, "\n")) {
		t.Errorf("does not parse as combined: %s", line)
	}
	tcp := string(Combined.Append(nil, &Entry{Time: time.Unix(0, 0), Client: "10.0.0.1:5", Protocol: "tcp"}))
	if !combinedRE.MatchString(strings.TrimSuffix(tcp, "\n")) || !strings.Contains(tcp, `"-" - - "-" "-"`) {
		t.Errorf("tcp line: %s", tcp)
	}
}

func TestLogfmt(t *testing.T) {
	line := string(Logfmt.Append(nil, sample()))
	for _, s := range []string{"time=2026-12-08T01:02:03.004Z ", " client_ip=2001:db8::1 ", " client_port=51234 ", ` path="/a \"b\"\\c" `, " status=200 ", " total_ms=12.000 ", " state=--\n"} {
		if !strings.Contains(line, s) {
			t.Errorf("%q lacks %q", line, s)
		}
	}
	if l := string(Logfmt.Append(nil, &Entry{})); strings.Contains(l, "sni=") {
		t.Errorf("empty strings are left out: %s", l)
	}
}

func TestParseFormat(t *testing.T) {
	for i, n := range FormatNames {
		if f, err := ParseFormat(n); err != nil || f != Format(i) || f.String() != n {
			t.Errorf("%s: %v %v", n, f, err)
		}
	}
	if _, err := ParseFormat("apache"); err == nil {
		t.Error("apache accepted")
	}
}

func BenchmarkJSON(b *testing.B) {
	e := sample()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = JSON.Append(buf[:0], e)
	}
}
