package proxyproto

import (
	"net"
	"strings"
	"testing"
)

func TestParseTrusted(t *testing.T) {
	got, err := ParseTrusted([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", "10.1.2.3/16", "::ffff:172.16.0.0/108"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "10.1.0.0/16", "172.16.0.0/12"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("entry %d = %s, want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com", "fe80::1%eth0", "10.0.0.1-10.0.0.9"} {
		_, err := ParseTrusted([]string{bad})
		if err == nil {
			t.Errorf("ParseTrusted(%q) succeeded", bad)
		} else if !strings.Contains(err.Error(), "proxyproto: trusted proxy") {
			t.Errorf("ParseTrusted(%q): %v", bad, err)
		}
	}
	if tr, err := ParseTrusted(nil); err != nil || len(tr) != 0 {
		t.Errorf("ParseTrusted(nil) = %v, %v", tr, err)
	}
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

func TestTrustedContains(t *testing.T) {
	tr := mustTrusted("10.0.0.0/8", "2001:db8::/32")
	var nilTCP *net.TCPAddr
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{tcp("10.1.2.3:80"), true},
		{tcp("11.0.0.1:80"), false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 1}, true},
		{tcp("[2001:db8::5]:443"), true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::5"), Zone: "eth0"}, true},
		{tcp("[2001:db9::5]:443"), false},
		{&net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, true},
		{&net.IPAddr{IP: net.IPv4(10, 0, 0, 1)}, true},
		{strAddr("10.9.9.9:1"), true},
		{strAddr("garbage"), false},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, false},
		{nil, false},
		{nilTCP, false},
		{&net.TCPAddr{}, false},
	} {
		if got := tr.Contains(tc.addr); got != tc.want {
			t.Errorf("Contains(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if nobody.Contains(tcp("10.0.0.1:1")) {
		t.Error("the zero Trusted trusts someone")
	}
	if mustTrusted("::/0").Contains(tcp("10.0.0.1:1")) {
		t.Error("::/0 trusts an IPv4 peer")
	}
}
