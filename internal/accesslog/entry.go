// Package accesslog writes one line per HTTP request, layer-4 connection
// or UDP flow: the Entry, its three formats (JSON, Apache's combined,
// logfmt), and the Writer that owns a destination (stdout, stderr or a
// file), buffers lines in memory and never makes a request wait on it.
package accesslog

import (
	"fmt"
	"time"
)

// Entry is one line of an access log. Zero fields are written as absent
// ("-" in combined, left out in JSON and logfmt) except Status, the byte
// counts, Retries and the timings, which are always written.
type Entry struct {
	// Time is when the request (or connection, or flow) began.
	Time time.Time
	// Client is the client's address, host:port (the one a trusted PROXY
	// header named).
	Client string
	// Frontend is the frontend's name.
	Frontend string
	// Protocol is HTTP/1.1, HTTP/2, HTTP/3, tcp or udp.
	Protocol string
	// TLSVersion is the TLS version of the client's connection (TLS1.3),
	// empty without TLS.
	TLSVersion string
	// SNI is the server name the client asked for in its ClientHello.
	SNI string
	// Method, Host, Path and Query describe an HTTP request (Path without
	// the query, Query without the "?").
	Method, Host, Path, Query string
	// Referer and UserAgent are the request's headers (combined format).
	Referer, UserAgent string
	// Status is the HTTP status the client got, 0 when it got none.
	Status int
	// BytesIn is what the client sent (request body bytes for HTTP, all
	// bytes for tcp and udp); BytesOut what it was sent.
	BytesIn, BytesOut int64
	// Backend and Server name the backend and the address of the last
	// server tried, empty when none was.
	Backend, Server string
	// Retries is how many times the request went to another server.
	Retries int
	// RequestID is the request's X-Request-ID.
	RequestID string
	// Queue is the time spent waiting in the backend's queue; Connect the
	// time to connect to the server (0 when a pooled connection was
	// reused); Headers the time from the start until the server's
	// response headers; Total the time until the end of the response (or
	// the connection, or the flow).
	Queue, Connect, Headers, Total time.Duration
	// State is the termination state (see State): who ended the request
	// and why.
	State State
}

// State is a termination state, two characters modelled on HAProxy's:
// the first says who ended the request (- nobody: it ended normally, C
// the client, S the server, s the proxy on the server's side (a
// timeout), P the proxy's policy, R the proxy's resources, N no server), the second in which phase (Q queue, C
// connect, H waiting for the response headers, D data, R request; L
// for a rate limit, which refuses in the request phase).
type State string

// Termination states (docs/logging.md has the table).
const (
	// Normal: the request or connection ended normally.
	Normal State = "--"
	// ClientData: the client went away during the response body, or
	// closed a tcp connection while the server still had data.
	ClientData State = "CD"
	// ClientHeaders: the client aborted before the response headers.
	ClientHeaders State = "CH"
	// ServerHeaders: the server failed, reset or answered something that
	// is not HTTP before its response headers.
	ServerHeaders State = "SH"
	// ServerData: the server reset or cut the response during its body.
	ServerData State = "SD"
	// QueueTimeout: no server slot freed up within the queue timeout.
	QueueTimeout State = "sQ"
	// ConnectFailed: connecting to the server timed out or failed.
	ConnectFailed State = "sC"
	// ServerTimeout: the server did not send its headers in time.
	ServerTimeout State = "sH"
	// Refused: refused by a limit or policy for the client's fault (400,
	// 408, 413, 414, 429, 431, 501) before any server was tried.
	Refused State = "PR"
	// RateLimited: refused by a rate limit (429, rate_limits) before any
	// server was tried.
	RateLimited State = "PL"
	// NoServer: no server of the backend was usable.
	NoServer State = "NS"
	// IdleData: a tcp connection or udp flow carried no byte for its
	// idle_timeout (HAProxy's client timeout during data).
	IdleData State = "cD"
	// Killed: the proxy closed the connection as it shut down (a stop, or
	// the end of a reload's or an upgrade's grace).
	Killed State = "KD"
	// Resource: the proxy was short of resources (descriptors, memory,
	// source ports) or too overloaded to connect in time: a 503.
	Resource State = "RC"
)

// String returns the state, "--" for the zero value.
func (s State) String() string {
	if s == "" {
		return string(Normal)
	}
	return string(s)
}

// Format is the layout of a line.
type Format uint8

// Formats of a line.
const (
	// JSON is one object per line with snake_case keys, durations in
	// milliseconds (floats).
	JSON Format = iota
	// Combined is Apache's and nginx's combined log format.
	Combined
	// Logfmt is key=value pairs with the keys of JSON.
	Logfmt
)

// FormatNames are the names ParseFormat accepts, in Format order.
var FormatNames = []string{"json", "combined", "logfmt"}

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	for i, n := range FormatNames {
		if n == s {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("unknown format %q: want json, combined or logfmt", s)
}

// String returns the format's name.
func (f Format) String() string {
	if int(f) < len(FormatNames) {
		return FormatNames[f]
	}
	return "unknown"
}

// Append formats e as one line (with its newline) and appends it to b.
func (f Format) Append(b []byte, e *Entry) []byte {
	switch f {
	case Combined:
		return appendCombined(b, e)
	case Logfmt:
		return appendLogfmt(b, e)
	}
	return appendJSON(b, e)
}
