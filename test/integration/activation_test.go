package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// passedSocket is a socket the test binds itself and passes to portcullis
// the way systemd does (socket activation).
type passedSocket struct {
	network, addr, name string
}

// activation binds the sockets as root and returns them as files for
// exec.Cmd.ExtraFiles (fds 3, 4, ...) with the LISTEN_FDS and
// LISTEN_FDNAMES entries for the environment; LISTEN_PID is set by the
// wrapper of asNobody. The files are closed when the test ends; close them
// earlier with closeFiles once the child has them.
func activation(t *testing.T, socks ...passedSocket) ([]*os.File, []string) {
	t.Helper()
	var files []*os.File
	var names []string
	for _, s := range socks {
		var f *os.File
		var err error
		switch s.network {
		case "tcp":
			var ln net.Listener
			if ln, err = net.Listen("tcp", s.addr); err == nil {
				f, err = ln.(*net.TCPListener).File()
				ln.Close()
			}
		case "udp":
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", s.addr); err == nil {
				f, err = pc.(*net.UDPConn).File()
				pc.Close()
			}
		case "unix":
			var ln *net.UnixListener
			if ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: s.addr, Net: "unix"}); err == nil {
				ln.SetUnlinkOnClose(false)
				f, err = ln.File()
				ln.Close()
			}
		default:
			err = fmt.Errorf("unknown network %q", s.network)
		}
		if err != nil {
			t.Fatalf("bind %s %s for socket activation: %v", s.network, s.addr, err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		names = append(names, s.name)
	}
	return files, []string{
		fmt.Sprintf("LISTEN_FDS=%d", len(files)),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
	}
}

// closeFiles closes the test's copies of passed sockets, so that only
// portcullis holds them.
func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

var (
	tcp80  = passedSocket{"tcp", "127.0.0.1:80", "portcullis"}
	tcp443 = passedSocket{"tcp", "127.0.0.1:443", "portcullis"}
	udp443 = passedSocket{"udp", "127.0.0.1:443", "portcullis"}
)

// TestSocketActivation passes TCP :80, TCP :443 and UDP :443 to portcullis
// running as nobody with no capability at all: it must serve HTTP/1.1,
// HTTP/2 and HTTP/3 on them without ever holding a privilege.
func TestSocketActivation(t *testing.T) {
	bin := defaultBinary(t)

	t.Run("by-address", func(t *testing.T) {
		ups := startUpstreams(t)
		s := newSite(t, ups.options(siteOptions{}))
		files, env := activation(t, tcp80, tcp443, udp443)
		p := start(t, asNobody(t, bin, s.config), startOptions{Env: env, ExtraFiles: files})
		closeFiles(files)
		p.waitReady()

		checkServes(t, s)
		if body := gtlsGet(t, "gtls"); !strings.HasPrefix(body, "upstream: app-") || !strings.Contains(body, "\nheader Via: 3 portcullis\n") {
			t.Errorf("gtlsclient (HTTP/3): want the app upstream's answer via HTTP/3, got:\n%s", body)
		}
		checkUnprivileged(t, p.pid(), false)
		p.stop() // after the exit, stderr is complete
		for _, sock := range []string{"network=tcp address=127.0.0.1:80", "network=tcp address=127.0.0.1:443", "network=udp address=127.0.0.1:443"} {
			if !logHas(p.stderr.String(), "msg=listening", sock, "socket=systemd") {
				t.Errorf("the log does not say that %s came from systemd (socket=systemd):\n%s", sock, p.stderr.String())
			}
		}
	})

	t.Run("by-name", func(t *testing.T) {
		ups := startUpstreams(t)
		names := &fdNames{HTTP: "web-http", HTTPS: "web-https", QUIC: "web-quic"}
		s := newSite(t, ups.options(siteOptions{FDNames: names}))
		// Not in the order of the configuration: names decide, not order.
		files, env := activation(t,
			passedSocket{"udp", "127.0.0.1:443", names.QUIC},
			passedSocket{"tcp", "127.0.0.1:443", names.HTTPS},
			passedSocket{"tcp", "127.0.0.1:80", names.HTTP})
		p := start(t, asNobody(t, bin, s.config), startOptions{Env: env, ExtraFiles: files})
		closeFiles(files)
		p.waitReady()

		checkServes(t, s)
		checkUnprivileged(t, p.pid(), false)
		p.stop()
	})

	t.Run("wrong-name", func(t *testing.T) {
		// fd_name_udp names a socket that was not passed: the UDP socket
		// passed under another name must not be taken silently.
		ups := startUpstreams(t)
		s := newSite(t, ups.options(siteOptions{FDNames: &fdNames{HTTP: "web-http", HTTPS: "web-https", QUIC: "web-h3"}}))
		files, env := activation(t,
			passedSocket{"tcp", "127.0.0.1:80", "web-http"},
			passedSocket{"tcp", "127.0.0.1:443", "web-https"},
			passedSocket{"udp", "127.0.0.1:443", "web-quic"})
		p := start(t, asNobody(t, bin, s.config), startOptions{Env: env, ExtraFiles: files})
		closeFiles(files)
		if code := p.wait(scaled(5 * time.Second)); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		stderr := p.stderr.String()
		for _, want := range []string{`"web-h3"`, `"web-quic"`, "no bind uses it"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr does not mention %s:\n%s", want, stderr)
			}
		}
		checkNeverReady(t, p)
	})

	t.Run("unused-socket", func(t *testing.T) {
		ups := startUpstreams(t)
		s := newSite(t, ups.options(siteOptions{}))
		files, env := activation(t, tcp80, tcp443, udp443, passedSocket{"tcp", "127.0.0.1:8080", "extra"})
		p := start(t, asNobody(t, bin, s.config), startOptions{Env: env, ExtraFiles: files})
		closeFiles(files)
		if code := p.wait(scaled(5 * time.Second)); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		stderr := p.stderr.String()
		if !logHas(stderr, "no bind uses it", `name "extra"`, "127.0.0.1:8080") {
			t.Errorf("stderr does not name the unused socket (\"extra\", tcp 127.0.0.1:8080):\n%s", stderr)
		}
		checkNeverReady(t, p)
	})
}

