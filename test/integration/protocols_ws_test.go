package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"
)

// wsEcho is a WebSocket upstream: it answers each text message with
// "echo: " and the message, and closes the connection itself on "bye".
// ended says how each connection ended: "server closed" or "client
// closed".
type wsEcho struct {
	headers chan http.Header
	ended   chan string
}

func newWSEcho() *wsEcho {
	return &wsEcho{headers: make(chan http.Header, 8), ended: make(chan string, 8)}
}

func (e *wsEcho) serve(ws *websocket.Conn) {
	e.headers <- ws.Request().Header.Clone()
	for {
		var msg string
		if err := websocket.Message.Receive(ws, &msg); err != nil {
			e.ended <- "client closed"
			return
		}
		if msg == "bye" {
			ws.Close()
			e.ended <- "server closed"
			return
		}
		if err := websocket.Message.Send(ws, "echo: "+msg); err != nil {
			e.ended <- "send failed: " + err.Error()
			return
		}
	}
}

// TestProtoWebSocket opens WebSocket connections through portcullis over
// HTTP/1.1, on the plain bind and on the TLS bind: each exchanges 10
// messages, a close by the client reaches the server, a close by the
// server reaches the client, and the server sees the forwarding headers.
func TestProtoWebSocket(t *testing.T) {
	echo := newWSEcho()
	up := newUpstream(t, "ws", upstreamOptions{handler: websocket.Handler(echo.serve)})
	s, _ := startProxy(t, []proxyRoute{{"/", "ws"}}, backendYAML("ws", nil, serverYAML(up.addr)))

	for _, tc := range []struct {
		url, proto string
	}{
		{"ws://localhost/chat", "http"},
		{"wss://localhost/chat", "https"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			// A close by the client.
			ws := dialWS(t, s, tc.url)
			h := recvWithin(t, echo.headers, "the upgrade request at the server")
			for k, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": tc.proto, "X-Forwarded-Host": "localhost", "Via": "1.1 portcullis"} {
				if got := h.Get(k); got != want {
					t.Errorf("the server saw %s %q, want %q", k, got, want)
				}
			}
			for i := range 10 {
				msg := fmt.Sprintf("message %d", i)
				if err := websocket.Message.Send(ws, msg); err != nil {
					t.Fatalf("send %q: %v", msg, err)
				}
				var got string
				if err := websocket.Message.Receive(ws, &got); err != nil {
					t.Fatalf("receive the echo of %q: %v", msg, err)
				}
				if got != "echo: "+msg {
					t.Fatalf("got %q, want %q", got, "echo: "+msg)
				}
			}
			ws.Close()
			if got := recvWithin(t, echo.ended, "the end of the connection at the server"); got != "client closed" {
				t.Errorf("the server saw %q, want client closed", got)
			}

			// A close by the server.
			ws = dialWS(t, s, tc.url)
			recvWithin(t, echo.headers, "the upgrade request at the server")
			if err := websocket.Message.Send(ws, "bye"); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); !errors.Is(err, io.EOF) {
				t.Errorf("after the server closed: receive returned %q, %v; want io.EOF", got, err)
			}
			if got := recvWithin(t, echo.ended, "the end of the connection at the server"); got != "server closed" {
				t.Errorf("the server saw %q, want server closed", got)
			}
			ws.Close()
		})
	}
}

