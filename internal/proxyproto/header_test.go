package proxyproto

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name               string
		src, dst           net.Addr
		wantV1             string // "" to skip the text check
		family             pp.AddressFamilyAndProtocol
		wantSrc, wantDst   string // "" with LOCAL
		v1Family, v1Prefix string
	}{
		{name: "v4", src: tcp("192.0.2.1:1234"), dst: tcp("198.51.100.2:443"),
			wantV1: "PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\n", family: pp.TCPv4,
			wantSrc: "192.0.2.1:1234", wantDst: "198.51.100.2:443"},
		{name: "v6", src: tcp("[2001:db8::1]:50000"), dst: tcp("[2001:db8::2]:8443"),
			wantV1: "PROXY TCP6 2001:db8::1 2001:db8::2 50000 8443\r\n", family: pp.TCPv6,
			wantSrc: "[2001:db8::1]:50000", wantDst: "[2001:db8::2]:8443"},
		{name: "v4-mapped is v4", src: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}, dst: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2).To4(), Port: 2},
			wantV1: "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", family: pp.TCPv4,
			wantSrc: "192.0.2.1:1", wantDst: "192.0.2.2:2"},
		{name: "v4 to v6 maps v4", src: tcp("192.0.2.1:1234"), dst: tcp("[2001:db8::2]:443"),
			wantV1: "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1234 443\r\n", family: pp.TCPv6,
			wantSrc: "[::ffff:192.0.2.1]:1234", wantDst: "[2001:db8::2]:443"},
		{name: "v6 to v4 maps v4", src: tcp("[2001:db8::1]:1234"), dst: tcp("192.0.2.2:443"),
			wantV1: "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.2 1234 443\r\n", family: pp.TCPv6,
			wantSrc: "[2001:db8::1]:1234", wantDst: "[::ffff:192.0.2.2]:443"},
		{name: "zone dropped", src: &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, dst: tcp("[fe80::2]:2"),
			wantV1: "PROXY TCP6 fe80::1 fe80::2 1 2\r\n", family: pp.TCPv6,
			wantSrc: "[fe80::1]:1", wantDst: "[fe80::2]:2"},
		{name: "unix", src: &net.UnixAddr{Name: "@", Net: "unix"}, dst: &net.UnixAddr{Name: "/run/x", Net: "unix"},
			wantV1: "PROXY UNKNOWN\r\n", family: pp.UNSPEC},
		{name: "nil", wantV1: "PROXY UNKNOWN\r\n", family: pp.UNSPEC},
		{name: "no IP", src: &net.TCPAddr{Port: 1}, dst: tcp("192.0.2.2:2"), wantV1: "PROXY UNKNOWN\r\n", family: pp.UNSPEC},
		{name: "tcp to udp", src: tcp("192.0.2.1:1"), dst: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 2},
			wantV1: "PROXY UNKNOWN\r\n", family: pp.UNSPEC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []int{1, 2} {
				b, err := Header(v, tc.src, tc.dst)
				if err != nil {
					t.Fatalf("v%d: %v", v, err)
				}
				if v == 1 && string(b) != tc.wantV1 {
					t.Errorf("v1 = %q, want %q", b, tc.wantV1)
				}
				br := bufio.NewReader(bytes.NewReader(b))
				h, err := pp.Read(br)
				if err != nil {
					t.Fatalf("v%d %q: library parser: %v", v, b, err)
				}
				if br.Buffered() != 0 {
					t.Errorf("v%d: %d bytes left after the header", v, br.Buffered())
				}
				if int(h.Version) != v {
					t.Errorf("v%d: parsed version %d", v, h.Version)
				}
				if h.TransportProtocol != tc.family {
					t.Errorf("v%d: family %#x, want %#x", v, h.TransportProtocol, tc.family)
				}
				if tc.wantSrc == "" {
					if !h.Command.IsLocal() {
						t.Errorf("v%d: command %#x, want LOCAL", v, h.Command)
					}
					continue
				}
				if !h.Command.IsProxy() {
					t.Errorf("v%d: command %#x, want PROXY", v, h.Command)
				}
				if got := addrString(t, h.SourceAddr); got != tc.wantSrc {
					t.Errorf("v%d: source %s, want %s", v, got, tc.wantSrc)
				}
				if got := addrString(t, h.DestinationAddr); got != tc.wantDst {
					t.Errorf("v%d: destination %s, want %s", v, got, tc.wantDst)
				}
			}
		})
	}
}

func addrString(t *testing.T, a net.Addr) string {
	t.Helper()
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		t.Fatalf("address %v is a %T", a, a)
	}
	return ta.AddrPort().String()
}

func TestHeaderUDP(t *testing.T) {
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}
	dst := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 5353}
	b, err := Header(2, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	h, err := pp.Read(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	s, d, ok := h.UDPAddrs()
	if !ok || h.TransportProtocol != pp.UDPv4 || s.String() != "192.0.2.1:53" || d.String() != "192.0.2.2:5353" {
		t.Fatalf("parsed %+v", h)
	}
	if b, _ := Header(1, src, dst); string(b) != "PROXY UNKNOWN\r\n" {
		t.Fatalf("v1 for UDP = %q", b)
	}
}

func TestHeaderErrors(t *testing.T) {
	for _, v := range []int{0, 3, -1} {
		if _, err := Header(v, tcp("192.0.2.1:1"), tcp("192.0.2.2:2")); err == nil || !strings.Contains(err.Error(), "want 1 or 2") {
			t.Errorf("version %d: err = %v", v, err)
		}
	}
	// A port out of range is no address to report.
	b, err := Header(2, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 70000}, tcp("192.0.2.2:2"))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := pp.Read(bufio.NewReader(bytes.NewReader(b))); err != nil || !h.Command.IsLocal() {
		t.Fatalf("out-of-range port: %+v, %v", h, err)
	}
}