// TestMissingUDPPrivilege is the reported case: TCP :80 and :443 come from
// socket activation, UDP :443 (HTTP/3) does not, and the process has no
// privilege to bind it. portcullis must refuse to start at once, say what
// is missing and how to fix it, and never serve anything, rather than
// fail at the first HTTP/3 request.
func TestMissingUDPPrivilege(t *testing.T) {
	bin := defaultBinary(t)
	ups := startUpstreams(t)
	s := newSite(t, ups.options(siteOptions{}))
	files, env := activation(t, tcp80, tcp443)
	// The test's own copy of :80, to find out afterwards whether portcullis
	// ever accepted a connection there.
	ln80, err := net.FileListener(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer ln80.Close()

	p := start(t, asNobody(t, bin, s.config), startOptions{Env: env, ExtraFiles: files})
	closeFiles(files)
	// A request that arrives while portcullis starts.
	conn, err := net.DialTimeout("tcp", "127.0.0.1:80", scaled(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /early HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}

	code := p.wait(scaled(10 * time.Second))
	if took := p.exitedAt.Sub(p.started); took > scaled(time.Second) {
		t.Errorf("took %v to fail, want under %v", took, scaled(time.Second))
	}
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	stderr := p.stderr.String()
	for _, want := range []string{
		`frontend "web"`, "udp", "127.0.0.1:443", "uid=65534", "capabilities: none",
		"global.user", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ListenDatagram=127.0.0.1:443",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !logHas(stderr, `frontend "web"`, "udp 127.0.0.1:443") {
		t.Errorf("no line names frontend \"web\" with udp 127.0.0.1:443:\n%s", stderr)
	}
	if strings.Contains(stderr, "msg=listening") {
		t.Errorf("it logged a listener although it failed to start:\n%s", stderr)
	}
	checkNeverReady(t, p)

	// Never served: no answer to the request, and the connection is still
	// waiting in the backlog of :80 for somebody to accept it.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 512)
	if n, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the request to :80 got %q, %v; want no answer at all", buf[:n], err)
	}
	ln80.(*net.TCPListener).SetDeadline(time.Now().Add(scaled(time.Second)))
	early, err := ln80.Accept()
	if err != nil {
		t.Fatalf("the connection to :80 is not in the backlog any more (did portcullis accept it?): %v", err)
	}
	defer early.Close()
	early.SetReadDeadline(time.Now().Add(scaled(time.Second)))
	n, _ := early.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "GET /early ") {
		t.Errorf("the connection left in the backlog carries %q, want the test's request", buf[:n])
	}
}

// checkNeverReady checks that portcullis, which has exited, never sent
// READY=1.
func checkNeverReady(t *testing.T, p *proc) {
	t.Helper()
	for _, m := range p.notify.all() {
		if strings.Contains(m, "READY=1") {
			t.Errorf("it sent READY=1 although it failed to start: %q", m)
		}
	}
}

// logHas reports whether one line of log contains every one of parts.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
