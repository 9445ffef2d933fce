package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// udpExchange sends payload from c to dst and waits for one reply; it
// returns the reply and the address it came from.
func udpExchange(c *net.UDPConn, dst *net.UDPAddr, payload string, timeout time.Duration) (string, *net.UDPAddr, error) {
	if _, err := c.WriteToUDP([]byte(payload), dst); err != nil {
		return "", nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return "", nil, fmt.Errorf("no reply to %q: %v", payload, err)
	}
	return string(buf[:n]), from, nil
}

// udpFlow is one client of TestL4UDPFlows: its own socket (so its own
// source port), sending to one of the frontend's addresses.
type udpFlow struct {
	conn    *net.UDPConn
	dst     *net.UDPAddr
	servers map[string]int // replies per server name
}

// run sends n datagrams, one at a time, each waiting for its reply: every
// reply must be "SERVER:PAYLOAD" and come from dst. It reports the first
// problem of the flow and how many datagrams had one.
func (f *udpFlow) run(t *testing.T, tag string, n int) {
	t.Helper()
	var first string
	bad := 0
	for i := range n {
		payload := fmt.Sprintf("%s-%s-%d", tag, f.conn.LocalAddr(), i)
		reply, from, err := udpExchange(f.conn, f.dst, payload, scaled(2*time.Second))
		problem := ""
		server, echoed, ok := strings.Cut(reply, ":")
		switch {
		case err != nil:
			problem = err.Error()
		case !ok || echoed != payload:
			problem = fmt.Sprintf("sent %q, got %q", payload, reply)
		case from.String() != f.dst.String():
			problem = fmt.Sprintf("sent to %s, got the reply from %s", f.dst, from)
		}
		if problem != "" {
			if bad++; first == "" {
				first = problem
			}
			continue
		}
		f.servers[server]++
	}
	if bad > 0 {
		t.Errorf("client %s → %s: %d of %d datagrams went wrong; the first: %s", f.conn.LocalAddr(), f.dst, bad, n, first)
	}
}

// newFlows opens n client sockets on 127.0.0.1 (any port), sending to
// the frontend's port at 127.0.0.1 and 127.0.0.2 in turn.
func newFlows(t *testing.T, n, port int) []*udpFlow {
	t.Helper()
	var flows []*udpFlow
	for i := range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%2)), Port: port}
		flows = append(flows, &udpFlow{conn: c, dst: dst, servers: map[string]int{}})
	}
	return flows
}

// TestL4UDPFlows relays a DNS-like echo over a udp frontend bound to
// every address (":PORT") with two servers, each its own process answering
// "NAME:PAYLOAD", checked with udp health checks every 200ms. Six clients,
// each from its own port, send ten datagrams each, to 127.0.0.1 or
// 127.0.0.2: every datagram must be answered, each client by one server
// (a flow sticks to its server), both servers must be used, and every
// reply must come from the address the client sent to. Once one server is
// killed and marked down, new flows must all go to the other.
func TestL4UDPFlows(t *testing.T) {
	const port = 5353
	s1 := startUp(t, "s1", "127.0.0.1:0", "-udp-echo")
	s2 := startUp(t, "s2", "127.0.0.1:0", "-udp-echo")
	_, p := startL4(t, l4Global+fmt.Sprintf(`frontends:
  dns:
    mode: udp
    bind:
      - address: :%d
    routes:
      - backend: resolvers
backends:
  resolvers:
    health_check: {type: udp, send: "ping", interval: 200ms}
    servers:
      - address: %s
      - address: %s
`, port, s1.addr, s2.addr), nil)

	flows := newFlows(t, 6, port)
	used := map[string]int{}
	for _, f := range flows {
		f.run(t, "first", 10)
		if len(f.servers) != 1 {
			t.Errorf("client %s: its datagrams went to several servers: %v", f.conn.LocalAddr(), f.servers)
		}
		for name := range f.servers {
			used[name]++
		}
	}
	if used["s1"] == 0 || used["s2"] == 0 {
		t.Errorf("flows per server: %v, want both servers used", used)
	}
	t.Logf("flows per server: %v", used)

	mark := len(p.stderr.String())
	s1.kill()
	waitLogWith(t, p, mark, scaled(5*time.Second), `msg="server down"`, "server="+s1.addr)
	for _, f := range newFlows(t, 6, port) {
		f.run(t, "after", 5)
		if len(f.servers) != 1 || f.servers["s2"] != 5 {
			t.Errorf("client %s, a new flow after s1 was marked down: replies per server %v, want all from s2", f.conn.LocalAddr(), f.servers)
		}
	}
}