// dialWS opens a WebSocket connection to url through portcullis over
// HTTP/1.1 (TLS for wss://). Every read and write has a deadline.
func dialWS(t *testing.T, s *site, url string) *websocket.Conn {
	t.Helper()
	origin := strings.Replace(strings.Replace(url, "wss://", "https://", 1), "ws://", "http://", 1)
	config, err := websocket.NewConfig(url, origin)
	if err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if strings.HasPrefix(url, "wss://") {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", "127.0.0.1:443",
			&tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	} else {
		conn, err = net.DialTimeout("tcp", "127.0.0.1:80", scaled(5*time.Second))
	}
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	ws, err := websocket.NewClient(config, conn)
	if err != nil {
		conn.Close()
		t.Fatalf("WebSocket handshake with %s through portcullis: %v", url, err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// recvWithin waits for a value from ch, failing the test after 5s.
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(scaled(5 * time.Second)):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestProtoWebSocketExtendedConnect documents WebSocket over HTTP/2 (RFC
// 8441) and HTTP/3 (RFC 9220), which portcullis does not support: both
// use an extended CONNECT request (:method CONNECT, :protocol websocket)
// that the proxy would have to turn into an HTTP/1.1 Upgrade toward the
// server.
//
// HTTP/2: Go's server does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL
// (it is off unless GODEBUG=http2xconnect=1), so conforming clients
// (browsers) keep WebSocket on HTTP/1.1; a client that sends :protocol
// anyway gets its stream reset with PROTOCOL_ERROR, and the connection
// goes on serving.
//
// HTTP/3: quic-go announces SETTINGS_ENABLE_CONNECT_PROTOCOL and hands the
// request to the proxy, which answers 501 without reaching the server, and
// the connection goes on serving.
func TestProtoWebSocketExtendedConnect(t *testing.T) {
	echo := newWSEcho()
	up := newUpstream(t, "ws", upstreamOptions{handler: websocket.Handler(echo.serve)})
	s, p := startProxy(t, []proxyRoute{{"/", "ws"}}, backendYAML("ws", nil, serverYAML(up.addr)))

	t.Run("h2", func(t *testing.T) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", "127.0.0.1:443",
			&tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
		if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(conn, conn)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok {
			t.Fatalf("first frame from the server: %v, want SETTINGS", f)
		}
		if v, ok := sf.Value(http2.SettingEnableConnectProtocol); ok && v == 1 {
			t.Errorf("the server announces SETTINGS_ENABLE_CONNECT_PROTOCOL: WebSocket over HTTP/2 now reaches the proxy; test it end to end")
		}
		fr.WriteSettingsAck()

		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		// request sends HEADERS; a GET ends its stream, a CONNECT keeps
		// it open for the tunnel's data.
		request := func(stream uint32, fields ...string) {
			buf.Reset()
			for i := 0; i < len(fields); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: buf.Bytes(), EndHeaders: true, EndStream: fields[1] == "GET"}); err != nil {
				t.Fatal(err)
			}
		}
		// outcome reads frames until stream ends with a response or a
		// reset, and describes it.
		outcome := func(stream uint32) string {
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return "connection error: " + err.Error()
				}
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					if f.StreamID == stream {
						return "RST_STREAM " + f.ErrCode.String()
					}
				case *http2.MetaHeadersFrame:
					if f.StreamID == stream {
						return "status " + f.PseudoValue("status")
					}
				case *http2.GoAwayFrame:
					return "GOAWAY " + f.ErrCode.String()
				}
			}
		}
		request(1, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat", ":authority", "localhost", "sec-websocket-version", "13")
		if got := outcome(1); got != "RST_STREAM PROTOCOL_ERROR" {
			t.Errorf("extended CONNECT over HTTP/2: %s, want RST_STREAM PROTOCOL_ERROR", got)
		}
		request(3, ":method", "GET", ":scheme", "https", ":path", "/after", ":authority", "localhost")
		if got := outcome(3); got != "status 400" {
			// The WebSocket upstream refuses a GET without Upgrade: its
			// answer shows that the connection still serves.
			t.Errorf("GET on the same connection afterwards: %s, want the upstream's 400", got)
		}
	})

	t.Run("h3", func(t *testing.T) {
		tr := &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.pool},
			Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
			},
		}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
		defer cancel()
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://localhost/chat", pr)
		req.Proto = "websocket" // quic-go's client sends it as :protocol
		req.Header.Set("Sec-WebSocket-Version", "13")
		before := up.hits.Load()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("extended CONNECT over HTTP/3: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotImplemented {
			t.Errorf("extended CONNECT over HTTP/3: status %d, want 501 Not Implemented; body %q", resp.StatusCode, body)
		}
		if n := up.hits.Load() - before; n != 0 {
			t.Errorf("the upstream saw %d requests for the extended CONNECT, want none", n)
		}
		before = up.hits.Load()
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "https://localhost/after", nil)
		resp, err = tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET on the same connection afterwards: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || up.hits.Load()-before != 1 {
			t.Errorf("GET on the same connection afterwards: status %d, want the upstream's 400", resp.StatusCode)
		}
	})
	if p.exited() {
		t.Errorf("portcullis exited: %s", p.describe())
	}
}
