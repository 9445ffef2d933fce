package balance

import "testing"

func TestParseAlgorithm(t *testing.T) {
	for _, a := range algorithms {
		if got, err := ParseAlgorithm(string(a)); err != nil || got != a {
			t.Errorf("ParseAlgorithm(%q) = %q, %v", a, got, err)
		}
	}
	for _, s := range []string{"", "roundrobin", "Hash"} {
		_, err := ParseAlgorithm(s)
		want := `balance "` + s + `": want one of round_robin, least_conn, random, hash`
		if err == nil || err.Error() != want {
			t.Errorf("ParseAlgorithm(%q): error %v, want %q", s, err, want)
		}
	}
}
