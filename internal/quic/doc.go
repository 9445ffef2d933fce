// Package quic runs HTTP/3's QUIC side on N UDP sockets bound with
// SO_REUSEPORT to one address ("shards"), one quic-go Transport per socket,
// without a socket per connection (DESIGN.md, invariant 4).
//
// Connection IDs follow the plaintext mode of the QUIC-LB draft
// (draft-ietf-quic-load-balancers) and carry the index of the shard that
// owns the connection and the generation of the process that issued them
// (cid.go); a reuseport eBPF program reads that byte and steers every
// packet to its shard, on the socket set of its generation, so that the
// old and the new process of a binary upgrade each keep their connections
// (steer_linux.go, steer_prog_linux.go). Without that program a bind has
// one socket, and HandoverConn passes the old process's datagrams on to it
// during an upgrade (handover.go). The package also loads the keys that
// must be shared by shards, restarts and instances (keys.go), admits new
// connections: counts the handshakes in progress and refuses them beyond
// a limit (handshakes.go), and decides when to validate client addresses
// with Retry (retry.go); and it counts what each shard sees (metrics.go).
// docs/quic.md is the operator's guide.
package quic
