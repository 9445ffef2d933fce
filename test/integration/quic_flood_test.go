package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/test/attack"
)

// floodRetryInProgress is the default retry_in_progress: half of the
// default max_handshakes, 2000 (internal/config/quic.go).
const floodRetryInProgress = 1000

// handshakeKiB is what one QUIC handshake in progress costs portcullis in
// resident memory, rounded up: measured at about 110 KiB of VmRSS per
// handshake (quic-go's connection and TLS state, about 48 KiB of live heap
// and 20 KiB of goroutine stacks, plus the garbage collector's headroom).
const handshakeKiB = 128

// TestQUICInitialFlood sends 30,000 genuine QUIC Initials (real
// ClientHellos, each with its own connection ID, from 30,000 source
// addresses) at 900 per second, just under retry_rate, so that the rate
// alone never calls for Retry: only the bound on handshakes in progress
// holds them. Meanwhile a legitimate HTTP/3 client makes requests, each on
// a new connection (a handshake during the flood, through Retry when the
// limit fires): every one must succeed. portcullis's memory must stay
// within its baseline plus retry_in_progress handshakes (an unvalidated
// client is sent a Retry beyond it, and the flood never answers one) at
// handshakeKiB each, plus a margin; and the limit must be logged once a
// second, not once per packet. (Before: the HTTP/3 server took each
// connection before its handshake completed and kept it for its idle
// timeout, 120s, handshake failed or not: 1.4 GB after this flood, and
// legitimate requests refused.)
func TestQUICInitialFlood(t *testing.T) {
	const (
		count = 30000
		rate  = 900
		// margin covers the baseline's own growth under load (the
		// legitimate client's connections, packet buffers, the
		// collector's timing).
		marginKiB = 48 << 10
	)
	s := quicSite(t, true, 2)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()
	for i := range 3 {
		if err := h3Fresh(s, fmt.Sprintf("/warm/%d", i)); err != nil {
			t.Fatalf("before the flood: %v", err)
		}
	}
	baseline := procStatusKiB(t, p.pid(), "VmRSS")
	mark := len(p.stderr.String())

	var ok atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if err := h3Fresh(s, fmt.Sprintf("/legit/%d/%d", w, i)); err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				} else {
					ok.Add(1)
				}
			}
		})
	}
	var peak atomic.Int64
	wg.Go(func() {
		for {
			if n, err := readStatusKiB(p.pid(), "VmRSS"); err == nil {
				peak.Store(max(peak.Load(), int64(n)))
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	})

	began := time.Now()
	res, err := attack.QUICFlood(context.Background(), attack.QUICFloodOptions{
		Target: attack.Target{Addr: quicTarget.String(), Timeout: 6 * time.Second},
		Count:  count,
		Rate:   rate,
	})
	flood := time.Since(began)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	hwm := procStatusKiB(t, p.pid(), "VmHWM")
	after := procStatusKiB(t, p.pid(), "VmRSS")
	t.Log(res)
	t.Logf("portcullis memory: VmRSS %d MiB before the flood, at most %d MiB during it (VmHWM %d MiB), %d MiB after; %d legitimate HTTP/3 requests succeeded, %d failed",
		baseline>>10, peak.Load()>>10, hwm>>10, after>>10, ok.Load(), len(failures))

	if res.Sent != count || res.Addresses != count {
		t.Fatalf("the flood sent %d Initials from %d addresses, want %d from %d", res.Sent, res.Addresses, count, count)
	}
	// The flood was real: portcullis started handshakes for it, and
	// sent Retry once retry_in_progress of them were in progress.
	if res.Handshake < floodRetryInProgress || res.Retry < count/2 {
		t.Errorf("portcullis started %d handshakes and sent %d Retries; want at least %d handshakes (the Initials are genuine) and Retry for at least half the Initials (beyond retry_in_progress handshakes in progress, every unvalidated client must get one)",
			res.Handshake, res.Retry, floodRetryInProgress)
	}
	bound := baseline + floodRetryInProgress*handshakeKiB + marginKiB
	if hwm > bound {
		t.Errorf("VmHWM %d MiB during the flood; want at most %d MiB: the baseline (%d MiB) + retry_in_progress (%d) handshakes of %d KiB + %d MiB",
			hwm>>10, bound>>10, baseline>>10, floodRetryInProgress, handshakeKiB, marginKiB>>10)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d legitimate HTTP/3 requests failed during the flood; first ones:\n%s",
			len(failures), int(ok.Load())+len(failures), strings.Join(failures[:min(len(failures), 5)], "\n"))
	}
	if ok.Load() < 50 {
		t.Errorf("only %d legitimate HTTP/3 requests succeeded during the %v flood", ok.Load(), flood.Round(time.Second))
	}

	// The limit is logged with its name, frontend and address, one line
	// a second with a count, not one line per Initial.
	lines := logsWith(p, mark, `msg="limit reached, Retry sent"`)
	if len(lines) == 0 {
		t.Fatalf("no log line says Retry was sent under the flood:\n%s", p.stderr.String()[mark:])
	}
	perLimit := map[string]int{}
	countRE := regexp.MustCompile(` limit=(\S+) frontend=web address=127\.0\.0\.1:443 count=(\d+) interval=1s`)
	logged := 0
	for _, l := range lines {
		m := countRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("a limit line lacks the limit's name, frontend, address or count: %s", l)
		}
		perLimit[m[1]]++
		n, _ := strconv.Atoi(m[2])
		logged += n
	}
	seconds := int(flood/time.Second) + 3
	for name, n := range perLimit {
		if n > seconds {
			t.Errorf("%d lines for limit %s in a flood of %v: want at most one a second", n, name, flood.Round(time.Second))
		}
	}
	if perLimit["retry_in_progress"] == 0 || logged < res.Retry/2 {
		t.Errorf("limit lines %v counting %d Retries; want retry_in_progress among them, and about the %d Retries seen", perLimit, logged, res.Retry)
	}
	p.stop()
}

// h3Fresh makes one HTTP/3 request for path on a new QUIC connection (a
// new handshake) and checks that the upstream answered it.
func h3Fresh(s *site, path string) error {
	udp, err := loopbackUDP()
	if err != nil {
		return err
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
	defer cancel()
	tlsConf := &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}
	conn, err := tr.Dial(ctx, quicTarget, tlsConf, &quic.Config{HandshakeIdleTimeout: scaled(10 * time.Second), MaxIdleTimeout: quicIdleTimeout})
	if err != nil {
		return fmt.Errorf("GET %s: QUIC handshake: %w", path, err)
	}
	c := &h3Conn{conn: conn, cc: (&http3.Transport{}).NewClientConn(conn), trs: []*quic.Transport{tr}}
	defer conn.CloseWithError(0, "")
	return c.get(path)
}

// procStatusKiB reads a memory field of /proc/PID/status ("VmRSS",
// "VmHWM") in KiB.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	n, err := readStatusKiB(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readStatusKiB(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
