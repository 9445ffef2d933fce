package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ensurePeers installs the missing peers and load generator from Debian's
// packages.
func ensurePeers(proxies []string) error {
	pkgs := map[string]string{"haproxy": "haproxy", "nginx": "nginx", "caddy": "caddy", "h2load": "nghttp2-client"}
	var missing []string
	for _, bin := range append(slices.Clone(proxies), "h2load") {
		if pkg, ok := pkgs[bin]; ok {
			if _, err := exec.LookPath(bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench/run: installing %s\n", strings.Join(missing, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

func peerVersions(proxies []string) string {
	var out []string
	ver := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).CombinedOutput()
		return firstLine(strings.TrimSpace(string(b)))
	}
	for _, p := range proxies {
		switch p {
		case "haproxy":
			out = append(out, ver("haproxy", "-v"))
		case "nginx":
			out = append(out, ver("nginx", "-v"))
		case "caddy":
			out = append(out, "caddy "+ver("caddy", "version"))
		}
	}
	out = append(out, ver("h2load", "--version"))
	return strings.Join(out, "; ")
}

// startProxy writes the proxy's configuration, starts it pinned to CPU 0
// and waits until both its ports accept connections.
func (r *runner) startProxy(name, backend string, idle int) (*target, error) {
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	t := &target{name: name, plain: net.JoinHostPort("127.0.0.1", strconv.Itoa(p1)), tls: net.JoinHostPort("127.0.0.1", strconv.Itoa(p2))}
	dir := r.dir
	var conf, confName string
	var argv []string
	var env []string
	switch name {
	case "portcullis":
		t.h3 = true
		confName = "portcullis.yaml"
		conf = fmt.Sprintf(`global:
  user: nobody
  grace: 2s
frontends:
  plain:
    bind:
      - address: %s
    routes:
      - backend: bench
  tls:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: cert.pem
              key: key.pem
        http3: true
        quic:
          shards: 1
          retry: never
    routes:
      - backend: bench
backends:
  bench:
    servers:
      - address: %s
`, t.plain, t.tls, backend)
		argv = []string{filepath.Join(dir, "portcullis"), "run", "-c", filepath.Join(dir, confName)}
		env = []string{"GOMAXPROCS=1"}
	case "haproxy":
		pem := filepath.Join(dir, "haproxy.pem")
		c, err1 := os.ReadFile(filepath.Join(dir, "cert.pem"))
		k, err2 := os.ReadFile(filepath.Join(dir, "key.pem"))
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if err := os.WriteFile(pem, append(c, k...), 0o600); err != nil {
			return nil, err
		}
		confName = "haproxy.cfg"
		conf = fmt.Sprintf(`global
    nbthread 1
    maxconn %d
    # maxconn needs 2 descriptors per connection (client and server side)
    # to be guaranteed, more than the hard limit allows: run anyway (the
    # idle connections need one each).
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    http-reuse always
frontend plain
    bind %s
    default_backend bench
frontend tls
    bind %s ssl crt %s alpn h2,http/1.1
    default_backend bench
backend bench
    server s1 %s
`, idle+200, t.plain, t.tls, pem, backend)
		argv = []string{"haproxy", "-db", "-f", filepath.Join(dir, confName)}
	case "nginx":
		confName = "nginx.conf"
		conf = fmt.Sprintf(`worker_processes 1;
worker_rlimit_nofile %d;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log warn;
events { worker_connections %[3]d; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path %[2]s/nginx-body;
    proxy_temp_path %[2]s/nginx-proxy;
    upstream bench {
        server %[4]s;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen %[5]s;
        listen %[6]s ssl http2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate %[2]s/cert.pem;
        ssl_certificate_key %[2]s/key.pem;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
`, idle+2000, dir, idle+1000, backend, t.plain, t.tls)
		argv = []string{"nginx", "-c", filepath.Join(dir, confName)}
	case "caddy":
		t.h3 = true
		confName = "Caddyfile"
		conf = fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	grace_period 1s
}
http://%s {
	bind 127.0.0.1
	reverse_proxy %s
}
https://%s {
	bind 127.0.0.1
	tls %s/cert.pem %s/key.pem
	reverse_proxy %s
}
`, t.plain, backend, t.tls, dir, dir, backend)
		argv = []string{"caddy", "run", "--adapter", "caddyfile", "--config", filepath.Join(dir, confName)}
		env = []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_DATA_HOME=" + dir + "/caddy-data", "XDG_CONFIG_HOME=" + dir + "/caddy-config"}
	}
	if err := os.WriteFile(filepath.Join(dir, confName), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := r.command(0, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := r.start(cmd); err != nil {
		return nil, err
	}
	t.cmd, t.pid = cmd, cmd.Process.Pid
	if name == "portcullis" {
		if err := waitReady(cmd, logPath, 20*time.Second); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range []string{t.plain, t.tls} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if zombie(t.pid) || time.Now().After(deadline) {
				log, _ := os.ReadFile(logPath)
				return nil, fmt.Errorf("not listening on %s; its output:\n%s", a, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Fprintf(os.Stderr, "bench/run: %s pid %d on %s (plain) and %s (TLS)\n", name, t.pid, t.plain, t.tls)
	return t, nil
}
