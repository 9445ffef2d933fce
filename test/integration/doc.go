// Package integration tests the real portcullis binary end to end: each
// test starts it as a separate process inside a private network namespace
// (loopback only), in one of the three ways it is meant to run (started as
// root, as the service user with CAP_NET_BIND_SERVICE, or socket-activated
// without any privilege), and checks it with real clients: curl for
// HTTP/1.1 and HTTP/2, quic-go and ngtcp2's gtlsclient for HTTP/3.
//
// The tests need root (to create the namespace and to bind or drop
// privileges), unshare and setpriv (util-linux), curl and gtlsclient
// (ngtcp2-client). Without them they are skipped, unless CI=true, where a
// missing tool is a failure. PORTCULLIS_TEST_TIMEOUT_SCALE (a float, default
// 1) multiplies every timeout for slow machines.
package integration
