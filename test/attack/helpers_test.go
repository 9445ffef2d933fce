package attack

import (
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"golang.org/x/net/http2"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1).
var scaled = testutil.Scaled

// quiet is a logger for servers whose complaints are the test's point.
var quiet = log.New(io.Discard, "", 0)

// listen listens on a free loopback port, closed when the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// startBackend serves b on a loopback port and returns its address.
func startBackend(t *testing.T, b *Backend) string {
	t.Helper()
	l := listen(t)
	go b.Serve(l)
	t.Cleanup(func() { b.Close() })
	return l.Addr().String()
}

// startH2C serves h with s over cleartext HTTP/2 (prior knowledge) on a
// loopback port and returns its address.
func startH2C(t *testing.T, s *http2.Server, h http.Handler) string {
	t.Helper()
	l := listen(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go s.ServeConn(c, &http2.ServeConnOpts{Handler: h, BaseConfig: &http.Server{ErrorLog: quiet}})
		}
	}()
	return l.Addr().String()
}

// target is a Target for addr with the test's time bound.
func target(addr string) Target {
	return Target{Addr: addr, Timeout: scaled(5 * time.Second)}
}
