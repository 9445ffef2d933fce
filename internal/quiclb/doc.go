// Package quiclb routes QUIC packets to the socket that owns their
// connection, as a QUIC load balancer does (draft-ietf-quic-load-balancers,
// "QUIC-LB").
//
// Connection IDs follow the plaintext mode of the QUIC-LB draft and carry
// the index of the shard that owns the connection and the generation of
// the process that issued them (cid.go); PacketGeneration reads that
// generation from a datagram (packet.go). A reuseport eBPF program reads
// the same byte and steers every packet to its shard, on the socket set of
// its generation, so that the old and the new process of a binary upgrade
// each keep their connections (steer_linux.go, its maps and counters;
// steer_prog_linux.go, the program). Package h3 serves HTTP/3 on the
// sockets; docs/quic.md is the operator's guide.
package quiclb
