package balance

import "testing"

func TestParseAdmin(t *testing.T) {
	for _, a := range admins {
		if got, err := ParseAdmin(a.String()); err != nil || got != a {
			t.Errorf("ParseAdmin(%q) = %v, %v", a, got, err)
		}
	}
	for _, s := range []string{"", "paused", "Drain"} {
		_, err := ParseAdmin(s)
		want := `state "` + s + `": want one of active, drain, disabled`
		if err == nil || err.Error() != want {
			t.Errorf("ParseAdmin(%q): error %v, want %q", s, err, want)
		}
	}
}
