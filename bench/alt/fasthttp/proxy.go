package main

import (
	"errors"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

// proxy forwards every request to one backend over a pool of keep-alive
// connections.
type proxy struct {
	client *fasthttp.HostClient
	log    *log.Logger
}

// newProxy builds the proxy in front of backend (host:port, plain
// HTTP/1.1). With stream, response bodies are relayed as they arrive
// rather than read whole first (fasthttp's default).
func newProxy(backend string, stream bool, logger *log.Logger) *proxy {
	return &proxy{
		log: logger,
		client: &fasthttp.HostClient{
			Addr: backend,
			// Far above the 32 connections of the benchmark: a request
			// waits at most MaxConnWaitTimeout for a free one (as
			// portcullis's queue waits 5s by default).
			MaxConns:           1024,
			MaxConnWaitTimeout: 5 * time.Second,
			// portcullis's pool closes connections idle 90s.
			MaxIdleConnDuration: 90 * time.Second,
			// The whole response, body included (portcullis's 60s bounds
			// the wait for the headers only).
			ReadTimeout: 60 * time.Second,
			// One retry, for a keep-alive connection the backend closed
			// meanwhile; fasthttp's default is 5 attempts of idempotent
			// requests. A request with a streamed body is never retried.
			MaxIdemponentCallAttempts: 2,
			// A proxy forwards the client's User-Agent, or none.
			NoDefaultUserAgentHeader: true,
			// Forward the path as the client sent it.
			DisablePathNormalizing: true,
			StreamResponseBody:     stream,
		},
	}
}

// serve is the request handler: sanitize, forward, sanitize the response.
// The server writes ctx.Response once serve returns (a streamed body is
// copied then, and its backend connection released after).
func (p *proxy) serve(ctx *fasthttp.RequestCtx) {
	req, resp := &ctx.Request, &ctx.Response
	tls := ctx.IsTLS()
	sanitizeRequest(&req.Header, ctx.RemoteAddr(), tls)
	// Send the client's Host, not the host of the parsed URI (they are the
	// same unless the request line was absolute-form).
	req.UseHostHeader = true
	if tls {
		// The backend is plain HTTP: HostClient refuses a request whose
		// URI is https.
		req.URI().SetScheme("http")
	}
	if err := p.client.Do(req, resp); err != nil {
		p.fail(ctx, err)
		return
	}
	sanitizeResponse(&resp.Header)
}

// fail is the one error path of a request: 504 when the backend took too
// long, 503 when no connection to it was free in time, 502 otherwise; one
// log line; a short body in place of whatever the response held.
func (p *proxy) fail(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadGateway
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout):
		status = fasthttp.StatusGatewayTimeout
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		status = fasthttp.StatusServiceUnavailable
	}
	p.log.Printf("request failed: status=%d method=%s host=%s uri=%s client=%s error=%v",
		status, ctx.Method(), ctx.Host(), ctx.RequestURI(), ctx.RemoteAddr(), err)
	ctx.Error(fasthttp.StatusMessage(status)+"\n", status)
}
