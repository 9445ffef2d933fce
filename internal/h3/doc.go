// Package h3 serves HTTP/3 on N UDP sockets bound with SO_REUSEPORT to one
// address ("shards"), one quic-go Transport per socket, without a socket
// per connection (DESIGN.md, invariant 4).
//
// Server is shaped like http3.Server: set its fields, Start it on the
// shards, then StopAccepting, Shutdown(ctx) (GOAWAY, drain) and Close
// (server.go). shard.go starts one shard: its transport, which issues
// connection IDs that name the shard and the process's generation (package
// quiclb), its listener, and the admission of its new connections. Without a steering program a server has one
// socket, and ForwardConn passes the old process's datagrams on to it
// during a binary upgrade (forward.go). The package also loads the keys
// that must be shared by shards, restarts and instances (keys.go), admits
// new connections: counts the handshakes in progress and refuses them
// beyond a limit (handshakes.go), and decides when to validate client
// addresses with Retry (retry.go); and it counts what each shard sees
// (metrics.go) and logs it (watch.go). docs/quic.md is the operator's
// guide.
package h3
