package ctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/portcullis/portcullis/internal/admin"
	"github.com/portcullis/portcullis/internal/config"
)

// Usage lists the commands, for the usage text of `portcullis ctl`.
const Usage = `commands:
  servers          every backend's servers: state, weight, in flight, requests, failures, latency, override, last check error
  drain B/S        take no new request on server S of backend B; requests in flight finish
  enable B/S       make the server active again
  disable B/S      take no new request (as drain; shown as disabled)
  weight B/S N     set the server's weight, 1 to 1000
  clear B/S        remove the server's override: its state and weight are the configuration's again
  reload           read the configuration file again and apply it, or print why it was refused
  status           version, pid, generation, configuration and its digest, reloads, overrides
B/S is a backend and a server's address as written in the configuration: app/127.0.0.1:9001.
`

// UsageError is a wrong command line: an unknown command, a missing or
// extra argument, or a bad value. Nothing was sent.
type UsageError struct {
	// Msg says what is wrong.
	Msg string
	// Commands says that the list of commands (Usage) helps: the
	// command is unknown or missing.
	Commands bool
}

func (e *UsageError) Error() string { return e.Msg }

func usageErr(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// states maps the commands that set a server's state to the state.
var states = map[string]string{"drain": "drain", "enable": "active", "disable": "disabled"}

// Run runs one command (args[0]) with its arguments against the API and
// writes the answer to w: short aligned text, or with asJSON the API's
// JSON as it came. Errors are a *UsageError (nothing was sent), a
// *ConnectError or an *APIError; with asJSON an API error's JSON is
// written to w as well.
func (c *Client) Run(ctx context.Context, args []string, asJSON bool, w io.Writer) error {
	if len(args) == 0 {
		return &UsageError{Msg: "give a command", Commands: true}
	}
	cmd, rest := args[0], args[1:]
	want := map[string]int{"servers": 0, "status": 0, "reload": 0, "drain": 1, "enable": 1, "disable": 1, "clear": 1, "weight": 2}
	n, ok := want[cmd]
	if !ok {
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", cmd), Commands: true}
	}
	if err := checkArgs(cmd, rest, n); err != nil {
		return err
	}
	var out output
	var err error
	switch cmd {
	case "servers":
		out, err = c.servers(ctx)
	case "status":
		out, err = c.status(ctx)
	case "reload":
		out, err = c.reload(ctx)
	default:
		out, err = c.change(ctx, cmd, rest)
	}
	switch {
	case asJSON && out.raw != nil:
		_, werr := w.Write(out.raw)
		if err == nil {
			err = werr
		}
	case err == nil:
		_, err = io.WriteString(w, out.text)
	}
	return err
}

// output is a command's answer: as the API sent it, and for people.
type output struct {
	raw  []byte
	text string
}

// checkArgs checks that cmd has n arguments.
func checkArgs(cmd string, args []string, n int) error {
	if len(args) == n {
		return nil
	}
	for _, a := range args {
		if strings.HasPrefix(a, "-") && cmd != "weight" {
			return usageErr("%s: flags go before the command: portcullis ctl %s %s", cmd, a, cmd)
		}
	}
	switch n {
	case 0:
		return usageErr("%s takes no argument, got %q", cmd, strings.Join(args, " "))
	case 1:
		return usageErr("%s takes one argument, BACKEND/SERVER (e.g. app/127.0.0.1:9001), got %d", cmd, len(args))
	}
	return usageErr("weight takes two arguments, BACKEND/SERVER and a weight (e.g. weight app/127.0.0.1:9001 5), got %d", len(args))
}

// ParseServer splits "BACKEND/SERVER" at its first "/": a server's
// address holds none, and a backend's name may not.
func ParseServer(s string) (backend, server string, err error) {
	backend, server, ok := strings.Cut(s, "/")
	if !ok || backend == "" || server == "" {
		return "", "", usageErr("%q: name a server as BACKEND/ADDRESS, e.g. app/127.0.0.1:9001; portcullis ctl servers lists them", s)
	}
	return backend, server, nil
}

// ParseWeight checks a weight given on the command line: an integer from
// 1 to config.MaxWeight.
func ParseWeight(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > config.MaxWeight {
		return 0, usageErr("weight %q: want an integer from 1 to %d", s, config.MaxWeight)
	}
	return n, nil
}

// change runs drain, enable, disable, weight or clear.
func (c *Client) change(ctx context.Context, cmd string, args []string) (output, error) {
	backend, server, err := ParseServer(args[0])
	if err != nil {
		return output{}, err
	}
	path := "/api/servers/" + url.PathEscape(backend) + "/" + url.PathEscape(server)
	method, body := http.MethodPost, any(nil)
	switch cmd {
	case "weight":
		n, err := ParseWeight(args[1])
		if err != nil {
			return output{}, err
		}
		body = admin.Change{Weight: n}
	case "clear":
		method, path = http.MethodDelete, path+"/override"
	default:
		body = admin.Change{State: states[cmd]}
	}
	raw, err := c.do(ctx, method, path, body)
	if err != nil {
		return output{raw: raw}, err
	}
	var s admin.Server
	if err := c.decode(path, raw, &s); err != nil {
		return output{}, err
	}
	return output{raw: raw, text: serverLine(backend, s) + "\n"}, nil
}

func (c *Client) servers(ctx context.Context) (output, error) {
	var v struct {
		Backends []admin.Backend `json:"backends"`
	}
	raw, err := c.get(ctx, "/api/backends", &v)
	if err != nil {
		return output{raw: raw}, err
	}
	return output{raw: raw, text: serversTable(v.Backends)}, nil
}

func (c *Client) status(ctx context.Context) (output, error) {
	var st admin.Status
	raw, err := c.get(ctx, "/api/status", &st)
	if err != nil {
		return output{raw: raw}, err
	}
	return output{raw: raw, text: statusText(st)}, nil
}

func (c *Client) reload(ctx context.Context) (output, error) {
	raw, err := c.do(ctx, http.MethodPost, "/api/reload", nil)
	if err != nil {
		return output{raw: raw}, err
	}
	var v struct {
		Digest string `json:"digest"`
	}
	if err := c.decode("/api/reload", raw, &v); err != nil {
		return output{}, err
	}
	return output{raw: raw, text: "reloaded, digest " + v.Digest + "\n"}, nil
}
