package attack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// L4IdleOptions configures L4Idle.
type L4IdleOptions struct {
	// Addr is the TCP proxy's host:port. Required.
	Addr string
	// Conns is the number of connections, opened 64 at a time.
	// Default 100; at most 100000.
	Conns int
	// Hold is how long to hold them once all are open. Default 10s; at
	// most 10m.
	Hold time.Duration
	// Timeout bounds each dial. Default 10s; at most 5m.
	Timeout time.Duration
	// Ready, when not nil, is called once every connection is open (or
	// failed), as the holding begins.
	Ready func(opened int)
}

// L4IdleResult is what L4Idle saw.
type L4IdleResult struct {
	// Opened counts the connections accepted; Failed those that were not,
	// the first with FirstErr.
	Opened, Failed int
	FirstErr       error
	// ClosedEarly counts the connections closed by the far side before
	// Hold ran out; FirstClose is the earliest such close, counted from
	// the moment all connections were open.
	ClosedEarly int
	FirstClose  time.Duration
	// Held counts the connections still open when Hold ran out.
	Held int
	// Talked counts the connections on which bytes arrived (a banner from
	// the backend server, say).
	Talked int
}

func (r *L4IdleResult) String() string {
	s := fmt.Sprintf("l4idle: %d opened, %d failed, %d held, %d closed early", r.Opened, r.Failed, r.Held, r.ClosedEarly)
	if r.ClosedEarly > 0 {
		s += fmt.Sprintf(" (first after %v)", r.FirstClose.Round(time.Millisecond))
	}
	if r.Talked > 0 {
		s += fmt.Sprintf(", %d received bytes", r.Talked)
	}
	if r.FirstErr != nil {
		s += fmt.Sprintf("; first failure: %v", r.FirstErr)
	}
	return s
}

// L4Idle opens o.Conns TCP connections to o.Addr and holds them for
// o.Hold, sending nothing. It measures what an idle relayed connection
// costs a layer-4 proxy (descriptors, memory: sample the proxy in
// o.Ready) and whether the proxy closes idle connections.
func L4Idle(ctx context.Context, o L4IdleOptions) (*L4IdleResult, error) {
	if o.Addr == "" {
		return nil, errors.New("attack: L4IdleOptions.Addr is empty: give the proxy's host:port")
	}
	n := bound(o.Conns, 100, 100000)
	hold := bound(o.Hold, 10*time.Second, maxHold)
	d := &net.Dialer{Timeout: bound(o.Timeout, defaultTimeout, maxTimeout)}
	conns, errs := dialAll(ctx, d, o.Addr, n)
	res := &L4IdleResult{}
	var live []net.Conn
	for i, c := range conns {
		if errs[i] != nil {
			res.Failed++
			if res.FirstErr == nil {
				res.FirstErr = errs[i]
			}
			continue
		}
		live = append(live, c)
	}
	res.Opened = len(live)
	opened := time.Now()
	if o.Ready != nil {
		o.Ready(res.Opened)
	}
	deadline := time.Now().Add(hold)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range live {
		stop := closeOnDone(ctx, c)
		wg.Go(func() {
			defer stop()
			defer c.Close()
			c.SetReadDeadline(deadline)
			talked, buf := false, make([]byte, 512)
			for {
				n, err := c.Read(buf)
				talked = talked || n > 0
				if err == nil {
					continue
				}
				mu.Lock()
				defer mu.Unlock()
				if talked {
					res.Talked++
				}
				if endOf(err) == EndTimeout || ctx.Err() != nil {
					res.Held++
					return
				}
				res.ClosedEarly++
				if life := time.Since(opened); res.ClosedEarly == 1 || life < res.FirstClose {
					res.FirstClose = life
				}
				return
			}
		})
	}
	wg.Wait()
	return res, ctx.Err()
}

// dialAll opens n TCP connections to addr, 64 at a time; conns[i] is nil
// where errs[i] is not.
func dialAll(ctx context.Context, d *net.Dialer, addr string, n int) (conns []net.Conn, errs []error) {
	conns, errs = make([]net.Conn, n), make([]error, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(n, 64) {
		wg.Go(func() {
			for i := range jobs {
				conns[i], errs[i] = d.DialContext(ctx, "tcp", addr)
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return conns, errs
}
