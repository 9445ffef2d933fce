package listen

import "testing"

func TestTally(t *testing.T) {
	tcp := Spec{Network: "tcp", Address: "127.0.0.1:443"}
	quic := func(shards, sets int) []Spec {
		var out []Spec
		for set := 0; set < max(sets, 1); set++ {
			for i := 0; i < shards; i++ {
				out = append(out, Spec{Network: "udp", Address: "127.0.0.1:443", Shard: i, Shards: shards, Set: set, Sets: sets})
			}
		}
		return out
	}
	relay := Spec{Network: "udp", Address: "127.0.0.1:53"}
	for _, tc := range []struct {
		specs []Spec
		want  string
	}{
		{[]Spec{tcp}, "1 socket: 1 TCP, 0 UDP"},
		{append([]Spec{tcp, tcp}, quic(2, 2)...), "6 sockets: 2 TCP, 4 UDP (QUIC on 127.0.0.1:443: 2 shards × 2 sets)"},
		{append([]Spec{tcp}, quic(1, 2)...), "3 sockets: 1 TCP, 2 UDP (QUIC on 127.0.0.1:443: 1 shard × 2 sets)"},
		{append([]Spec{tcp, relay}, quic(1, 1)...), "3 sockets: 1 TCP, 2 UDP"},
	} {
		if got := Tally(tc.specs); got != tc.want {
			t.Errorf("Tally = %q, want %q", got, tc.want)
		}
	}
}
