package l4

import (
	"testing"

	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/sni"
)

func TestTableMatch(t *testing.T) {
	tab := NewTable([]Route{
		{SNI: hostname.MustParsePattern("Exact.test"), BackendName: "exact"},
		{SNI: hostname.MustParsePattern("*.wild.test"), BackendName: "wild"},
		{SNI: hostname.MustParsePattern("mail.test"), ALPN: []string{"imap"}, BackendName: "imap"},
		{SNI: hostname.MustParsePattern("mail.test"), BackendName: "mail"},
		{ALPN: []string{"h2"}, BackendName: "any-h2"},
		{BackendName: "default"},
	})
	if !tab.NeedHello() {
		t.Error("NeedHello false with SNI routes")
	}
	for _, c := range []struct {
		hello *sni.Hello
		want  string
	}{
		{&sni.Hello{ServerName: "exact.test"}, "exact"},
		{&sni.Hello{ServerName: "EXACT.TEST"}, "exact"},
		{&sni.Hello{ServerName: "exact.test."}, "exact"},
		{&sni.Hello{ServerName: "x.exact.test"}, "default"},
		{&sni.Hello{ServerName: "a.wild.test"}, "wild"},
		{&sni.Hello{ServerName: "a.b.c.wild.test"}, "wild"},
		{&sni.Hello{ServerName: "wild.test"}, "default"},
		{&sni.Hello{ServerName: "xwild.test"}, "default"},
		{&sni.Hello{ServerName: "mail.test", ALPN: []string{"h2", "imap"}}, "imap"},
		{&sni.Hello{ServerName: "mail.test", ALPN: []string{"pop3"}}, "mail"},
		{&sni.Hello{ServerName: "mail.test"}, "mail"},
		{&sni.Hello{ServerName: "other.test", ALPN: []string{"h2"}}, "any-h2"},
		{&sni.Hello{ALPN: []string{"h2"}}, "any-h2"},
		{&sni.Hello{}, "default"},
		{nil, "default"},
	} {
		r := tab.Match(c.hello)
		if r == nil || r.BackendName != c.want {
			t.Errorf("Match(%+v) = %+v, want %s", c.hello, r, c.want)
		}
	}

	strict := NewTable([]Route{{SNI: hostname.MustParsePattern("*.wild.test")}, {SNI: hostname.MustParsePattern("exact.test")}})
	for _, h := range []*sni.Hello{nil, {}, {ServerName: "wild.test"}, {ServerName: "exact.test.other"}} {
		if r := strict.Match(h); r != nil {
			t.Errorf("Match(%+v) = %+v without a default route", h, r)
		}
	}
	var none *Table
	if none.Match(&sni.Hello{ServerName: "a"}) != nil || none.NeedHello() {
		t.Error("a nil table matches")
	}
}

func TestTableNeedHello(t *testing.T) {
	for _, c := range []struct {
		routes []Route
		want   bool
	}{
		{nil, false},
		{[]Route{{}}, false},
		{[]Route{{}, {SNI: hostname.MustParsePattern("a")}}, true},
		{[]Route{{ALPN: []string{"h2"}}}, true},
	} {
		if got := NewTable(c.routes).NeedHello(); got != c.want {
			t.Errorf("NeedHello of %+v = %v", c.routes, got)
		}
	}
}

func TestNewTableCopies(t *testing.T) {
	routes := []Route{{SNI: hostname.MustParsePattern("A.test")}}
	tab := NewTable(routes)
	routes[0].SNI = hostname.MustParsePattern("b.test")
	if tab.Routes[0].SNI.String() != "a.test" {
		t.Errorf("caller's route %q, table's %q", routes[0].SNI, tab.Routes[0].SNI)
	}
}
