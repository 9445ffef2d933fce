package sni

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name     string
		body     []byte
		wantName string
		wantALPN []string
	}{
		{"no extensions", helloBody(nil), "", nil},
		{"empty extensions", helloBody([]byte{}), "", nil},
		{"host name", helloBody(ext(extServerName, sniData("example.com"))), "example.com", nil},
		{"lower-cased, trailing dot removed", helloBody(ext(extServerName, sniData("Mail.EXAMPLE.org."))), "mail.example.org", nil},
		{"other name types skipped", helloBody(ext(extServerName, []byte{0, 12, 7, 0, 2, 'x', 'y', 0, 0, 4, 'a', '.', 'b', 'c'})), "a.bc", nil},
		{"only another name type", helloBody(ext(extServerName, []byte{0, 5, 7, 0, 2, 'x', 'y'})), "", nil},
		{"MaxALPN protocols", helloBody(ext(extALPN, alpnData(slices.Repeat([]string{"p"}, MaxALPN)...))), "", slices.Repeat([]string{"p"}, MaxALPN)},
		{"ALPN in order", helloBody(ext(extALPN, alpnData("http/1.1", "h2", "imap"))), "", []string{"http/1.1", "h2", "imap"}},
		{"both, among others", helloBody(cat(
			ext(0x0a, []byte{0, 2, 0, 0x1d}),
			ext(extALPN, alpnData("h2")),
			ext(0xfe0d, nil),
			ext(extServerName, sniData("a.example")),
		)), "a.example", []string{"h2"}},
	} {
		h, err := Parse(tc.body)
		if err != nil {
			t.Errorf("%s: Parse: %v", tc.name, err)
			continue
		}
		if h.ServerName != tc.wantName || !slices.Equal(h.ALPN, tc.wantALPN) {
			t.Errorf("%s: got %q %q, want %q %q", tc.name, h.ServerName, h.ALPN, tc.wantName, tc.wantALPN)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	valid := helloBody(ext(extServerName, sniData("example.com")))
	for _, tc := range []struct {
		name, want string
		body       []byte
	}{
		{"empty", "shorter than its version and random", nil},
		{"cut in the random", "shorter than its version and random", valid[:20]},
		{"session ID overrun", "legacy_session_id length 32 exceeds the 0 bytes left", valid[:35]},
		{"session ID too long", "legacy_session_id of 33 bytes, want at most 32",
			append(append(slices.Clone(valid[:34]), 33), make([]byte, 40)...)},
		{"cipher suites cut", "cipher_suites length truncated: 1 bytes left, want 2", valid[:68]},
		{"odd cipher suites", "cipher_suites of 3 bytes, want a positive even number",
			append(slices.Clone(valid[:67]), 0, 3, 0, 1, 2, 1, 0)},
		{"no compression", "legacy_compression_methods is empty",
			append(slices.Clone(valid[:67]), 0, 2, 0, 1, 0)},
		{"extensions length cut", "extensions length truncated: 1 bytes left, want 2",
			append(helloBody(nil), 0)},
		{"extensions overrun", "extensions length 30 exceeds the 4 bytes left",
			append(helloBody(nil), 0, 30, 0, 0, 0, 0)},
		{"bytes after the extensions", "3 bytes after the extensions",
			append(slices.Clone(valid), 1, 2, 3)},
		{"extension type cut", "extension type truncated", helloBody([]byte{0})},
		{"extension length cut", "extension 10 length truncated", helloBody([]byte{0, 10, 0})},
		{"extension overruns", "server_name extension length 40 exceeds the 3 bytes left",
			helloBody([]byte{0, 0, 0, 40, 0, 1, 0})},
		{"server_name list overruns", "server_name list length 20 exceeds",
			helloBody(ext(extServerName, []byte{0, 20, 0, 0, 1, 'a'}))},
		{"bytes after the server_name list", "2 bytes after the server_name list",
			helloBody(ext(extServerName, append(sniData("a.b"), 0, 0)))},
		{"empty server_name list", "server_name list is empty", helloBody(ext(extServerName, []byte{0, 0}))},
		{"empty server_name extension", "server_name list length truncated", helloBody(ext(extServerName, nil))},
		{"server_name entry cut", "server_name entry length truncated: 1 bytes left, want 2",
			helloBody(ext(extServerName, []byte{0, 2, 0, 0}))},
		{"host name overruns", "server_name entry length 9 exceeds the 2 bytes left",
			helloBody(ext(extServerName, []byte{0, 5, 0, 0, 9, 'a', 'b'}))},
		{"empty host name", "empty server_name entry of name_type 0", helloBody(ext(extServerName, sniData("")))},
		{"dot only", `host_name is "."`, helloBody(ext(extServerName, sniData(".")))},
		{"two host names", "more than one host_name", helloBody(ext(extServerName, sniData("a.example", "b.example")))},
		{"NUL in host name", "host_name has byte 0x00 at offset 7", helloBody(ext(extServerName, sniData("example\x00.com")))},
		{"space in host name", "host_name has byte 0x20 at offset 0", helloBody(ext(extServerName, sniData(" example.com")))},
		{"UTF-8 in host name", "host_name has byte 0xc3 at offset 1", helloBody(ext(extServerName, sniData("bücher.example")))},
		{"DEL in host name", "host_name has byte 0x7f", helloBody(ext(extServerName, sniData("a\x7f")))},
		{"second server_name", "second server_name extension", helloBody(append(
			ext(extServerName, sniData("a.example")), ext(extServerName, sniData("b.example"))...))},
		{"empty ALPN extension", "ALPN protocol_name_list length truncated", helloBody(ext(extALPN, nil))},
		{"empty ALPN list", "ALPN protocol_name_list is empty", helloBody(ext(extALPN, []byte{0, 0}))},
		{"ALPN list overruns", "ALPN protocol_name_list length 8 exceeds the 3 bytes left",
			helloBody(ext(extALPN, []byte{0, 8, 2, 'h', '2'}))},
		{"bytes after the ALPN list", "1 bytes after the ALPN protocol_name_list",
			helloBody(ext(extALPN, append(alpnData("h2"), 9)))},
		{"ALPN name overruns", "ALPN protocol name length 5 exceeds the 2 bytes left",
			helloBody(ext(extALPN, []byte{0, 3, 5, 'h', '2'}))},
		{"empty ALPN name", "empty ALPN protocol name at position 1", helloBody(ext(extALPN, alpnData("", "h2")))},
		{"too many ALPN protocols", "ALPN offers 65 protocols, more than 64 (MaxALPN)",
			helloBody(ext(extALPN, alpnData(slices.Repeat([]string{"x"}, 65)...)))},
		{"second ALPN", "second application_layer_protocol_negotiation extension", helloBody(append(
			ext(extALPN, alpnData("h2")), ext(extALPN, alpnData("http/1.1"))...))},
	} {
		h, err := Parse(tc.body)
		var e *Error
		if !errors.As(err, &e) || h != nil {
			t.Errorf("%s: Parse = %v, %v, want *Error", tc.name, h, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
	}
}

func TestParseDoesNotRetainBody(t *testing.T) {
	body := helloBody(append(ext(extServerName, sniData("example.com")), ext(extALPN, alpnData("imap"))...))
	h, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if h.ServerName != "example.com" || h.ALPN[0] != "imap" {
		t.Errorf("Hello changed with the body: %q %q", h.ServerName, h.ALPN)
	}
}
