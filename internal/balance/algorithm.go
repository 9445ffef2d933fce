package balance

import (
	"fmt"
	"strings"
)

// Algorithm is a balance algorithm, named as in a backend's balance
// setting.
type Algorithm string

// The algorithms.
const (
	RoundRobin Algorithm = "round_robin" // smooth weighted round robin; the default
	LeastConn  Algorithm = "least_conn"  // fewest in flight relative to weight
	Random     Algorithm = "random"      // power of two weighted random choices
	Hash       Algorithm = "hash"        // weighted rendezvous hashing of a request key
)

// algorithms lists every Algorithm, in the order error messages name them.
var algorithms = []Algorithm{RoundRobin, LeastConn, Random, Hash}

// ParseAlgorithm returns the algorithm named s (round_robin, least_conn,
// random or hash). The error names s and the valid names; it does not
// say where s came from.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("balance %q: want one of %s", s, algorithmList())
}

// algorithmList is "round_robin, least_conn, random, hash".
func algorithmList() string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}
