package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// minimal is a valid configuration the broken ones start from.
const minimal = `frontends:
  web:
    bind:
      - address: 127.0.0.1:80
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`

// missingCert is a valid configuration but for its certificate file,
// which does not exist (site.key, the key, does in a site's directory).
const missingCert = `frontends:
  web:
    bind:
      - address: 127.0.0.1:443
        tls:
          certificates:
            - cert: missing.pem
              key: site.key
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`

// problem is one message validate must print: at LINE:COL, containing
// every keyword.
type problem struct {
	pos      string
	keywords []string
}

// validate runs "portcullis validate -c FILE" with a timeout.
func validate(t *testing.T, bin, file string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, "validate", "-c", file)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
	case <-time.After(scaled(10 * time.Second)):
		cmd.Process.Kill()
		<-done
		t.Fatalf("validate -c %s did not finish within %v", file, scaled(10*time.Second))
	}
	return out.String(), errb.String(), code
}

var problemLine = regexp.MustCompile(`^(.*):(\d+:\d+): (.*)$`)

// TestValidate checks that validate points at each problem of a broken
// configuration with FILE:LINE:COL and a message that names it, reports
// every problem at once, and exits 2.
func TestValidate(t *testing.T) {
	bin := defaultBinary(t)
	cases := []struct {
		name   string
		config string
		want   []problem
	}{{
		name:   "unknown key",
		config: strings.Replace(minimal, "      - address: 127.0.0.1:80\n", "      - address: 127.0.0.1:80\n        colour: blue\n", 1),
		want:   []problem{{"5:9", []string{`unknown key "colour"`, "http3"}}},
	}, {
		name:   "http3 not a bool",
		config: strings.Replace(minimal, "      - address: 127.0.0.1:80\n", "      - address: 127.0.0.1:80\n        http3: maybe\n", 1),
		want:   []problem{{"5:16", []string{"http3", "true or false", `"maybe"`}}},
	}, {
		name:   "grace not a duration",
		config: "global:\n  grace: soon\n" + minimal,
		want:   []problem{{"2:10", []string{"grace", "duration", `"soon"`}}},
	}, {
		name:   "unknown backend",
		config: strings.Replace(minimal, "backend: app", "backend: nosuch", 1),
		want:   []problem{{"6:18", []string{`unknown backend "nosuch"`, "app"}}},
	}, {
		name: "duplicate names",
		config: `frontends:
  web:
    bind:
      - address: 127.0.0.1:80
    routes:
      - backend: app
  web:
    bind:
      - address: 127.0.0.1:81
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
  app:
    servers:
      - address: 127.0.0.1:9002
`,
		want: []problem{
			{"7:3", []string{`duplicate frontend name "web"`, "line 2"}},
			{"16:3", []string{`duplicate backend name "app"`, "line 13"}},
		},
	}, {
		name:   "port out of range",
		config: strings.Replace(minimal, "127.0.0.1:80\n", "127.0.0.1:99999\n", 1),
		want:   []problem{{"4:18", []string{`"127.0.0.1:99999"`, "65535"}}},
	}, {
		name:   "host name as bind address",
		config: strings.Replace(minimal, "127.0.0.1:80\n", "localhost:80\n", 1),
		want:   []problem{{"4:18", []string{`"localhost:80"`, "IP address"}}},
	}, {
		name:   "http3 without tls",
		config: strings.Replace(minimal, "      - address: 127.0.0.1:80\n", "      - address: 127.0.0.1:80\n        http3: true\n", 1),
		want:   []problem{{"5:9", []string{"http3", "tls"}}},
	}, {
		name:   "wildcard overlapping an address",
		config: strings.Replace(minimal, "      - address: 127.0.0.1:80\n", "      - address: 127.0.0.1:80\n      - address: :80\n", 1),
		want:   []problem{{"5:18", []string{"address :80 (every address) overlaps 127.0.0.1:80", "line 4", "remove one"}}},
	}, {
		name:   "missing certificate file",
		config: missingCert,
		want:   []problem{{"7:21", []string{"certificate", "missing.pem", "no such file"}}},
	}, {
		name:   "missing certificate and key files",
		config: strings.Replace(missingCert, "key: site.key", "key: missing.key", 1),
		want: []problem{
			{"7:21", []string{"certificate", "missing.pem", "no such file"}},
			{"8:20", []string{"key", "missing.key", "no such file"}},
		},
	}, {
		name: "several problems at once",
		config: `global:
  user: nobody
  grace: soon
frontends:
  web:
    bind:
      - address: 127.0.0.1:99999
      - address: 127.0.0.1:443
        http3: true
        colour: blue
    routes:
      - backend: nosuch
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`,
		want: []problem{
			{"3:10", []string{"grace", `"soon"`}},
			{"7:18", []string{`"127.0.0.1:99999"`}},
			{"9:9", []string{"http3", "tls"}},
			{"10:9", []string{`unknown key "colour"`}},
			{"12:18", []string{`unknown backend "nosuch"`}},
		},
	}, {
		name:   "config problem and unreadable certificate at once",
		config: strings.Replace(missingCert, "backend: app", "backend: nosuch", 1),
		want: []problem{
			{"7:21", []string{"certificate", "missing.pem", "no such file"}},
			{"10:18", []string{`unknown backend "nosuch"`}},
		},
	}}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			t.Parallel()
			s := newSite(t, siteOptions{})
			file := filepath.Join(s.dir, "broken.yaml")
			writeFile(t, file, c.config, 0o644)
			stdout, stderr, code := validate(t, bin, file)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			got := map[string]string{} // LINE:COL → message
			var order []string
			for _, line := range strings.Split(stderr, "\n") {
				m := problemLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				if m[1] != file {
					t.Errorf("problem names file %q, want %q: %s", m[1], file, line)
				}
				got[m[2]] = m[3]
				order = append(order, m[2])
			}
			if len(order) != len(c.want) {
				t.Errorf("%d FILE:LINE:COL problems, want %d:\n%s\nthe file:\n%s", len(order), len(c.want), stderr, c.config)
			}
			for i, w := range c.want {
				msg, ok := got[w.pos]
				if !ok {
					t.Errorf("no problem reported at %s (want %q):\n%s", w.pos, w.keywords, stderr)
					continue
				}
				for _, k := range w.keywords {
					if !strings.Contains(msg, k) {
						t.Errorf("the problem at %s does not say %q: %s", w.pos, k, msg)
					}
				}
				if i < len(order) && order[i] != w.pos {
					t.Errorf("problem %d is at %s, want %s (in file order)", i+1, order[i], w.pos)
				}
			}
		})
	}

	t.Run("issue-example", func(t *testing.T) {
		t.Parallel()
		s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:9001", "127.0.0.1:9002"}, API: "127.0.0.1:9003"})
		example, err := readString(filepath.Join("..", "..", "examples", "portcullis.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		_, want := exampleHeader(example)
		if got, _ := readString(s.config); got != want {
			t.Fatalf("the test's example configuration differs from the issue's:\n%s", got)
		}
		stdout, stderr, code := validate(t, bin, s.config)
		if code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, stderr)
		}
		if want := s.config + ": valid ("; !strings.HasPrefix(stdout, want) {
			t.Errorf("stdout %q, want it to start with %q", stdout, want)
		}
	})
}

