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

// nginxStreamModule is nginx's stream (layer-4) module as Debian's
// libnginx-mod-stream installs it: Debian's nginx builds it as a dynamic
// module, in a package of its own.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// ensurePeers installs the missing peers and load generator from Debian's
// packages, and with l4 (a layer-4 scenario will run) nginx's stream
// module. Without that module nginx still runs the HTTP scenarios: the
// layer-4 ones skip it.
func ensurePeers(proxies []string, l4 bool) error {
	pkgs := map[string]string{"haproxy": "haproxy", "nginx": "nginx", "caddy": "caddy", "h2load": "nghttp2-client"}
	var missing []string
	for _, bin := range append(slices.Clone(proxies), "h2load") {
		if pkg, ok := pkgs[bin]; ok {
			if _, err := exec.LookPath(bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	stream := l4 && slices.Contains(proxies, "nginx") && !exists(nginxStreamModule)
	if len(missing) == 0 && !stream {
		return nil
	}
	if err := aptGet("update", "-qq"); err != nil {
		return err
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "bench/run: installing %s\n", strings.Join(missing, " "))
		if err := aptGet(append([]string{"install", "-y", "-qq"}, missing...)...); err != nil {
			return err
		}
	}
	if stream {
		fmt.Fprintln(os.Stderr, "bench/run: installing libnginx-mod-stream")
		if err := aptGet("install", "-y", "-qq", "libnginx-mod-stream"); err != nil || !exists(nginxStreamModule) {
			fmt.Fprintf(os.Stderr, "bench/run: no %s (%v): the TCP scenarios skip nginx\n", nginxStreamModule, err)
		}
	}
	return nil
}

func aptGet(args ...string) error {
	cmd := exec.Command("apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
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
// and waits until its ports accept connections. With backendTCP (the
// backend's TCP byte source) a proxy that relays TCP (portcullis,
// HAProxy, nginx with its stream module) gets a third port, a layer-4
// frontend in front of it.
func (r *runner) startProxy(name, backend, backendTCP string, idle int) (*target, error) {
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	t := &target{name: name, plain: net.JoinHostPort("127.0.0.1", strconv.Itoa(p1)), tls: net.JoinHostPort("127.0.0.1", strconv.Itoa(p2))}
	l4 := backendTCP != "" && (name == "portcullis" || name == "haproxy" || name == "nginx" && exists(nginxStreamModule))
	if l4 {
		p3, err := freePort()
		if err != nil {
			return nil, err
		}
		t.tcp = net.JoinHostPort("127.0.0.1", strconv.Itoa(p3))
	}
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
  # Room for the idle scenarios (a warning says it is above what the
  # open-files limit leaves for client and server connections: idle
  # connections have no server side).
  max_conns: %d
frontends:
  plain:
    bind:
      - address: %s
%s    routes:
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
    # Every load generator is one client (127.0.0.1): room for the idle
    # scenarios' connections, as HAProxy's maxconn below.
    limits:
      max_conns_per_client: %d
%s    routes:
      - backend: bench
%sbackends:
  bench:
    servers:
      - address: %s
%s`, idle+200, t.plain, r.portcullisAccessLog(), t.tls, idle+200, r.portcullisAccessLog(), portcullisL4(t.tcp), backend, portcullisL4Backend(t.tcp, backendTCP))
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
%s`, idle+200, t.plain, t.tls, pem, backend, haproxyL4(t.tcp, backendTCP))
		argv = []string{"haproxy", "-db", "-f", filepath.Join(dir, confName)}
	case "nginx":
		confName = "nginx.conf"
		conf = fmt.Sprintf(`%[7]sworker_processes 1;
worker_rlimit_nofile %[1]d;
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
%[8]s`, idle+2000, dir, idle+1000, backend, t.plain, t.tls, nginxL4Module(t.tcp), nginxL4(t.tcp, backendTCP))
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
	case "fasthttp":
		// bench/alt/fasthttp, a measurement of an alternative: HTTP/1.1
		// only (no HTTP/2, no HTTP/3). It is a module of its own, so
		// that portcullis does not depend on fasthttp: r.build cannot
		// build it.
		t.h1 = true
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		bin := filepath.Join(dir, "fasthttp-proxy")
		build := exec.Command("go", "build", "-C", "bench/alt/fasthttp", "-o", bin, ".")
		build.Dir = root
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("go build -C bench/alt/fasthttp: %w", err)
		}
		argv = []string{bin, "-listen", t.plain, "-tls-listen", t.tls,
			"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"), "-backend", backend}
		env = []string{"GOMAXPROCS=1"}
		// It has no configuration file: its command line stands for one.
		confName, conf = "fasthttp-proxy.args", strings.Join(argv, " ")+"\n"
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
	for _, a := range []string{t.plain, t.tls, t.tcp} {
		if a == "" {
			continue
		}
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
	l4Text := ""
	if t.tcp != "" {
		l4Text = " and " + t.tcp + " (TCP)"
	}
	fmt.Fprintf(os.Stderr, "bench/run: %s pid %d on %s (plain), %s (TLS)%s\n", name, t.pid, t.plain, t.tls, l4Text)
	return t, nil
}

// portcullisL4 returns the layer-4 part of portcullis's configuration:
// one frontend on addr relaying every connection to the backend's byte
// source, nothing for addr "".
// portcullisAccessLog is the access_log setting of portcullis's HTTP
// frontends: none, or r.accessLog's format into access.log in the work
// directory (compare -access-log).
func (r *runner) portcullisAccessLog() string {
	if r.accessLog == "" {
		return ""
	}
	return fmt.Sprintf("    access_log: {format: %s, to: access.log}\n", r.accessLog)
}

func portcullisL4(addr string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf(`  tcp:
    mode: tcp
    bind:
      - address: %s
    routes:
      - backend: sink
`, addr)
}

// portcullisL4Backend returns the backend portcullisL4's frontend relays
// to: the byte source at backendTCP; nothing for addr "".
func portcullisL4Backend(addr, backendTCP string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf(`  sink:
    servers:
      - address: %s
`, backendTCP)
}

// haproxyL4 sets its own timeouts (the defaults' are for HTTP) and
// splices both directions, as portcullis does: without splice-request
// and splice-response HAProxy copies through user space (splice-auto
// splices only when a buffer fills), and spent about twice the CPU per
// GiB here (bench/README.md).
func haproxyL4(addr, backendTCP string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf(`frontend tcp
    mode tcp
    bind %s
    timeout client 300s
    default_backend sink
backend sink
    mode tcp
    option splice-request
    option splice-response
    timeout connect 5s
    timeout server 300s
    server s1 %s
`, addr, backendTCP)
}

func nginxL4Module(addr string) string {
	if addr == "" {
		return ""
	}
	return "load_module " + nginxStreamModule + ";\n"
}

// nginxL4 raises proxy_buffer_size from 16k to 256k (the block the
// backend writes): nginx has no splice, and with 16k it spent about 1.7
// times the CPU per GiB here (bench/README.md).
func nginxL4(addr, backendTCP string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf(`stream {
    server {
        listen %s;
        proxy_pass %s;
        proxy_buffer_size 256k;
        proxy_connect_timeout 5s;
        proxy_timeout 300s;
    }
}
`, addr, backendTCP)
}
