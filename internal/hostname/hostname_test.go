package hostname

import "testing"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"example.test", "example.test", true},
		{"Example.TEST", "example.test", true},
		{"example.test", "www.example.test", false},
		{"example.test", "", false},
		{"*.example.test", "www.example.test", true},
		{"*.Example.test", "a.b.c.example.test", true},
		{"*.example.test", "example.test", false},
		{"*.example.test", "badexample.test", false},
		{"*.example.test", "example.test.evil", false},
		{"*.example.test", "", false},
		{"", "anything.test", true},
		{"", "", true},
	} {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", c.pattern, err)
		}
		if got := p.Match(c.name); got != c.want {
			t.Errorf("ParsePattern(%q).Match(%q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestParsePatternString(t *testing.T) {
	for in, want := range map[string]string{"": "", "A.test": "a.test", "*.EXAMPLE.test": "*.example.test"} {
		p, err := ParsePattern(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePattern(%q) = %q, %v; want %q", in, p.String(), err, want)
		}
		if p.IsAny() != (in == "") {
			t.Errorf("ParsePattern(%q).IsAny() = %v", in, p.IsAny())
		}
	}
}

func TestParsePatternRefuses(t *testing.T) {
	for _, in := range []string{"*", "*.", "**.example.test", "a.*.example.test", "example.test:80", "http://example.test", "example.test.", ".example.test", "a..test", "a b"} {
		if p, err := ParsePattern(in); err == nil {
			t.Errorf("ParsePattern(%q) = %q, want an error", in, p)
		}
	}
}
