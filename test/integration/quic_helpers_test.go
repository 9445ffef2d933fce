package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"
)

// Helpers of the QUIC shard tests: HTTP/3 connections the test keeps hold
// of (so that a request never silently goes over a new connection), a
// relay that plays a NAT rebinding a client's port, and a look at
// portcullis's UDP sockets from outside.

// quicTarget is the HTTP/3 address of the shard tests' configuration.
var quicTarget = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}

// Client timeouts: short, so that a connection that lost its server fails
// fast instead of making the test wait.
var (
	quicIdleTimeout    = 2 * time.Second
	quicRequestTimeout = scaled(3 * time.Second)
	// quicDialTimeout is shortened while steering is detached (see
	// shortDials).
	quicDialTimeout  = scaled(5 * time.Second)
	quicProbeTimeout = scaled(1500 * time.Millisecond)
	quicRequestGap   = 150 * time.Millisecond
)

// quicShardsConfig is a configuration with one frontend on
// 127.0.0.1:443 (TLS and HTTP/3 with quic shards) that sends everything to
// upstream; user adds global.user nobody.
func quicShardsConfig(user bool, shards int, upstream string) string {
	var b strings.Builder
	b.WriteString("global:\n")
	if user {
		b.WriteString("  user: nobody\n  group: nogroup\n")
	}
	fmt.Fprintf(&b, `  grace: 1s
frontends:
  web:
    bind:
      - address: 127.0.0.1:443
        tls:
          certificates:
            - cert: site.pem
              key: site.key
        http3: true
        quic:
          shards: %d
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: %s
`, shards, upstream)
	return b.String()
}

// quicSite makes a site with quicShardsConfig and an upstream in the test
// process. user also makes the key readable by root only.
func quicSite(t *testing.T, user bool, shards int) *site {
	t.Helper()
	up := startUpstream(t, "app", nil)
	s := newSite(t, siteOptions{User: user, PrivateKey: user, App: [2]string{up.addr, up.addr}, API: up.addr})
	writeFile(t, s.config, quicShardsConfig(user, shards, up.addr), 0o644)
	return s
}

// h3Conn is one HTTP/3 connection over a quic.Transport of the test's
// own. Requests go over this connection only: once it is gone, they fail.
type h3Conn struct {
	conn *quic.Conn
	cc   *http3.ClientConn
	mu   sync.Mutex
	trs  []*quic.Transport // every transport the connection used
}

func loopbackUDP() (*net.UDPConn, error) {
	return net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// dialH3 opens an HTTP/3 connection to addr from a new UDP socket,
// verifying the server as localhost with the site's CA.
func dialH3(s *site, addr *net.UDPAddr) (*h3Conn, error) {
	udp, err := loopbackUDP()
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	ctx, cancel := context.WithTimeout(context.Background(), quicDialTimeout)
	defer cancel()
	tlsConf := &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}
	conn, err := tr.Dial(ctx, addr, tlsConf, &quic.Config{MaxIdleTimeout: quicIdleTimeout})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("QUIC handshake with %s: %w", addr, err)
	}
	return &h3Conn{conn: conn, cc: (&http3.Transport{}).NewClientConn(conn), trs: []*quic.Transport{tr}}, nil
}

// get requests path on the connection and checks that the upstream
// answered it.
func (c *h3Conn) get(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), quicRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://localhost"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: read the body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "upstream: app\n") || !strings.Contains(string(body), "\npath: "+path+"\n") {
		return fmt.Errorf("GET %s: want 200 from the upstream, got %d:\n%s", path, resp.StatusCode, body)
	}
	return nil
}

// migrate moves the connection to a new local UDP socket the way a client
// changing networks does: probe the new path, then switch to it. It
// returns the new socket's address.
func (c *h3Conn) migrate() (string, error) {
	udp, err := loopbackUDP()
	if err != nil {
		return "", err
	}
	tr := &quic.Transport{Conn: udp}
	c.mu.Lock()
	c.trs = append(c.trs, tr)
	c.mu.Unlock()
	local := udp.LocalAddr().String()
	path, err := c.conn.AddPath(tr)
	if err != nil {
		return "", fmt.Errorf("add a path from %s: %w", local, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), quicProbeTimeout)
	defer cancel()
	if err := path.Probe(ctx); err != nil {
		return "", fmt.Errorf("probe the path from %s: %w (connection: %v)", local, err, context.Cause(c.conn.Context()))
	}
	if err := path.Switch(); err != nil {
		return "", fmt.Errorf("switch to the path from %s: %w", local, err)
	}
	return local, nil
}

// close closes the connection and every socket it used. Transports are
// only closed here: closing one closes the connections it ever carried.
func (c *h3Conn) close() {
	c.conn.CloseWithError(0, "")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tr := range c.trs {
		tr.Close()
		tr.Conn.Close()
	}
}

// relay stands between one client and a QUIC server as a NAT does: it
// forwards the client's datagrams to the server from an outbound socket of
// its own, and the server's replies back to the client. rebind moves it to
// a new outbound socket, on a new port, and closes the old one, as a NAT
// that lost its mapping: from then on the server sees the client at a new
// address, and what it sends to the old one is lost.
type relay struct {
	front  *net.UDPConn // the client sends here
	target *net.UDPAddr
	mu     sync.Mutex
	client netip.AddrPort
	back   *net.UDPConn // the current outbound socket
	wg     sync.WaitGroup
}

func newRelay(target *net.UDPAddr) (*relay, error) {
	front, err := loopbackUDP()
	if err != nil {
		return nil, err
	}
	back, err := loopbackUDP()
	if err != nil {
		front.Close()
		return nil, err
	}
	r := &relay{front: front, target: target, back: back}
	r.wg.Go(r.forward)
	r.wg.Go(func() { r.reply(back) })
	return r, nil
}

