package accept

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestListenerClose(t *testing.T) {
	l := NewListener(&net.TCPAddr{})
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept during Close: %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if l.Forward(context.Background(), &Conn{}) {
		t.Error("forwarded to a closed Listener")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if NewListener(nil).Forward(ctx, &Conn{}) {
		t.Error("forwarded after the context ended")
	}
}
