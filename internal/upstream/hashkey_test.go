package upstream

import "testing"

func TestParseHashKey(t *testing.T) {
	for _, c := range []struct {
		in   string
		want HashKey
	}{
		{"", HashKey{}},
		{"source", HashKey{Kind: HashSource}},
		{"uri", HashKey{Kind: HashURI}},
		{"header:X-User", HashKey{Kind: HashHeader, Name: "X-User"}},
		{"cookie:session", HashKey{Kind: HashCookie, Name: "session"}},
	} {
		got, err := ParseHashKey(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseHashKey(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if s := got.String(); s != c.in {
			t.Errorf("ParseHashKey(%q).String() = %q", c.in, s)
		}
	}
	for in, want := range map[string]string{
		"header:":       "header:NAME needs a valid header name",
		"header:X User": "header:NAME needs a valid header name",
		"cookie:":       "cookie:NAME needs a valid cookie name",
		"cookie:a;b":    "cookie:NAME needs a valid cookie name",
		"client":        "want source, uri, header:NAME or cookie:NAME",
		"Source":        "want source, uri, header:NAME or cookie:NAME",
		"header-X-User": "want source, uri, header:NAME or cookie:NAME",
	} {
		if _, err := ParseHashKey(in); err == nil || err.Error() != want {
			t.Errorf("ParseHashKey(%q): error %v, want %q", in, err, want)
		}
	}
}
