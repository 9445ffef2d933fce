// Package attack holds the hostile clients of portcullis's security page
// (docs/security.md, issue 11 "Hold under attack") and the backend they are
// measured against. Each attack is one function that takes a small options
// struct and returns a result with the numbers a test asserts and a String
// for people:
//
//	BadChunk    POST requests whose chunked body has an invalid chunk size
//	BigHeader   a header line, then a request line, of 1 MiB
//	ZeroWindow  HTTP/2 streams whose client never opens its flow-control window
//	RapidReset  HTTP/2 HEADERS then RST_STREAM(CANCEL), at a steady rate
//	L4Idle      TCP connections that send nothing
//	MidReset    one GET through a proxy to a backend that resets mid-response
//	QUICFlood   genuine QUIC Initials, each from a loopback address of its own
//
// Backend is the upstream side: an HTTP/1.1 server that counts the
// connections it accepts and the requests it serves, and can reset a
// connection in the middle of a response.
//
// The attacks talk to any proxy, not only portcullis; the command
// test/attack/cmd/attack runs them by hand. Every loop is bounded in count
// and in time: each count and duration has a default and a ceiling
// (see the options types), and each wait on the peer ends at
// Target.Timeout. Certificates are never verified.
package attack
