// Package ctl is the client of the admin API (docs/admin.md) behind
// `portcullis ctl`: it talks HTTP to a running portcullis over its admin
// unix socket or its admin listener, decodes the admin package's JSON
// types, and prints them for people (aligned, short) or as the API's JSON.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is the admin socket's path when neither a socket nor a
// URL is given: the one docs/admin.md and dist/systemd use.
const DefaultSocket = "/run/portcullis/admin.sock"

// TokenEnv is the environment variable that holds the admin listener's
// bearer token when no token file is given.
const TokenEnv = "PORTCULLIS_ADMIN_TOKEN"

// defaultTimeout bounds a request when Client.Timeout is 0; a reload reads
// certificates and may bind sockets, so it is generous.
const defaultTimeout = 60 * time.Second

// maxAnswer bounds an answer of the API, in bytes.
const maxAnswer = 16 << 20

// Client talks to one running portcullis. Its zero value uses
// DefaultSocket.
type Client struct {
	// Socket is the path of the admin unix socket (admin.socket), used
	// when URL is empty; "": DefaultSocket.
	Socket string
	// URL is the base URL of the admin listener (admin.listen), e.g.
	// "http://127.0.0.1:9100"; "": the socket is used.
	URL string
	// Token is the bearer token sent on URL (admin.token_file's
	// content); "": none, and the listener allows only reads.
	Token string
	// TokenFrom says where Token came from ("-token-file FILE" or
	// TokenEnv), for error messages.
	TokenFrom string
	// Timeout bounds each request; 0: 60 s.
	Timeout time.Duration

	hc *http.Client
}

// where names the socket or URL the client talks to.
func (c *Client) where() string {
	if c.URL != "" {
		return "the admin listener " + c.URL
	}
	return "the admin socket " + c.socket()
}

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

func (c *Client) http() *http.Client {
	if c.hc != nil {
		return c.hc
	}
	c.hc = &http.Client{Timeout: c.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if c.hc.Timeout == 0 {
		c.hc.Timeout = defaultTimeout
	}
	if c.URL == "" {
		sock := c.socket()
		c.hc.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}
	}
	return c.hc
}

// base is the URL that API paths are appended to.
func (c *Client) base() string {
	if c.URL == "" {
		return "http://admin"
	}
	return strings.TrimRight(c.URL, "/")
}

// do sends method path with body (JSON-encoded when not nil) and returns
// the answer's body. An answer other than 200 is an *APIError; a failure
// to connect a *ConnectError.
func (c *Client) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", c.where(), err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.URL != "" && c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, c.connectError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s: reading the answer to %s %s: %v", c.where(), method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, c.apiError(resp, b)
	}
	return b, nil
}

// get decodes the answer to GET path into v and returns it as sent.
func (c *Client) get(ctx context.Context, path string, v any) ([]byte, error) {
	b, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return b, err
	}
	return b, c.decode(path, b, v)
}

// decode decodes the answer b to path into v.
func (c *Client) decode(path string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: the answer to %s is not the admin API's JSON (%v): is this portcullis's admin socket or listener?", c.where(), path, err)
	}
	return nil
}

// ConnectError is a failure to reach the admin API.
type ConnectError struct {
	// Where is the socket or URL, as "the admin socket PATH".
	Where string
	// Err is the error of the connection.
	Err error
	// Remedy says what to check; "" when nothing specific is known.
	Remedy string
}

func (e *ConnectError) Error() string {
	msg := "cannot connect to " + e.Where + ": " + errText(e.Err)
	if e.Remedy != "" {
		msg += ": " + e.Remedy
	}
	return msg
}

func (e *ConnectError) Unwrap() error { return e.Err }

// errText is the innermost, OS-level part of a connection error
// ("permission denied"), or err itself.
func errText(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// connectError explains err, a failed request, with its likely remedy.
func (c *Client) connectError(err error) error {
	e := &ConnectError{Where: c.where(), Err: err}
	switch {
	case c.URL == "" && errors.Is(err, syscall.EACCES):
		e.Remedy = "only root and members of the socket's group" + c.socketGroup() + " may use it (admin.socket, global.group)"
	case c.URL == "" && errors.Is(err, syscall.ENOENT):
		e.Remedy = "is portcullis running with admin.socket set to this path? (give another with -s SOCKET, or use -url http://ADMIN.LISTEN)"
	case c.URL == "" && errors.Is(err, syscall.ECONNREFUSED):
		e.Remedy = "the socket file exists but nothing serves it: is portcullis running?"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Remedy = "is portcullis running with admin.listen set to this address?"
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		e.Remedy = "no answer in time: the process may be overloaded or stopped (SIGSTOP)"
	}
	return e
}

// socketGroup names the socket's group, as " (NAME)", or "".
func (c *Client) socketGroup() string {
	fi, err := os.Stat(c.socket())
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	gid := fmt.Sprint(st.Gid)
	if g, err := user.LookupGroupId(gid); err == nil {
		return " (" + g.Name + ")"
	}
	return " (gid " + gid + ")"
}

// APIError is an answer of the API other than 200.
type APIError struct {
	// Status is the HTTP status code: 400 a bad value, 404 an unknown
	// backend or server, 401/403 credentials, 422 a refused reload.
	Status int
	// Message is the API's "error"; Errors its "errors" (a refused
	// reload's FILE:LINE:COL lines).
	Message string
	Errors  []string
	// Hint is what ctl adds to the message (which flag gives a token).
	Hint string
}

func (e *APIError) Error() string {
	msg := e.Message
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	for _, l := range e.Errors {
		msg += "\n" + l
	}
	return msg
}

// apiError decodes the error answer b of resp.
func (c *Client) apiError(resp *http.Response, b []byte) error {
	var v struct {
		Error  string   `json:"error"`
		Errors []string `json:"errors"`
	}
	e := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(b, &v) == nil && v.Error != "" {
		e.Message, e.Errors = v.Error, v.Errors
	} else {
		e.Message = fmt.Sprintf("%s answered %s to %s %s: %s", c.where(), resp.Status, resp.Request.Method, resp.Request.URL.Path, firstLine(b))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && c.URL != "":
		e.Hint = "portcullis ctl takes it from -token-file FILE or $" + TokenEnv
	case resp.StatusCode == http.StatusForbidden && c.Token != "":
		e.Hint = "the token sent came from " + c.TokenFrom
	}
	return e
}

// firstLine is the first line of b, at most 200 bytes.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "(no body)"
	}
	return s
}
