//go:build !linux

package l4

import (
	"io"
	"net"
	"sync/atomic"
)

// copyStream copies src to dst, adding to moved what it moves, until
// src's end of stream (nil) or an error.
func copyStream(dst, src net.Conn, moved *atomic.Int64) error {
	n, err := io.Copy(dst, src)
	moved.Add(n)
	return err
}
