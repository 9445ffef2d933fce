package balance

import (
	"fmt"
	"strings"
)

// Admin is the administrative state of a server, set by configuration (and
// later by a runtime API). Its names, in a server's state setting, are
// those of String; the zero value is Active.
type Admin int32

const (
	// Active servers take new requests.
	Active Admin = iota
	// Drain servers take no new requests; in-flight ones finish.
	Drain
	// Disabled servers take no requests (in-flight ones still finish:
	// nothing is cut).
	Disabled
)

// admins lists every Admin, in the order error messages name them.
var admins = []Admin{Active, Drain, Disabled}

// String is the state's name: "active", "drain" or "disabled".
func (a Admin) String() string {
	switch a {
	case Drain:
		return "drain"
	case Disabled:
		return "disabled"
	}
	return "active"
}

// ParseAdmin returns the administrative state named s (active, drain or
// disabled). The error names s and the valid names; it does not say
// where s came from.
func ParseAdmin(s string) (Admin, error) {
	names := make([]string, len(admins))
	for i, a := range admins {
		if a.String() == s {
			return a, nil
		}
		names[i] = a.String()
	}
	return Active, fmt.Errorf("state %q: want one of %s", s, strings.Join(names, ", "))
}
