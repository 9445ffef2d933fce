// Package l4 proxies layer-4 traffic: TCP connections as byte streams
// (routed by TLS SNI without terminating TLS when routes ask for it) and
// UDP datagrams per client flow. It picks servers through the same
// upstream backends (pools, max_conns queue, passive health) as HTTP.
package l4
