package accesslog

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// field is one key of the JSON and logfmt formats: its key and how it
// appends its value. JSON writes every key of every line, in this order;
// logfmt leaves out empty strings.
type field struct {
	key string
	str func(*Entry) string             // a string field, or
	num func(b []byte, e *Entry) []byte // a number (always written)
}

var fields = []field{
	{key: "time"}, // written first, by each format
	{key: "client_ip", str: func(e *Entry) string { h, _ := splitHostPort(e.Client); return h }},
	{key: "client_port", num: func(b []byte, e *Entry) []byte {
		_, p := splitHostPort(e.Client)
		n, _ := strconv.Atoi(p)
		return strconv.AppendInt(b, int64(n), 10)
	}},
	{key: "frontend", str: func(e *Entry) string { return e.Frontend }},
	{key: "protocol", str: func(e *Entry) string { return e.Protocol }},
	{key: "tls_version", str: func(e *Entry) string { return e.TLSVersion }},
	{key: "sni", str: func(e *Entry) string { return e.SNI }},
	{key: "method", str: func(e *Entry) string { return e.Method }},
	{key: "host", str: func(e *Entry) string { return e.Host }},
	{key: "path", str: func(e *Entry) string { return e.Path }},
	{key: "query", str: func(e *Entry) string { return e.Query }},
	{key: "status", num: func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, int64(e.Status), 10) }},
	{key: "bytes_in", num: func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, e.BytesIn, 10) }},
	{key: "bytes_out", num: func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, e.BytesOut, 10) }},
	{key: "backend", str: func(e *Entry) string { return e.Backend }},
	{key: "server", str: func(e *Entry) string { return e.Server }},
	{key: "retries", num: func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, int64(e.Retries), 10) }},
	{key: "request_id", str: func(e *Entry) string { return e.RequestID }},
	{key: "referer", str: func(e *Entry) string { return e.Referer }},
	{key: "user_agent", str: func(e *Entry) string { return e.UserAgent }},
	{key: "queue_ms", num: func(b []byte, e *Entry) []byte { return appendMillis(b, e.Queue) }},
	{key: "connect_ms", num: func(b []byte, e *Entry) []byte { return appendMillis(b, e.Connect) }},
	{key: "headers_ms", num: func(b []byte, e *Entry) []byte { return appendMillis(b, e.Headers) }},
	{key: "total_ms", num: func(b []byte, e *Entry) []byte { return appendMillis(b, e.Total) }},
	{key: "state", str: func(e *Entry) string { return e.State.String() }},
}

// timeLayout is the time of JSON and logfmt lines: RFC 3339 with
// milliseconds, in UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// appendMillis appends d in milliseconds with microsecond precision.
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// splitHostPort splits host:port (or [v6]:port); without a port, all of
// s is the host.
func splitHostPort(s string) (host, port string) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.IndexByte(s[i:], ']') >= 0 {
		return s, ""
	}
	host, port = s[:i], s[i+1:]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host, port
}

// appendJSON formats e as one JSON object and a newline.
func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, '"')
	for _, f := range fields[1:] {
		b = append(b, ',', '"')
		b = append(b, f.key...)
		b = append(b, '"', ':')
		if f.num != nil {
			b = f.num(b, e)
		} else {
			b = appendJSONString(b, f.str(e))
		}
	}
	return append(b, '}', '\n')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string (RFC 8259 §7); invalid
// UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendLogfmt formats e as key=value pairs and a newline, leaving out
// empty strings.
func appendLogfmt(b []byte, e *Entry) []byte {
	b = append(b, "time="...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	for _, f := range fields[1:] {
		if f.num != nil {
			b = append(b, ' ')
			b = append(b, f.key...)
			b = append(b, '=')
			b = f.num(b, e)
			continue
		}
		v := f.str(e)
		if v == "" {
			continue
		}
		b = append(b, ' ')
		b = append(b, f.key...)
		b = append(b, '=')
		if needsQuote(v) {
			b = strconv.AppendQuote(b, v)
		} else {
			b = append(b, v...)
		}
	}
	return append(b, '\n')
}

// needsQuote reports whether a logfmt value must be quoted.
func needsQuote(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// combinedTime is Apache's %t.
const combinedTime = "02/Jan/2006:15:04:05 -0700"

// appendCombined formats e in Apache's combined log format:
//
//	%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
//
// A tcp or udp line has "-" for the request line and the status.
func appendCombined(b []byte, e *Entry) []byte {
	host, _ := splitHostPort(e.Client)
	b = appendDash(b, host)
	b = append(b, " - - ["...)
	b = e.Time.AppendFormat(b, combinedTime)
	b = append(b, `] "`...)
	if e.Method == "" {
		b = append(b, '-')
	} else {
		b = appendEscaped(b, e.Method)
		b = append(b, ' ')
		b = appendEscaped(b, e.Path)
		if e.Query != "" {
			b = append(b, '?')
			b = appendEscaped(b, e.Query)
		}
		b = append(b, ' ')
		b = appendEscaped(b, e.Protocol)
	}
	b = append(b, '"', ' ')
	if e.Status == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, int64(e.Status), 10)
	}
	b = append(b, ' ')
	if e.BytesOut == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, e.BytesOut, 10)
	}
	b = append(b, ` "`...)
	b = appendDashEscaped(b, e.Referer)
	b = append(b, `" "`...)
	b = appendDashEscaped(b, e.UserAgent)
	return append(b, '"', '\n')
}

func appendDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return append(b, s...)
}

func appendDashEscaped(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

// appendEscaped appends s escaped as Apache escapes request lines and
// headers: " and \ with a backslash, control and non-ASCII bytes as \xhh.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}
