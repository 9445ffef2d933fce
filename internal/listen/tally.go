package listen

import (
	"fmt"
	"strings"
)

// Tally says how many sockets specs are and which, in the words validate
// and the "ready" line both use: "6 sockets: 2 TCP, 4 UDP (QUIC on
// 127.0.0.1:443: 2 shards × 2 sets)", with ", 1 unix" for an admin
// socket. A UDP address with several sockets
// (QUIC shards, and a set of them per process generation when steered)
// is explained; a single socket is not.
func Tally(specs []Spec) string {
	var tcp, udp, unix int
	var groups []string
	seen := map[string]bool{}
	for _, s := range specs {
		switch s.Network {
		case "tcp":
			tcp++
			continue
		case "unix":
			unix++
			continue
		}
		udp++
		if !s.ReusePort() || seen[s.Address] {
			continue
		}
		seen[s.Address] = true
		g := fmt.Sprintf("QUIC on %s: %s", s.Address, plural(s.Shards, "shard"))
		if s.Sets > 1 {
			g += " × " + plural(s.Sets, "set")
		}
		groups = append(groups, g)
	}
	out := fmt.Sprintf("%s: %d TCP, %d UDP", plural(tcp+udp+unix, "socket"), tcp, udp)
	if unix > 0 {
		out += fmt.Sprintf(", %d unix", unix)
	}
	if len(groups) > 0 {
		out += " (" + strings.Join(groups, "; ") + ")"
	}
	return out
}

// plural is "1 shard" or "2 shards".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
