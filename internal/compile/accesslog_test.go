package compile

import (
	"path/filepath"
	"strings"
	"testing"
)

const accessLogConfig = `frontends:
  web:
    access_log: {format: %s, to: logs/web.log}
    bind:
      - address: 127.0.0.1:8080
    routes:
      - backend: pool
  relay:
    mode: tcp
    access_log: {format: logfmt, to: logs/web.log}
    bind:
      - address: 127.0.0.1:8443
    routes:
      - backend: pool
  quiet:
    bind:
      - address: 127.0.0.1:8081
    routes:
      - backend: pool
backends:
  pool:
    servers:
      - address: 127.0.0.1:9009
`

// TestAccessLogs: frontends that name the same file share one writer
// (path relative to the configuration's directory), each with its
// format; a frontend without access_log has none.
func TestAccessLogs(t *testing.T) {
	dir := t.TempDir()
	g, err := compileFile(t, dir, strings.Replace(accessLogConfig, "%s", "combined", 1))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "logs", "web.log")
	if len(g.AccessLogs) != 1 || g.AccessLogs[path] == nil {
		t.Fatalf("writers %v, want one for %s", g.AccessLogs, path)
	}
	web, relay, quiet := g.Frontends[0], g.Frontends[1], g.Frontends[2]
	if web.AccessLog == nil || web.AccessLog.Format.String() != "combined" || relay.AccessLog.Format.String() != "logfmt" ||
		web.AccessLog.W != relay.AccessLog.W || relay.Binds[0].L4.Log != relay.AccessLog || quiet.AccessLog != nil {
		t.Errorf("loggers: web %+v relay %+v quiet %+v", web.AccessLog, relay.AccessLog, quiet.AccessLog)
	}
}

// TestAccessLogBadFormat: an unknown format is refused where it is
// written, with the names to use instead.
func TestAccessLogBadFormat(t *testing.T) {
	_, err := compileFile(t, t.TempDir(), strings.Replace(accessLogConfig, "%s", "apache", 1))
	want := `portcullis.yaml:3:26: frontend "web": access_log unknown format "apache": want json, combined or logfmt (leave it out for json)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want it to contain %s", err, want)
	}
}
