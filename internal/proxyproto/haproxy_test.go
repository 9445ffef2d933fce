package proxyproto

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// haproxyPath returns the haproxy binary. Without one the test fails under
// CI=true and is skipped otherwise.
func haproxyPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy not found (required with CI=true): apt-get install haproxy")
	}
	t.Skip("haproxy not found; install it (apt-get install haproxy) to test interoperability")
	return ""
}

// startHAProxy runs haproxy in the foreground with cfg, handing it the
// listeners as fd@3, fd@4, ... so that no port is chosen twice. It is killed
// at the end of the test; its output is logged on failure.
func startHAProxy(t *testing.T, cfg string, listeners ...*net.TCPListener) {
	t.Helper()
	bin := haproxyPath(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var out testutil.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	for _, l := range listeners {
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close() // haproxy has its own copy once started
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	// haproxy exits at once on a bad configuration.
	select {
	case <-exited:
		t.Fatalf("haproxy exited: %s", out.String())
	case <-time.After(100 * time.Millisecond):
	}
}

func listenTCP(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

const haproxyGlobal = `
global
	log stderr format raw local0 warning
defaults
	log global
	timeout connect 2s
	timeout client 10s
	timeout server 10s
`

// haproxy's send-proxy and send-proxy-v2 in front of Accept: the client's
// address reaches the server, and the stream passes both ways.
func TestHAProxySendsHeader(t *testing.T) {
	haproxyPath(t)
	front1 := listenTCP(t, "tcp4", "127.0.0.1:0")
	front2 := listenTCP(t, "tcp4", "127.0.0.1:0")
	back := listenTCP(t, "tcp4", "127.0.0.1:0")
	startHAProxy(t, haproxyGlobal+fmt.Sprintf(`
frontend v1
	mode tcp
	bind fd@3
	default_backend v1
backend v1
	mode tcp
	server s %[1]s send-proxy
frontend v2
	mode tcp
	bind fd@4
	default_backend v2
backend v2
	mode tcp
	server s %[1]s send-proxy-v2
`, back.Addr()), front1, front2)

	for i, front := range []*net.TCPListener{front1, front2} {
		version := i + 1
		client, err := net.DialTimeout("tcp4", front.Addr().String(), bound())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		client.SetDeadline(time.Now().Add(bound()))
		if _, err := client.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}

		back.SetDeadline(time.Now().Add(bound()))
		c, err := back.Accept()
		if err != nil {
			t.Fatalf("v%d: no connection from haproxy: %v", version, err)
		}
		defer c.Close()
		pc, err := Accept(c, loopback, bound())
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		if int(pc.Header().Version) != version {
			t.Errorf("haproxy sent v%d, want v%d", pc.Header().Version, version)
		}
		if got, want := pc.RemoteAddr().String(), client.LocalAddr().String(); got != want {
			t.Errorf("v%d: RemoteAddr = %s, want the client's %s", version, got, want)
		}
		if got, want := pc.LocalAddr().String(), front.Addr().String(); got != want {
			t.Errorf("v%d: LocalAddr = %s, want haproxy's frontend %s", version, got, want)
		}
		c.SetDeadline(time.Now().Add(bound()))
		line, err := bufio.NewReader(pc).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("v%d: server read %q, %v", version, line, err)
		}
		pc.Write([]byte("pong\n"))
		if got := readN(t, client, client, 5); string(got) != "pong\n" {
			t.Fatalf("v%d: client read %q", version, got)
		}
	}
}

// Header in front of haproxy's accept-proxy: haproxy reports the source
// address it learned from our header.
func TestHAProxyAcceptsHeader(t *testing.T) {
	haproxyPath(t)
	front := listenTCP(t, "tcp4", "127.0.0.1:0")
	startHAProxy(t, haproxyGlobal+`
frontend echo
	mode http
	bind fd@3 accept-proxy
	http-request return status 200 content-type text/plain lf-string "%[src] %[src_port] %[dst] %[dst_port]"
`, front)

	for _, tc := range []struct {
		src, dst string
		want     string // haproxy's "src src_port dst dst_port"
	}{
		{"203.0.113.7:4242", "198.51.100.1:80", "203.0.113.7 4242 198.51.100.1 80"},
		{"[2001:db8::7]:4242", "[2001:db8::1]:443", "2001:db8::7 4242 2001:db8::1 443"},
		// Mixed families travel as TCP6 with the IPv4 side mapped.
		{"203.0.113.7:4242", "[2001:db8::1]:443", "::ffff:203.0.113.7 4242 2001:db8::1 443"},
	} {
		for _, version := range []int{1, 2} {
			name := fmt.Sprintf("v%d %s→%s", version, tc.src, tc.dst)
			h := ourHeader(t, version, tcp(tc.src), tcp(tc.dst))
			c, err := net.DialTimeout("tcp4", front.Addr().String(), bound())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(bound()))
			c.Write(append(h, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"...))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				c.Close()
				t.Fatalf("%s: haproxy refused the header: %v", name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			c.Close()
			if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != tc.want {
				t.Errorf("%s: haproxy says %d %q, want %q", name, resp.StatusCode, body, tc.want)
			}
		}
	}

	// LOCAL: haproxy keeps the connection's own addresses.
	c, err := net.DialTimeout("tcp4", front.Addr().String(), bound())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound()))
	c.Write(append(ourHeader(t, 2, nil, nil), "GET / HTTP/1.0\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("LOCAL: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	la := c.LocalAddr().(*net.TCPAddr)
	if want := fmt.Sprintf("%s %d", la.IP, la.Port); !strings.HasPrefix(string(body), want) {
		t.Errorf("LOCAL: haproxy says %q, want the socket's %q", body, want)
	}
}
