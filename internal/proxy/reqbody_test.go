package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// http.Transport returns the error its request body's Read returned: for
// an HTTP/1.1 server from the write loop (the request's own error), for
// an HTTP/2 server from the stream's body writer. So a client's body
// fault reaches the round trip's errors.As through either.
func TestTransportReturnsBodyError(t *testing.T) {
	for _, up := range upstreamProtocols {
		t.Run(up, func(t *testing.T) {
			srv := startBodyUpstream(t, up)
			u := Upstream{Protocol: up, ServerTimeout: 60 * time.Second, IdleTimeout: 90 * time.Second, MaxIdlePerServer: 1024}
			tr := newTransport(u, 5*time.Second, nil)
			t.Cleanup(tr.CloseIdleConnections)
			body := &clientBody{rc: io.NopCloser(&errReader{data: "0123456789", err: errors.New("invalid byte in chunk length")})}
			req, _ := http.NewRequest("POST", "http://"+srv.addr+"/", body)
			req.ContentLength = -1
			_, err := tr.RoundTrip(req)
			var cb *clientBodyError
			if !errors.As(err, &cb) || cb.kind != bodyMalformed {
				t.Fatalf("RoundTrip: %v (%T), want the body's *clientBodyError", err, err)
			}
			if statusFor(err) != http.StatusBadRequest || serverFault(err) {
				t.Errorf("status %d, server's fault %v; want 400, the client's", statusFor(err), serverFault(err))
			}
		})
	}
}

// errReader returns its data, then err.
type errReader struct {
	data string
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestClassifyBodyError(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		ctx  context.Context
		want bodyFault
	}{
		{errors.New("invalid byte in chunk length"), context.Background(), bodyMalformed},
		{errors.New("request declared a Content-Length of 10 but only wrote 3 bytes"), context.Background(), bodyMalformed},
		{&http.MaxBytesError{Limit: 10}, context.Background(), bodyTooLarge},
		{&net.OpError{Op: "read", Err: errTimeout{}}, context.Background(), bodyTimeout},
		{io.ErrUnexpectedEOF, context.Background(), bodyAborted},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, context.Background(), bodyAborted},
		{errors.New("client disconnected"), done, bodyAborted},
	} {
		if got := classifyBodyError(tc.err, tc.ctx); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
