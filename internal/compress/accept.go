package compress

import "strings"

// Negotiate returns the first of algos (the route's order of preference)
// that the Accept-Encoding field values accept (RFC 9110 §12.5.3), or
// None. A coding is accepted when listed, or covered by "*", with a
// q-value above 0; its own entry wins over "*"; "x-gzip" is gzip; a
// malformed q-value refuses. The client's own order is not followed:
// the server's preference decides among what it accepts. It does not
// allocate.
func Negotiate(values []string, algos []Algorithm) Algorithm {
	// -1: not listed; 0: refused; 1: accepted. Index 0 is "*".
	var state [Zstd + 1]int8
	for i := range state {
		state[i] = -1
	}
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(item, ";")
			name = strings.TrimSpace(name)
			var a Algorithm
			switch {
			case name == "*":
				a = None
			case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
				a = Gzip
			case strings.EqualFold(name, "br"):
				a = Brotli
			case strings.EqualFold(name, "zstd"):
				a = Zstd
			default:
				continue
			}
			q := int8(1)
			if !qAccepts(params) {
				q = 0
			}
			// Of two entries for one coding, the one that refuses wins.
			if state[a] != 0 {
				state[a] = q
			}
		}
	}
	for _, a := range algos {
		if s := state[a]; s == 1 || (s == -1 && state[None] == 1) {
			return a
		}
	}
	return None
}

// qAccepts reports whether the parameters of an Accept-Encoding entry
// (";q=0.5") leave its q-value above 0. No q means 1.
func qAccepts(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, val, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		return qPositive(strings.TrimSpace(val))
	}
	return true
}

// qPositive reports whether a qvalue ("0", "0.5", "1.000") is well-formed
// and above 0.
func qPositive(q string) bool {
	if q == "" || (q[0] != '0' && q[0] != '1') {
		return false
	}
	rest := q[1:]
	if rest != "" {
		if rest[0] != '.' || len(rest) > 4 {
			return false
		}
		rest = rest[1:]
	}
	positive := q[0] == '1'
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c < '0' || c > '9' || (q[0] == '1' && c != '0') {
			return false
		}
		if c != '0' {
			positive = true
		}
	}
	return positive
}
