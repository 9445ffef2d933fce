package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// l4PrivConfig is a tcp frontend "echo" on tcpAddr and a udp frontend
// "dns" on udpAddr, relaying to the -tcp-echo server echo and the
// -udp-echo server dns; head starts it (global settings), and fdNames,
// when set, gives the binds fd_name "echo-tcp" and "dns-udp".
func l4PrivConfig(head, tcpAddr, udpAddr, echo, dns string, fdNames bool) string {
	tcpName, udpName := "", ""
	if fdNames {
		tcpName, udpName = "\n        fd_name: echo-tcp", "\n        fd_name: dns-udp"
	}
	return head + fmt.Sprintf(`frontends:
  echo:
    mode: tcp
    bind:
      - address: %s%s
    routes:
      - backend: echo
  dns:
    mode: udp
    bind:
      - address: %s%s
    routes:
      - backend: dns
backends:
  echo:
    servers:
      - address: %s
  dns:
    servers:
      - address: %s
`, tcpAddr, tcpName, udpAddr, udpName, echo, dns)
}

// checkL4Serves checks that the tcp frontend at tcpAddr relays to the
// echo server e1 and the udp frontend at udpAddr to the echo server d1,
// with the reply from udpAddr.
func checkL4Serves(t *testing.T, tcpAddr, udpAddr string) {
	t.Helper()
	if name, err := echoOnce(tcpAddr, []byte("hello over tcp")); err != nil || name != "e1" {
		t.Errorf("tcp %s: want the echo of e1, got %q, %v", tcpAddr, name, err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, err := net.ResolveUDPAddr("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	reply, from, err := udpExchange(c, dst, "hello over udp", scaled(3*time.Second))
	if err != nil || reply != "d1:hello over udp" || from.String() != udpAddr {
		t.Errorf("udp %s: want \"d1:hello over udp\" from %s, got %q from %v, %v", udpAddr, udpAddr, reply, from, err)
	}
}

// TestL4Privileges covers the three ways to run with layer-4 listeners on
// privileged ports:
//
//   - root: a tcp frontend on 127.0.0.1:70 and a udp frontend on
//     127.0.0.1:53, started as root with global.user nobody: both serve,
//     and every thread ends unprivileged with no_new_privs;
//   - socket activation, as nobody without any capability: a tcp and a
//     udp socket on the same address 127.0.0.1:53, matched by address and
//     type, and sockets matched by fd_name (passed in the other order);
//   - a udp port that is privileged, not passed, with the process
//     unprivileged: a clear startup error naming the frontend, udp, the
//     address, who the process is and each remedy, and nothing served.
func TestL4Privileges(t *testing.T) {
	bin := defaultBinary(t)
	echo := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	dns := startUp(t, "d1", "127.0.0.1:0", "-udp-echo")

	t.Run("root", func(t *testing.T) {
		_, p := startL4(t, l4PrivConfig(l4Global, "127.0.0.1:70", "127.0.0.1:53", echo.addr, dns.addr, false), nil)
		checkL4Serves(t, "127.0.0.1:70", "127.0.0.1:53")
		if n := checkUnprivileged(t, p.pid(), true); n < 3 {
			t.Errorf("portcullis has %d threads; want several, so that every thread is checked", n)
		}
		checkL4Serves(t, "127.0.0.1:70", "127.0.0.1:53") // still, after the check
		p.stop()
	})

	for _, c := range []struct {
		name             string
		tcpAddr, udpAddr string
		fdNames          bool
		socks            []passedSocket
	}{
		{"activation-by-address", "127.0.0.1:53", "127.0.0.1:53", false, []passedSocket{
			{"udp", "127.0.0.1:53", "portcullis"}, {"tcp", "127.0.0.1:53", "portcullis"},
		}},
		{"activation-by-name", "127.0.0.1:70", "127.0.0.1:53", true, []passedSocket{
			{"udp", "127.0.0.1:53", "dns-udp"}, {"tcp", "127.0.0.1:70", "echo-tcp"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sharedDir(t)
			cfg := filepath.Join(dir, "portcullis.yaml")
			writeFile(t, cfg, l4PrivConfig("", c.tcpAddr, c.udpAddr, echo.addr, dns.addr, c.fdNames), 0o644)
			files, env := activation(t, c.socks...)
			p := start(t, asNobody(t, bin, cfg), startOptions{Env: env, ExtraFiles: files})
			closeFiles(files)
			p.waitReady()
			checkL4Serves(t, c.tcpAddr, c.udpAddr)
			checkUnprivileged(t, p.pid(), false)
			p.stop() // after the exit, stderr is complete
			for _, sock := range []string{"frontend=echo network=tcp address=" + c.tcpAddr, "frontend=dns network=udp address=" + c.udpAddr} {
				if !logHas(p.stderr.String(), "msg=listening", sock, "socket=systemd") {
					t.Errorf("the log does not say that %s came from systemd (socket=systemd):\n%s", sock, p.stderr.String())
				}
			}
		})
	}

	t.Run("udp-not-passed", func(t *testing.T) {
		dir := sharedDir(t)
		cfg := filepath.Join(dir, "portcullis.yaml")
		writeFile(t, cfg, l4PrivConfig("", "127.0.0.1:70", "127.0.0.1:53", echo.addr, dns.addr, false), 0o644)
		files, env := activation(t, passedSocket{"tcp", "127.0.0.1:70", "portcullis"})
		p := start(t, asNobody(t, bin, cfg), startOptions{Env: env, ExtraFiles: files})
		closeFiles(files)
		if code := p.wait(scaled(10 * time.Second)); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		stderr := p.stderr.String()
		for _, want := range []string{
			"uid=65534", "capabilities: none", "global.user",
			"AmbientCapabilities=CAP_NET_BIND_SERVICE", "ListenDatagram=127.0.0.1:53",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if !logHas(stderr, `frontend "dns"`, "udp 127.0.0.1:53") {
			t.Errorf("no line names frontend \"dns\" with udp 127.0.0.1:53:\n%s", stderr)
		}
		if logHas(stderr, `frontend "echo"`) || strings.Contains(stderr, "ListenStream=") {
			t.Errorf("the error blames the tcp frontend, whose socket was passed:\n%s", stderr)
		}
		if strings.Contains(stderr, "msg=listening") {
			t.Errorf("it logged a listener although it failed to start:\n%s", stderr)
		}
		checkNeverReady(t, p)
	})
}
