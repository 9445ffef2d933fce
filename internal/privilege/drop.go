package privilege

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Target is who to become.
type Target struct {
	// Switch is true when the process must change user: started as root
	// with global.user set.
	Switch   bool
	UID, GID int
}

// ExecDropped drops privileges on the calling thread and re-executes the
// running binary in its place (same PID) with argv and env. It never
// returns on success.
//
// Why exec: no_new_privs and the capability sets are per-thread, and a Go
// process has many threads; in a cgo build Go cannot run a syscall on all of
// them (syscall.AllThreadsSyscall returns ENOTSUP). execve keeps only the
// calling thread, so every thread the new image starts inherits its state.
//
// On the locked thread, in order: drop the bounding set (when allowed),
// setgroups/setresgid/setresuid to the target (the kernel then clears
// permitted, effective and ambient capabilities), clear inheritable and
// ambient sets, set PR_SET_NO_NEW_PRIVS, execve("/proc/self/exe"). Files the
// new image needs must not be close-on-exec.
func ExecDropped(t Target, argv, env []string) error {
	runtime.LockOSThread() // never unlocked: on failure the thread is tainted and dies with the goroutine
	if t.Switch {
		// Without CAP_SETPCAP this fails with EPERM; the bounding set then
		// stays as it is (it grants nothing by itself).
		for c := 0; c <= lastCap; c++ {
			unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0)
		}
		gids := []uint32{uint32(t.GID)}
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 1, uintptr(unsafe.Pointer(&gids[0])), 0); e != 0 {
			return fmt.Errorf("setgroups(%d): %w", t.GID, e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(t.GID), uintptr(t.GID), uintptr(t.GID)); e != 0 {
			return fmt.Errorf("setresgid(%d): %w", t.GID, e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(t.UID), uintptr(t.UID), uintptr(t.UID)); e != 0 {
			return fmt.Errorf("setresuid(%d): %w", t.UID, e)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := unix.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset (clear all): %w", e)
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_CAP_AMBIENT_CLEAR_ALL): %w", e)
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	err := syscall.Exec("/proc/self/exe", argv, env)
	return fmt.Errorf("re-execute /proc/self/exe after dropping privileges: %w", err)
}

// Verify checks every thread after the drop: no user ID 0 (unless
// allowRoot), no capability in the inheritable, permitted, effective or
// ambient set, no_new_privs set when wantNoNewPrivs, and that setuid(0)
// fails.
func Verify(allowRoot, wantNoNewPrivs bool) error {
	threads, err := Threads()
	if err != nil {
		return fmt.Errorf("read thread states: %w", err)
	}
	var errs []error
	for _, t := range threads {
		if !allowRoot && t.IsRoot() {
			errs = append(errs, fmt.Errorf("thread %d still has uid 0 (%v)", t.TID, t.UIDs))
		}
		if !allowRoot && t.HasCaps() {
			errs = append(errs, fmt.Errorf("thread %d still has capabilities: permitted %s, effective %s, ambient %s, inheritable %s",
				t.TID, CapNames(t.Prm), CapNames(t.Eff), CapNames(t.Amb), CapNames(t.Inh)))
		}
		if wantNoNewPrivs && !t.NoNewPrivs {
			errs = append(errs, fmt.Errorf("thread %d has no_new_privs unset", t.TID))
		}
	}
	if !allowRoot {
		if err := setuidFails(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// setuidFails tries to regain root on a locked thread and reports an error
// if that worked. The thread is discarded afterwards.
func setuidFails() error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		_, _, e := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0)
		if e == 0 {
			// Root came back: nothing this process does can be trusted.
			fmt.Fprintln(os.Stderr, "portcullis: setuid(0) succeeded after dropping privileges; exiting")
			os.Exit(1)
		}
		res <- nil
	}()
	return <-res
}
