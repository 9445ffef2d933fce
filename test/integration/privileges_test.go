package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestReloadRootOnlyKeyAfterDrop starts portcullis as root with
// global.user and a key that only root may read (0600 root): it starts,
// but a reload reads the key as nobody. The reload is refused with the
// key's FILE:LINE:COL and the remedy (which group may read it, the
// commands, or a restart), the running configuration keeps serving, and
// once the remedy is applied the reload succeeds.
func TestReloadRootOnlyKeyAfterDrop(t *testing.T) {
	ups := startUpstreams(t)
	opt := ups.options(siteOptions{User: true, PrivateKey: true})
	s := newSite(t, opt)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()

	config := exampleConfig(opt)
	line := 1 + strings.Count(config[:strings.Index(config, "key: site.key")], "\n")
	at := fmt.Sprintf("%s:%d:20: frontend \"web\": cannot read key: open %s: permission denied", s.config, line, s.key)
	quoted := strconv.Quote(at) // as the log quotes the error
	got := reload(t, s, p, config)
	for _, want := range []string{
		`msg="reload refused; the running configuration keeps serving"`,
		quoted[1 : len(quoted)-1],
		"cannot read " + s.key + " as uid=65534(nobody) gid=65534(nogroup)",
		fmt.Sprintf("chgrp nogroup %s; chmod 0640 %s", s.key, s.key),
		"restart instead (systemctl restart)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the refused reload does not say %q:\n%s", want, got)
		}
	}
	status := p.waitNotify("STATUS=reload failed", scaled(5*time.Second))
	if !strings.Contains(status, "READY=1") || !strings.Contains(status, at) {
		t.Errorf("service status %q, want READY=1 and %q", status, at)
	}
	checkServes(t, s)

	// The remedy the message gives makes the next reload work.
	if err := os.Chown(s.key, 0, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.key, 0o640); err != nil {
		t.Fatal(err)
	}
	if got := reload(t, s, p, config); !strings.Contains(got, "msg=reloaded") {
		t.Errorf("reload after chgrp nogroup and chmod 0640: %s", got)
	}
	checkServes(t, s)
	p.stop()
	t.Logf("the refused reload: %s", got)
}
