//go:build !linux

package l4

import "syscall"

// synUnanswered reports true: without TCP_INFO every connect timeout
// counts against the server.
func synUnanswered(rc syscall.RawConn) (bool, string) { return true, "" }
