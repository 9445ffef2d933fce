package compress

import (
	"strings"
	"testing"
)

func TestNegotiate(t *testing.T) {
	cases := []struct {
		accept string
		algos  []Algorithm
		want   Algorithm
	}{
		{"gzip, deflate, br, zstd", all, Zstd},
		{"gzip, deflate, br", all, Brotli},
		{"gzip", all, Gzip},
		{"x-gzip", all, Gzip},
		{"GZIP;Q=1.0", all, Gzip},
		{"", all, None},
		{"identity", all, None},
		{"*", all, Zstd},
		{"*;q=0", all, None},
		{"*, zstd;q=0", all, Brotli},
		{"*;q=0, gzip", all, Gzip},
		{"zstd;q=0, br;q=0.001, gzip", all, Brotli},
		{"zstd;q=0.000, br;q=0.0, gzip;q=0", all, None},
		{"br;q=1.5", all, None},    // malformed: refused
		{"br;q=0.5000", all, None}, // four decimals: malformed
		{"br;q=", all, None},
		{"br;level=1;q=0.2", all, Brotli},
		{"gzip, gzip;q=0", all, None},
		{"zstd, br", []Algorithm{Gzip}, None},
		{" br ; q=0.9 ,gzip", []Algorithm{Gzip, Brotli}, Gzip},
	}
	for _, c := range cases {
		if got := Negotiate([]string{c.accept}, c.algos); got != c.want {
			t.Errorf("Negotiate(%q, %v) = %v, want %v", c.accept, c.algos, got, c.want)
		}
	}
	if got := Negotiate([]string{"zstd;q=0", "br"}, all); got != Brotli {
		t.Errorf("two field lines: %v, want br", got)
	}
	if n := testing.AllocsPerRun(100, func() { Negotiate([]string{"gzip, deflate, br;q=0.5, zstd"}, all) }); n != 0 {
		t.Errorf("Negotiate allocates %v times", n)
	}
}

func TestParse(t *testing.T) {
	for _, n := range Names {
		a, err := Parse(n)
		if err != nil || a.String() != n {
			t.Errorf("Parse(%q) = %v, %v", n, a, err)
		}
	}
	if _, err := Parse("deflate"); err == nil || !strings.Contains(err.Error(), "zstd, br, gzip") {
		t.Errorf("Parse(deflate): %v", err)
	}
}

// FuzzNegotiate checks that any Accept-Encoding value gives one of the
// route's algorithms or None, that a refusal of each is obeyed, and that
// nothing panics.
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"gzip, deflate, br, zstd", "*;q=0", "br;q=0.5, gzip;q=0", ";;,,q=", "x-gzip;q=1.000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		got := Negotiate([]string{accept}, all)
		if got > Zstd {
			t.Fatalf("Negotiate(%q) = %d", accept, got)
		}
		if got != None {
			refused := accept + ", " + got.String() + ";q=0"
			if again := Negotiate([]string{refused}, []Algorithm{got}); again != None {
				t.Fatalf("Negotiate(%q) = %v despite q=0", refused, again)
			}
		}
	})
}
