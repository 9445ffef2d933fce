package proxy

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestForwarded(t *testing.T) {
	tests := []struct {
		client, host, scheme string
		want                 string
	}{
		{"192.0.2.7", "example.test", "https", "for=192.0.2.7;host=example.test;proto=https"},
		{"::1", "example.test", "http", `for="[::1]";host=example.test;proto=http`},
		{"2001:db8::7", "example.test", "https", `for="[2001:db8::7]";host=example.test;proto=https`},
		{"192.0.2.7", "example.test:8443", "https", `for=192.0.2.7;host="example.test:8443";proto=https`},
		{"192.0.2.7", "[::1]:8443", "https", `for=192.0.2.7;host="[::1]:8443";proto=https`},
		{"", "example.test", "http", "host=example.test;proto=http"}, // client unknown (a unix socket)
		{"192.0.2.7", "", "http", "for=192.0.2.7;proto=http"},        // HTTP/1.0 without Host
	}
	for _, tt := range tests {
		var client netip.Addr
		if tt.client != "" {
			client = netip.MustParseAddr(tt.client)
		}
		if got := forwarded(client, tt.host, tt.scheme); got != tt.want {
			t.Errorf("forwarded(%q, %q, %q) = %s, want %s", tt.client, tt.host, tt.scheme, got, tt.want)
		}
	}
}

func TestQuoteIfNeeded(t *testing.T) {
	tests := map[string]string{
		"example.test":      "example.test",
		"a-b_c~d!#$%&'*+^|": "a-b_c~d!#$%&'*+^|", // all token characters
		"example.test:80":   `"example.test:80"`,
		"a b":               `"a b"`,
		`say "hi"`:          `"say \"hi\""`,
		`back\slash`:        `"back\\slash"`,
		"semi;colon":        `"semi;colon"`,
		"com,ma":            `"com,ma"`,
		"eq=ual":            `"eq=ual"`,
	}
	for in, want := range tests {
		if got := quoteIfNeeded(in); got != want {
			t.Errorf("quoteIfNeeded(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		remote, wantXFF, wantFor string
	}{
		{"192.0.2.7:51000", "192.0.2.7", "for=192.0.2.7;"},
		{"[::1]:51000", "::1", `for="[::1]";`},
		{"[::ffff:192.0.2.7]:51000", "192.0.2.7", "for=192.0.2.7;"}, // IPv4 on a dual-stack socket
		{"@", "", ""}, // a unix socket: no client address
	}
	for _, tt := range tests {
		in, _ := http.NewRequest("GET", "https://example.test/", nil)
		in.RemoteAddr = tt.remote
		in.Host = "example.test"
		out := http.Header{
			"X-Forwarded-For":    {"203.0.113.66"},
			"X-Forwarded-Prefix": {"/admin"},
			"X-Forwarded-Ssl":    {"on"},
			"Forwarded":          {"for=203.0.113.66"},
			"X-Forwardedness":    {"not a forwarding header"},
		}
		sanitize(out, in, "https")
		if got := out.Get("X-Forwarded-For"); got != tt.wantXFF {
			t.Errorf("%s: X-Forwarded-For = %q, want %q", tt.remote, got, tt.wantXFF)
		}
		if got, want := out.Get("Forwarded"), tt.wantFor+"host=example.test;proto=https"; got != want {
			t.Errorf("%s: Forwarded = %q, want %q", tt.remote, got, want)
		}
		for _, k := range []string{"X-Forwarded-Prefix", "X-Forwarded-Ssl"} {
			if v, ok := out[k]; ok {
				t.Errorf("%s: client's %s survived: %q", tt.remote, k, v)
			}
		}
		if out.Get("X-Forwardedness") == "" {
			t.Errorf("X-Forwardedness is not an X-Forwarded-* header and must stay")
		}
		if out.Get("X-Forwarded-Proto") != "https" || out.Get("X-Forwarded-Host") != "example.test" || out.Get("Via") != "1.1 portcullis" {
			t.Errorf("%s: proxy headers = %v", tt.remote, out)
		}
	}
}

func TestViaVersion(t *testing.T) {
	for _, tt := range []struct {
		major, minor int
		want         string
	}{
		{1, 0, "1.0 portcullis"}, {1, 1, "1.1 portcullis"}, {2, 0, "2 portcullis"}, {3, 0, "3 portcullis"},
	} {
		h := http.Header{}
		addVia(h, tt.major, tt.minor)
		if got := h.Get("Via"); got != tt.want {
			t.Errorf("HTTP/%d.%d: Via = %q, want %q", tt.major, tt.minor, got, tt.want)
		}
	}
}

func BenchmarkSanitize(b *testing.B) {
	in, _ := http.NewRequest("GET", "http://app.example.test/v1/users", nil)
	in.RemoteAddr = "192.0.2.7:51000"
	in.Host = "app.example.test:8443"
	base := http.Header{
		"Accept":          {"*/*"},
		"User-Agent":      {"bench/1.0"},
		"X-Forwarded-For": {"203.0.113.66"},
		"X-Request-Id":    {"0123456789abcdef"},
	}
	b.ReportAllocs()
	for b.Loop() {
		out := base.Clone() // the outbound request's own copy, as ReverseProxy makes
		sanitize(out, in, "http")
	}
}