// addr is where the client sends its datagrams.
func (r *relay) addr() *net.UDPAddr { return r.front.LocalAddr().(*net.UDPAddr) }

func (r *relay) forward() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.client = from
		back := r.back
		r.mu.Unlock()
		back.WriteToUDP(buf[:n], r.target) // fails only while rebinding: a lost datagram
	}
}

func (r *relay) reply(back *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, _, err := back.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		client, current := r.client, back == r.back
		r.mu.Unlock()
		if current {
			r.front.WriteToUDPAddrPort(buf[:n], client)
		}
	}
}

// rebind moves the relay to a new outbound socket (a new source port)
// and closes the old one.
func (r *relay) rebind() error {
	back, err := loopbackUDP()
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.back
	r.back = back
	r.mu.Unlock()
	r.wg.Go(func() { r.reply(back) })
	return old.Close()
}

func (r *relay) close() {
	r.front.Close()
	r.mu.Lock()
	r.back.Close()
	r.mu.Unlock()
	r.wg.Wait()
}

// rebindRun opens n HTTP/3 connections to 127.0.0.1:443, each through a
// relay of its own, and makes a request on each. Then every relay moves to
// a new source port, and each connection makes after more requests,
// quicRequestGap apart. A failure before the move fails the test, unless
// lossy: then the connections that failed are left out. It returns the
// first failure after the move of each connection kept (nil: all its
// requests succeeded).
func rebindRun(t *testing.T, s *site, name string, n, after int, lossy bool) []error {
	t.Helper()
	relays := make([]*relay, n)
	conns := make([]*h3Conn, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Go(c.close)
			}
		}
		wg.Wait()
		// Let the relays pass the CONNECTION_CLOSE frames on, so that
		// portcullis does not wait for those connections when it stops.
		time.Sleep(50 * time.Millisecond)
		for _, r := range relays {
			if r != nil {
				r.close()
			}
		}
	}()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := newRelay(quicTarget)
			if err != nil {
				errs[i] = err
				return
			}
			relays[i] = r
			if conns[i], errs[i] = dialH3(s, r.addr()); errs[i] == nil {
				errs[i] = conns[i].get(fmt.Sprintf("/%s/%d/before", name, i))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil && !lossy {
		t.Fatalf("before the rebinding: %v", err)
	}
	var kept []int
	for i, err := range errs {
		if err == nil {
			kept = append(kept, i)
		}
	}
	for _, r := range relays {
		if err := r.rebind(); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range kept {
		wg.Go(func() {
			for k := range after {
				if k > 0 {
					time.Sleep(quicRequestGap)
				}
				if err := conns[i].get(fmt.Sprintf("/%s/%d/after/%d", name, i, k)); err != nil {
					errs[i] = fmt.Errorf("connection %d, request %d of %d after the rebinding: %w", i, k+1, after, err)
					return
				}
			}
		})
	}
	wg.Wait()
	out := make([]error, len(kept))
	for k, i := range kept {
		out[k] = errs[i]
	}
	return out
}

// failures counts the non-nil errors and returns the first few as text.
func failures(errs []error) (int, string) {
	var b strings.Builder
	n := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		if n++; n <= 5 {
			fmt.Fprintf(&b, "\n  %v", err)
		}
	}
	return n, b.String()
}

// udpInodes returns the inodes of the UDP sockets bound to 127.0.0.1:port
// in the test's network namespace, from /proc/net/udp.
func udpInodes(t *testing.T, port int) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	// The address is printed as the raw 32-bit word: byte order of the host.
	want := map[string]bool{fmt.Sprintf("0100007F:%04X", port): true, fmt.Sprintf("7F000001:%04X", port): true}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 9 && want[f[1]] {
			inodes[f[9]] = true
		}
	}
	return inodes
}

// socketFDs returns the file descriptors of pid that are sockets with one
// of inodes, by inode (a socket may have several descriptors).
func socketFDs(t *testing.T, pid int, inodes map[string]bool) map[string][]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		inode, ok := strings.CutPrefix(link, "socket:[")
		inode = strings.TrimSuffix(inode, "]")
		if fd, err := strconv.Atoi(e.Name()); ok && err == nil && inodes[inode] {
			out[inode] = append(out[inode], fd)
		}
	}
	return out
}

// detachSteering detaches the reuseport program from portcullis's group of
// UDP sockets on 127.0.0.1:443, from outside the process: it copies one of
// them into the test with pidfd_getfd and calls SO_DETACH_REUSEPORT_BPF on
// the copy (the program belongs to the group, not to one socket). From
// then on the kernel picks a shard by its hash of the 4-tuple. It fails
// the test unless a program was attached.
func detachSteering(t *testing.T, pid int) {
	t.Helper()
	fd := -1
	for _, fds := range socketFDs(t, pid, udpInodes(t, 443)) {
		fd = fds[0]
	}
	if fd < 0 {
		t.Fatalf("pid %d has no UDP socket on 127.0.0.1:443", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)
	sock, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd(pid %d, fd %d): %v", pid, fd, err)
	}
	defer unix.Close(sock)
	if err := unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0); err != nil {
		t.Fatalf("SO_DETACH_REUSEPORT_BPF on portcullis's UDP socket (fd %d): %v; ENOENT: no program was attached", fd, err)
	}
	if err := unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("a second SO_DETACH_REUSEPORT_BPF returned %v, want ENOENT (nothing left to detach)", err)
	}
}
