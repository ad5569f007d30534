package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// disabledSysctl is the sysctl that gates io_uring (Linux 6.6+): 0 allows
// it, 1 allows it only for kernel.io_uring_group members and CAP_SYS_ADMIN,
// 2 forbids it for everyone.
const disabledSysctl = "/proc/sys/kernel/io_uring_disabled"

// UnavailableError says why io_uring cannot be used here. Reason is short
// and fit for a log line; Err is the underlying errno (ENOSYS or EPERM).
type UnavailableError struct {
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string { return e.Reason }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Available reports whether this process can use io_uring: nil if so, else an
// *UnavailableError saying why and what to change. It reads
// /proc/sys/kernel/io_uring_disabled, then creates and closes a 4-entry ring.
func Available() error { return availability(disabledSysctl) }

func availability(sysctlPath string) error {
	disabled := "0"
	if b, err := os.ReadFile(sysctlPath); err == nil {
		disabled = strings.TrimSpace(string(b))
	}
	if disabled == "2" {
		return &UnavailableError{
			Reason: "io_uring_disabled=2; set sysctl kernel.io_uring_disabled=0 to allow io_uring",
			Err:    unix.EPERM,
		}
	}
	var p Params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno == 0 {
		unix.Close(int(fd))
		return nil
	}
	switch {
	case errors.Is(errno, unix.ENOSYS):
		return &UnavailableError{Reason: "io_uring_setup: ENOSYS; the kernel lacks io_uring (or a sandbox such as gVisor hides it)", Err: errno}
	case errors.Is(errno, unix.EPERM) && disabled == "1":
		return &UnavailableError{Reason: "io_uring_disabled=1 and this process is neither in kernel.io_uring_group nor CAP_SYS_ADMIN", Err: errno}
	case errors.Is(errno, unix.EPERM):
		return &UnavailableError{Reason: "io_uring_setup: EPERM; a seccomp profile (e.g. Docker's default) blocks io_uring", Err: errno}
	default:
		return &UnavailableError{Reason: fmt.Sprintf("io_uring_setup failed: %v", errno), Err: errno}
	}
}
