package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestL4ProxyProtocolHAProxy checks the PROXY protocol against Debian's
// haproxy, both ways, with clients connecting from 127.0.0.2 and
// 127.0.0.3 (loopback addresses other than the proxies' 127.0.0.1):
//
//   - accept: haproxy (mode tcp, send-proxy-v2 or send-proxy) in front of
//     an http frontend with accept_proxy: the HTTP backend sees the
//     original client in X-Forwarded-For and Forwarded, and portcullis's
//     log names the client by address and port; a trusted peer that sends
//     no header is refused. In front of a tcp frontend with accept_proxy
//     whose server gets send_proxy, the client's address goes through
//     both hops.
//   - send: servers with send_proxy v2 and v1 that are haproxy binds with
//     accept-proxy answering "%[src]:%[src_port]": the answer is the
//     original client's address and port, through a tcp frontend and
//     through an http frontend, where a second client must not get the
//     first one's server connection (and so its address).
func TestL4ProxyProtocolHAProxy(t *testing.T) {
	ports := freePorts(t, 5)
	hapV2, hapV1, hapTCP, whoamiV2, whoamiV1 := ports[0], ports[1], ports[2], ports[3], ports[4]
	startHAProxy(t, fmt.Sprintf(`frontend to-web-v2
  mode tcp
  bind 127.0.0.1:%d
  default_backend web-v2
frontend to-web-v1
  mode tcp
  bind 127.0.0.1:%d
  default_backend web-v1
frontend to-tcpin
  mode tcp
  bind 127.0.0.1:%d
  default_backend tcpin
backend web-v2
  mode tcp
  server s 127.0.0.1:80 send-proxy-v2
backend web-v1
  mode tcp
  server s 127.0.0.1:80 send-proxy
backend tcpin
  mode tcp
  server s 127.0.0.1:7100 send-proxy-v2
frontend whoami-v2
  mode http
  bind 127.0.0.1:%d accept-proxy
  http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port]"
frontend whoami-v1
  mode http
  bind 127.0.0.1:%d accept-proxy
  http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port]"
`, hapV2, hapV1, hapTCP, whoamiV2, whoamiV1),
		fmt.Sprintf("127.0.0.1:%d", hapV2), fmt.Sprintf("127.0.0.1:%d", whoamiV2), fmt.Sprintf("127.0.0.1:%d", whoamiV1))

	app := startUpstream(t, "app", nil)
	_, p := startL4(t, l4Global+fmt.Sprintf(`frontends:
  web:
    bind:
      - address: 127.0.0.1:80
        accept_proxy: true
        trusted_proxies: [127.0.0.0/8]
    routes:
      - path_prefix: /dead/
        backend: dead
      - backend: app
  tcpin:
    mode: tcp
    bind:
      - address: 127.0.0.1:7100
        accept_proxy: true
        trusted_proxies: [127.0.0.0/8]
    routes:
      - backend: whoami-v1
  tcpout-v2:
    mode: tcp
    bind:
      - address: 127.0.0.1:7101
    routes:
      - backend: whoami-v2
  tcpout-v1:
    mode: tcp
    bind:
      - address: 127.0.0.1:7102
    routes:
      - backend: whoami-v1
  plain:
    bind:
      - address: 127.0.0.1:8080
    routes:
      - path_prefix: /v2/
        backend: whoami-v2
      - path_prefix: /v1/
        backend: whoami-v1
backends:
  app:
    servers:
      - address: %s
  dead:
    retries: 0
    servers:
      - address: 127.0.0.1:1
  whoami-v2:
    servers:
      - {address: 127.0.0.1:%d, send_proxy: v2}
  whoami-v1:
    servers:
      - {address: 127.0.0.1:%d, send_proxy: v1}
`, app.addr, whoamiV2, whoamiV1), nil)

	t.Run("accept", func(t *testing.T) {
		for _, h := range []struct {
			name string
			port int
		}{{"send-proxy-v2", hapV2}, {"send-proxy", hapV1}} {
			via := fmt.Sprintf("127.0.0.1:%d", h.port)
			r, err := rawGet("127.0.0.2", via, "a.example.test", "/hello")
			if err != nil || r.status != 200 || !strings.HasPrefix(r.body, "upstream: app\n") {
				t.Fatalf("%s: GET /hello through haproxy: %v, %v", h.name, r, err)
			}
			for _, want := range []string{
				"\nheader X-Forwarded-For: 127.0.0.2\n",
				"\nheader Forwarded: for=127.0.0.2;host=a.example.test;proto=http\n",
			} {
				if !strings.Contains(r.body, want) {
					t.Errorf("%s: the backend did not get %q; it saw:\n%s", h.name, strings.TrimSpace(want), r.body)
				}
			}

			// The log names the client, port included.
			mark := len(p.stderr.String())
			r, err = rawGet("127.0.0.2", via, "a.example.test", "/dead/x")
			if err != nil || r.status != 502 {
				t.Fatalf("%s: GET /dead/x: want 502, got %v, %v", h.name, r, err)
			}
			waitLogWith(t, p, mark, scaled(5*time.Second), `msg="request failed"`, "path=/dead/x", "client="+r.from+" ")
		}

		// A trusted peer must send a header.
		mark := len(p.stderr.String())
		c, err := dialFrom("127.0.0.1", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n"))
		if err := closedWithoutAnswer(c, scaled(3*time.Second)); err != nil {
			t.Errorf("a request without PROXY header from a trusted peer: %v, want the connection closed", err)
		}
		waitLogWith(t, p, mark, scaled(5*time.Second), "level=WARN", "no valid PROXY header from a trusted proxy", "peer="+c.LocalAddr().String())

		// Two hops: haproxy → tcp frontend with accept_proxy → server
		// with send_proxy v1.
		r, err := rawGet("127.0.0.3", fmt.Sprintf("127.0.0.1:%d", hapTCP), "b.example.test", "/")
		if err != nil || r.status != 200 || r.body != r.from {
			t.Errorf("haproxy → tcp frontend → haproxy: want the answer %q (the client), got %v, %v", r.from, r, err)
		}
	})

	t.Run("send", func(t *testing.T) {
		mark := len(p.stderr.String())
		for _, c := range []struct {
			what, addr, path string
		}{
			{"tcp frontend, send_proxy v2", "127.0.0.1:7101", "/"},
			{"tcp frontend, send_proxy v1", "127.0.0.1:7102", "/"},
			{"http frontend, send_proxy v2", "127.0.0.1:8080", "/v2/"},
			{"http frontend, send_proxy v1", "127.0.0.1:8080", "/v1/"},
		} {
			for _, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"} {
				r, err := rawGet(from, c.addr, "whoami.example.test", c.path)
				if err != nil || r.status != 200 || r.body != r.from {
					t.Errorf("%s: client %s: want haproxy to see the client, %q; got %v, %v", c.what, from, r.from, r, err)
				}
			}
		}
		// HTTP requests to send_proxy servers go over connections private
		// to their client connection, not a new connection each.
		if lines := logsWith(p, mark, "has no client connection"); len(lines) > 0 {
			t.Errorf("HTTP client connections carried no record for send_proxy: %s", lines[0])
		}
	})
}