// exampleHeader splits a file of examples/ into its leading comment lines
// and the rest, and returns the header's commands: its lines indented
// under "#", such as "#   openssl req ...", to be run from the
// repository's root.
func exampleHeader(text string) (commands []string, rest string) {
	for rest = text; strings.HasPrefix(rest, "#"); {
		line, after, _ := strings.Cut(rest, "\n")
		if cmd, ok := strings.CutPrefix(line, "#   "); ok && strings.TrimSpace(cmd) != "" {
			commands = append(commands, strings.TrimSpace(cmd))
		}
		rest = after
	}
	return commands, rest
}

// TestExamplesValidate follows the header of every configuration in
// examples/ as an operator would: with the file copied to ROOT/examples
// in a fresh directory, it runs the header's commands from ROOT, and
// `portcullis validate` must then accept the file.
func TestExamplesValidate(t *testing.T) {
	bin := defaultBinary(t)
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "examples", pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no configurations in examples/")
	}
	for _, example := range files {
		t.Run(filepath.Base(example), func(t *testing.T) {
			t.Parallel()
			text, err := readString(example)
			if err != nil {
				t.Fatal(err)
			}
			root := sharedDir(t)
			file := filepath.Join(root, "examples", filepath.Base(example))
			if err := os.Mkdir(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, file, text, 0o644)
			commands, _ := exampleHeader(text)
			for _, c := range commands {
				needTool(t, strings.Fields(c)[0], strings.Fields(c)[0])
				cmd := exec.Command("sh", "-c", c)
				cmd.Dir = root
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("the header's command failed: %v\n%s\n%s", err, c, out)
				}
			}
			stdout, stderr, code := validate(t, bin, file)
			if code != 0 || !strings.HasPrefix(stdout, file+": valid (") {
				t.Errorf("after the header's %d commands, validate exits %d, want 0:\n%s%s", len(commands), code, stdout, stderr)
			}
		})
	}
}

// validCount is validate's count of the sockets of a file with HTTP/3:
// the first line's, then the explanation's, with the count without the
// steering program.
var validCount = regexp.MustCompile(`: valid \(.*, (\d+) sockets\)\n.*: (\d+) sockets: \d+ TCP, \d+ UDP \(QUIC on 127\.0\.0\.1:443: \d+ shards? × 2 sets\); (\d+) if run cannot load the QUIC steering program \(it needs root or CAP_BPF at startup; docs/quic\.md\)\n$`)

// TestValidateCountsSocketsAsRun: validate counts the sockets run binds,
// and says how many there are without the steering program; run's ready
// line gives the same count, as root (the program loads) and as a
// service user without CAP_BPF (it does not).
func TestValidateCountsSocketsAsRun(t *testing.T) {
	bin := defaultBinary(t)
	ups := startUpstreams(t)
	s := newSite(t, ups.options(siteOptions{}))
	stdout, stderr, code := validate(t, bin, s.config)
	m := validCount.FindStringSubmatch(stdout)
	if code != 0 || m == nil || m[1] != m[2] {
		t.Fatalf("validate: exit status %d, stdout %q, want a count of the sockets (%s) explained on a second line; stderr:\n%s", code, stdout, validCount, stderr)
	}
	for _, run := range []struct {
		name string
		argv []string
		want string
	}{
		{"root", asRoot(bin, s.config), m[1]},
		{"ambient", asAmbient(t, bin, s.config), m[3]},
	} {
		p := start(t, run.argv, startOptions{})
		p.waitReady()
		if want := "serving " + run.want + " sockets: "; !logHas(p.stderr.String(), "msg=ready", want) {
			t.Errorf("%s: the ready line does not say %q, as validate did:\n%s", run.name, want, p.stderr.String())
		}
		p.stop()
	}
}
