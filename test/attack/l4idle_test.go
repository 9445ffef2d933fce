package attack

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

func TestL4Idle(t *testing.T) {
	// Close every other connection after 50ms; hold the rest.
	l := listen(t)
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if i%2 == 1 {
				time.AfterFunc(50*time.Millisecond, func() { c.Close() })
				continue
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	opened := -1
	res, err := L4Idle(context.Background(), L4IdleOptions{
		Addr: l.Addr().String(), Conns: 10, Hold: scaled(500 * time.Millisecond),
		Ready: func(n int) { opened = n },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if opened != 10 || res.Opened != 10 || res.Failed != 0 || res.Held != 5 || res.ClosedEarly != 5 {
		t.Fatalf("want 10 opened, 5 held, 5 closed early; got Ready(%d), %v", opened, res)
	}
}

func TestL4IdleRefused(t *testing.T) {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	res, err := L4Idle(context.Background(), L4IdleOptions{Addr: addr, Conns: 3, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 3 || res.FirstErr == nil || res.Opened != 0 {
		t.Fatalf("want 3 failures, got %v", res)
	}
}