// TestL4ProxyProtocolUntrusted has a peer outside trusted_proxies
// (127.0.0.1, with trusted_proxies [10.0.0.0/8]) send a PROXY header, v1
// and v2, claiming to relay 192.0.2.1: an http frontend and a tcp
// frontend must refuse the connection (close it without an answer) and
// log why, naming the peer; and serve the same peer normally, as itself,
// when it sends no header.
func TestL4ProxyProtocolUntrusted(t *testing.T) {
	app := startUpstream(t, "app", nil)
	// An HTTP server behind the tcp frontend: it waits for the client to
	// speak first, as the refusal is decided on the client's first bytes.
	web := startUp(t, "web", "127.0.0.1:0")
	_, p := startL4(t, l4Global+fmt.Sprintf(`frontends:
  strict:
    bind:
      - address: 127.0.0.1:8081
        accept_proxy: true
        trusted_proxies: [10.0.0.0/8]
    routes:
      - backend: app
  strict-tcp:
    mode: tcp
    bind:
      - address: 127.0.0.1:7103
        accept_proxy: true
        trusted_proxies: [10.0.0.0/8]
    routes:
      - backend: echo
backends:
  app:
    servers:
      - address: %s
  echo:
    servers:
      - address: %s
`, app.addr, web.addr), nil)

	for _, fe := range []struct {
		name, addr string
		served     func(r rawResponse) bool
	}{
		{"strict", "127.0.0.1:8081", func(r rawResponse) bool {
			return strings.HasPrefix(r.body, "upstream: app\n") && strings.Contains(r.body, "\nheader X-Forwarded-For: 127.0.0.1\n")
		}},
		{"strict-tcp", "127.0.0.1:7103", func(r rawResponse) bool { return r.body == "web GET / HTTP/1.1\n" }},
	} {
		t.Run(fe.name, func(t *testing.T) {
			for _, v := range []struct {
				name   string
				header func(t *testing.T, src, dst string) []byte
			}{{"v1", proxyV1}, {"v2", proxyV2}} {
				mark := len(p.stderr.String())
				c, err := dialFrom("127.0.0.1", fe.addr)
				if err != nil {
					t.Fatal(err)
				}
				req := append(v.header(t, "192.0.2.1:4242", fe.addr), "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n"...)
				if _, err := c.Write(req); err != nil {
					t.Fatal(err)
				}
				if err := closedWithoutAnswer(c, scaled(3*time.Second)); err != nil {
					t.Errorf("a PROXY %s header from 127.0.0.1, outside trusted_proxies: %v, want the connection refused", v.name, err)
				}
				c.Close()
				waitLogWith(t, p, mark, scaled(3*time.Second), "level=WARN", "closing connection", "PROXY header from an untrusted peer",
					"frontend="+fe.name, c.LocalAddr().String())
			}
			r, err := rawGet("127.0.0.1", fe.addr, "a.example.test", "/")
			if err != nil || r.status != 200 || !fe.served(r) {
				t.Errorf("the same peer without a PROXY header: want it served as itself, %s; got %v, %v", r.from, r, err)
			}
		})
	}
}
