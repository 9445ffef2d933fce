package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestRootDropsToNobody starts portcullis as root with global.user: it must
// bind :80 and :443 (TCP and UDP), read the root-only key, drop to nobody
// on every thread, and serve every protocol. Both the cgo build and the
// CGO_ENABLED=0 build must do so: with cgo, Go cannot change the
// privileges of every thread at once (syscall.AllThreadsSyscall fails).
func TestRootDropsToNobody(t *testing.T) {
	for _, variant := range []string{variantCgo, variantStatic} {
		t.Run(variant, func(t *testing.T) {
			bin := binary(t, variant)
			ups := startUpstreams(t)
			s := newSite(t, ups.options(siteOptions{User: true, PrivateKey: true}))
			p := start(t, asRoot(bin, s.config), startOptions{})
			p.waitReady()

			checkServes(t, s)

			n := checkUnprivileged(t, p.pid(), true)
			if n < 3 {
				t.Errorf("portcullis has %d threads; want several, so that every thread is checked", n)
			}
			fi, err := os.Stat(s.key)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != 0o600 || st.Uid != 0 {
				t.Errorf("key file is %v owned by uid %d; the test meant it to be 0600 root, readable only before the drop", fi.Mode().Perm(), st.Uid)
			}
			p.stop() // after the exit, stderr is complete
			got := p.stderr.String()
			if strings.Contains(got, "running as root") {
				t.Errorf("warned about running as root although it dropped to nobody:\n%s", got)
			}
			// The listening lines say the sockets were bound before the
			// drop, not passed in (socket activation, an upgrade).
			for _, network := range []string{"network=tcp", "network=udp"} {
				if !logHas(got, "msg=listening", network, `socket="bound before drop"`) {
					t.Errorf(`no %s listening line says socket="bound before drop":\n%s`, network, got)
				}
			}
			if logHas(got, "msg=listening", "socket=inherited") {
				t.Errorf("a listening line says socket=inherited after a privilege drop:\n%s", got)
			}
		})
	}
}

// TestAmbientCapability starts portcullis as nobody with only
// CAP_NET_BIND_SERVICE in its ambient set (AmbientCapabilities= under
// systemd): it must bind, serve every protocol, and hold no capability
// afterwards on any thread.
func TestAmbientCapability(t *testing.T) {
	bin := defaultBinary(t)
	ups := startUpstreams(t)
	s := newSite(t, ups.options(siteOptions{}))
	p := start(t, asAmbient(t, bin, s.config), startOptions{})
	p.waitReady()

	checkServes(t, s)

	for _, th := range threads(t, p.pid()) {
		if th.CapInh != noCaps || th.CapPrm != noCaps || th.CapEff != noCaps || th.CapAmb != noCaps {
			t.Errorf("a thread still holds capabilities after binding: %v", th)
		}
		if len(th.Uid) == 0 || th.Uid[0] != nobodyUID {
			t.Errorf("a thread does not run as nobody: %v", th)
		}
	}
	p.stop()
}

// TestRootWithoutUserWarns starts portcullis as root without global.user:
// it serves, but warns that it runs as root.
func TestRootWithoutUserWarns(t *testing.T) {
	bin := defaultBinary(t)
	ups := startUpstreams(t)
	s := newSite(t, ups.options(siteOptions{}))
	p := start(t, asRoot(bin, s.config), startOptions{})
	p.waitReady()
	p.stop() // after the exit, stderr is complete
	if got := p.stderr.String(); !logHas(got, "level=WARN", "running as root") {
		t.Errorf("no warning containing %q on stderr:\n%s", "running as root", got)
	}
}
