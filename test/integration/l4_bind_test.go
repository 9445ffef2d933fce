package integration

import (
	"fmt"
	"testing"
)

// TestL4BindIPv4Wildcard starts portcullis as root, dropping to nobody,
// with a tcp and a udp frontend bound to 0.0.0.0 (every IPv4 address,
// written out): it must start, and serve on any loopback address, with
// each UDP reply from the address the client sent to.
func TestL4BindIPv4Wildcard(t *testing.T) {
	echo := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	dns := startUp(t, "d1", "127.0.0.1:0", "-udp-echo")
	startL4(t, l4PrivConfig(l4Global, "0.0.0.0:7002", "0.0.0.0:5354", echo.addr, dns.addr, false), nil)
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		checkL4Serves(t, fmt.Sprintf("%s:7002", ip), fmt.Sprintf("%s:5354", ip))
	}
}
