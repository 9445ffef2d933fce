//go:build !linux

package l4

import (
	"io"
	"net"
)

// copyStream copies src to dst until src's end of stream (nil) or an
// error.
func copyStream(dst, src net.Conn) error {
	_, err := io.Copy(dst, src)
	return err
}
