package systemd_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	installedBinary = "/usr/bin/portcullis"
	installedConfig = "/etc/portcullis/portcullis.yaml"
)

// units are the files this directory ships.
var units = []string{
	"portcullis.service",
	"portcullis-ambient.service",
	"portcullis-activated.service",
	"portcullis-activated.socket",
	"portcullis-admin.socket",
}

// maxExposure is the highest "systemd-analyze security --offline=true"
// exposure each service may have, in tenths (the unit of --threshold). The
// values are the scores measured with systemd 252; a change that weakens the
// sandbox fails here. NotifyAccess=all, which a binary upgrade needs (the
// new process sends MAINPID=), costs 0.2 of each.
var maxExposure = map[string]int{
	"portcullis.service":           24,
	"portcullis-ambient.service":   18,
	"portcullis-activated.service": 15,
}

const testConfig = `frontends:
  web:
    bind:
      - address: 127.0.0.1:8080
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`

// hostUnitLine matches verify output about unit files of the host (pulled
// in as dependencies such as network-online.target), not about ours, which
// live in a temporary directory.
var hostUnitLine = regexp.MustCompile(`^(/etc|/run|/usr/lib|/lib)/systemd/\S+:`)

func TestUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze is required in CI: %v", err)
		}
		t.Skipf("systemd-analyze not found: %v", err)
	}

	dir := t.TempDir()
	bin := buildPortcullis(t, dir)
	cfg := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	unitDir := filepath.Join(dir, "units")
	installUnits(t, unitDir, bin, cfg)

	t.Run("directives", testDirectives)

	// The command every service runs as ExecStartPre= must accept the
	// configuration.
	t.Run("validate", func(t *testing.T) {
		out, err := exec.Command(bin, "validate", "-c", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("%s validate -c %s: %v\n%s", bin, cfg, err, out)
		}
	})

	t.Run("verify", func(t *testing.T) {
		var paths []string
		for _, u := range units {
			paths = append(paths, filepath.Join(unitDir, u))
		}
		bad, out, err := verify(analyze, paths...)
		for _, l := range bad {
			t.Errorf("systemd-analyze verify: %s", l)
		}
		if err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	// The check above would pass if verify printed nothing at all: make
	// sure a broken unit is reported.
	t.Run("verify reports a missing binary", func(t *testing.T) {
		broken := filepath.Join(dir, "broken")
		installUnits(t, broken, filepath.Join(dir, "no-such-binary"), cfg)
		bad, out, _ := verify(analyze, filepath.Join(broken, "portcullis.service"))
		if len(bad) == 0 {
			t.Fatalf("systemd-analyze verify accepted a unit whose binary is missing:\n%s", out)
		}
	})

	exposureLine := regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+)\.([0-9])`)
	for unit, max := range maxExposure {
		t.Run("security/"+unit, func(t *testing.T) {
			cmd := exec.Command(analyze, "security", "--offline=true",
				"--threshold="+strconv.Itoa(max), filepath.Join(unitDir, unit))
			cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
			out, err := cmd.CombinedOutput()
			m := exposureLine.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure level in output (%v):\n%s", err, out)
			}
			whole, _ := strconv.Atoi(string(m[1]))
			tenth, _ := strconv.Atoi(string(m[2]))
			got := whole*10 + tenth
			t.Logf("%s: exposure %d.%d (at most %d.%d)", unit, whole, tenth, max/10, max%10)
			if got > max || err != nil {
				t.Errorf("%s: exposure %d.%d, want at most %d.%d (%v):\n%s",
					unit, whole, tenth, max/10, max%10, err, out)
			}
		})
	}
}

// buildPortcullis builds ./cmd/portcullis from the repository root into dir.
func buildPortcullis(t *testing.T, dir string) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "portcullis")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/portcullis")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/portcullis: %v\n%s", err, out)
	}
	return bin
}

// installUnits copies the unit files into dir with the installed binary and
// configuration paths replaced by bin and cfg.
func installUnits(t *testing.T, dir, bin, cfg string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(installedBinary, bin, installedConfig, cfg)
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.HasSuffix(u, ".service") && !strings.Contains(s, installedBinary) {
			t.Fatalf("%s does not run %s", u, installedBinary)
		}
		if err := os.WriteFile(filepath.Join(dir, u), []byte(r.Replace(s)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// verify runs "systemd-analyze verify" and returns the output lines that
// are not benign. With the binary present, systemd 252 prints nothing for
// these units; the only lines let through are about the host's own unit
// files.
func verify(analyze string, paths ...string) (bad []string, out []byte, err error) {
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_LOG_COLOR=0")
	out, err = cmd.CombinedOutput()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || hostUnitLine.MatchString(l) {
			continue
		}
		bad = append(bad, l)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		// systemd-analyze did not run at all.
		bad = append(bad, err.Error())
	}
	return bad, out, err
}

// testDirectives checks the settings the three ways to run depend on (see
// docs/privileges.md), so that an edit cannot quietly change a mode.
func testDirectives(t *testing.T) {
	const (
		run      = installedBinary + " run -c " + installedConfig
		validate = installedBinary + " validate -c " + installedConfig
	)
	common := map[string]string{
		"Type":            "notify",
		"NotifyAccess":    "all", // the new process of a binary upgrade sends MAINPID=
		"ExecStart":       run,
		"ExecStartPre":    validate,
		"KillSignal":      "SIGTERM",
		"NoNewPrivileges": "yes",
		"PrivateNetwork":  "",
	}
	want := map[string]map[string]string{
		"portcullis.service": {
			"User":                  "",
			"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_BPF",
			"AmbientCapabilities":   "",
		},
		"portcullis-ambient.service": {
			"User":                  "portcullis",
			"Group":                 "portcullis",
			"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE CAP_BPF",
			"AmbientCapabilities":   "CAP_NET_BIND_SERVICE CAP_BPF",
		},
		"portcullis-activated.service": {
			"User":                  "portcullis",
			"Group":                 "portcullis",
			"CapabilityBoundingSet": "",
			"AmbientCapabilities":   "",
		},
	}
	for unit, w := range want {
		got := readUnit(t, unit)
		for k, v := range common {
			w[k] = v
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%s: %s=%q, want %q", unit, k, got[k], v)
			}
		}
	}

	sock := readUnitAll(t, "portcullis-activated.socket")
	for k, v := range map[string]string{
		"ListenStream":       "80 443",
		"ListenDatagram":     "443",
		"FileDescriptorName": "portcullis",
	} {
		if got := strings.Join(sock[k], " "); got != v {
			t.Errorf("portcullis-activated.socket: %s=%q, want %q", k, got, v)
		}
	}
}

// readUnit returns the last value of each setting in a unit file; an
// absent setting reads as "".
func readUnit(t *testing.T, path string) map[string]string {
	last := map[string]string{}
	for k, vs := range readUnitAll(t, path) {
		last[k] = vs[len(vs)-1]
	}
	return last
}

// readUnitAll returns every value of each setting in a unit file, in order.
// An empty assignment resets the list, as systemd does for list settings.
func readUnitAll(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: cannot parse %q", path, l)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if v == "" {
			all[k] = []string{""}
			continue
		}
		if len(all[k]) == 1 && all[k][0] == "" {
			all[k] = nil
		}
		all[k] = append(all[k], v)
	}
	return all
}
