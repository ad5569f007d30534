package uring

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// register is io_uring_register, retried on EINTR (registration may wait
// for the ring to quiesce). It always uses the real ring fd.
func (r *Ring) register(op uint32, arg unsafe.Pointer, nr uint32) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uintptr(op), uintptr(arg), uintptr(nr), 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		default:
			return 0, errno
		}
	}
}

// RegisterBuffers registers iovs as fixed buffers 0..len(iovs)-1 for
// PrepReadFixed/PrepWriteFixed. The memory must be anonymous (mmap'd, not
// file-backed), each buffer at most 1 GiB; it is pinned and charged to
// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK. Only one table can be
// registered: UnregisterBuffers first to replace it.
func (r *Ring) RegisterBuffers(iovs []unix.Iovec) error {
	if len(iovs) == 0 {
		return fmt.Errorf("io_uring: RegisterBuffers needs at least one buffer")
	}
	if _, err := r.register(registerBuffers, unsafe.Pointer(unsafe.SliceData(iovs)), uint32(len(iovs))); err != nil {
		return fmt.Errorf("io_uring: register %d buffers (ENOMEM: raise RLIMIT_MEMLOCK; EFAULT: memory not anonymous or too large; EBUSY: unregister first): %w", len(iovs), err)
	}
	return nil
}

// UnregisterBuffers drops the fixed-buffer table.
func (r *Ring) UnregisterBuffers() error {
	if _, err := r.register(unregisterBuffers, nil, 0); err != nil {
		return fmt.Errorf("io_uring: unregister buffers: %w", err)
	}
	return nil
}

// RegisterFiles registers fds as fixed files 0..len(fds)-1 (SQEFixedFile
// makes SQE.Fd an index into this table). The kernel reads 32-bit fds; -1
// leaves a slot empty. Only one table can be registered at a time.
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return fmt.Errorf("io_uring: RegisterFiles needs at least one fd")
	}
	if _, err := r.register(registerFiles, unsafe.Pointer(unsafe.SliceData(fds)), uint32(len(fds))); err != nil {
		return fmt.Errorf("io_uring: register %d files (EBUSY: unregister first; EBADF: an fd is not open): %w", len(fds), err)
	}
	return nil
}

// UnregisterFiles drops the fixed-file table.
func (r *Ring) UnregisterFiles() error {
	if _, err := r.register(unregisterFiles, nil, 0); err != nil {
		return fmt.Errorf("io_uring: unregister files: %w", err)
	}
	return nil
}

// RegisterEventfd makes the kernel signal eventfd fd whenever it posts a
// CQE, so a ring can be watched with epoll. With SetupDeferTaskrun the
// signal means "enter with GETEVENTS", not "CQEs are in the ring".
func (r *Ring) RegisterEventfd(fd int) error {
	efd := int32(fd)
	if _, err := r.register(registerEventfd, unsafe.Pointer(&efd), 1); err != nil {
		return fmt.Errorf("io_uring: register eventfd %d: %w", fd, err)
	}
	return nil
}

// UnregisterEventfd undoes RegisterEventfd.
func (r *Ring) UnregisterEventfd() error {
	if _, err := r.register(unregisterEventfd, nil, 0); err != nil {
		return fmt.Errorf("io_uring: unregister eventfd: %w", err)
	}
	return nil
}

// Probe asks the kernel which opcodes it supports (Linux 5.6+).
func (r *Ring) Probe() (*Probe, error) {
	p := new(Probe)
	if _, err := r.register(registerProbe, unsafe.Pointer(p), probeOps); err != nil {
		return nil, fmt.Errorf("io_uring: probe opcodes (needs Linux 5.6+): %w", err)
	}
	return p, nil
}

// registerRing registers the ring fd with the calling thread; on failure
// (kernel before 5.18) the ring keeps entering through its plain fd.
func (r *Ring) registerRing() {
	up := rsrcUpdate{Offset: ^uint32(0), Data: uint64(r.fd)}
	if n, err := r.register(registerRingFds, unsafe.Pointer(&up), 1); err == nil && n == 1 {
		r.ringIndex = int(up.Offset)
		r.enterFd = r.ringIndex
		r.enterFlags |= enterRegisteredRing
	}
}
