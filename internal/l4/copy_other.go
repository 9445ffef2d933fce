//go:build !linux

package l4

import "net"

// newProgressProbe returns nil: without TCP_INFO the pipe counts the
// bytes it copies.
func newProgressProbe(a, b net.Conn) progressProbe { return nil }
