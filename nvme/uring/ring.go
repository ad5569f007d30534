package uring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring is one io_uring instance: the mmap'd SQ, CQ and SQE array plus the
// Ring-owned argument memory the kernel reads (timespecs, getevents_arg).
//
// A Ring is not safe for concurrent use: one goroutine, locked to its OS
// thread, creates it and calls every method (see the package comment).
type Ring struct {
	fd         int    // ring fd (for io_uring_register and close)
	enterFd    int    // fd or registered-ring index passed to io_uring_enter
	enterFlags uint32 // enterRegisteredRing once the ring fd is registered
	ringIndex  int    // registered-ring index, -1 when not registered
	flags      uint32 // setup flags the kernel accepted
	features   uint32

	// SQ ring.
	kSQHead, kSQTail, kSQFlags, kSQDropped *uint32
	sqMask, sqEntries                      uint32
	sqeTail                                uint32 // next SQE GetSQE hands out (free-running)
	sqePublished                           uint32 // last tail stored into kSQTail
	sqes                                   []SQE

	// CQ ring.
	kCQHead, kCQTail, kCQOverflow *uint32
	cqMask, cqEntries             uint32
	cqes                          []CQE

	// Mappings, kept to unmap with the same sizes.
	sqRing, cqRing, sqesMem          unsafe.Pointer
	sqRingSize, cqRingSize, sqesSize uintptr

	// Kernel-read argument memory owned by the Ring. timeouts has one slot
	// per SQE so a prepared TIMEOUT's timespec stays valid until the kernel
	// consumed that SQE; waitTS and waitArg serve SubmitAndWaitTimeout.
	timeouts []Timespec
	waitTS   Timespec
	waitArg  getEventsArg
}

// Option configures New.
type Option func(*config)

type config struct {
	params         Params
	registerRingFd bool
}

// WithFlags adds setup flags (Setup* constants). New drops the optional ones
// (see New) when the kernel is too old for them.
func WithFlags(flags uint32) Option {
	return func(c *config) { c.params.Flags |= flags }
}

// WithCQSize asks for a CQ of n entries (rounded up to a power of two by the
// kernel); n must be at least the SQ size. Sets SetupCQSize.
func WithCQSize(n uint32) Option {
	return func(c *config) {
		c.params.Flags |= SetupCQSize
		c.params.CQEntries = n
	}
}

// WithSQPoll starts a kernel SQ polling thread that sleeps after idle without
// work (millisecond resolution). When cpu >= 0 the thread is pinned to that
// CPU (SetupSQAff). SQPOLL cannot be combined with SetupDeferTaskrun.
func WithSQPoll(idle time.Duration, cpu int) Option {
	return func(c *config) {
		c.params.Flags |= SetupSQPoll
		c.params.SQThreadIdle = uint32(idle / time.Millisecond)
		if cpu >= 0 {
			c.params.Flags |= SetupSQAff
			c.params.SQThreadCPU = uint32(cpu)
		}
	}
}

// WithRegisteredRing registers the ring fd with the calling thread
// (IORING_REGISTER_RING_FDS, Linux 5.18) so io_uring_enter skips the fd
// lookup. The registration belongs to that thread: every Submit and Close
// must then come from it, which the ownership rule requires anyway. If the
// kernel refuses, the Ring silently keeps using the plain fd.
func WithRegisteredRing() Option {
	return func(c *config) { c.registerRingFd = true }
}

// New creates a ring with at least entries SQEs on the calling thread.
//
// If the kernel rejects the flags with EINVAL, New drops the newest optional
// flag (NO_SQARRAY, DEFER_TASKRUN, SINGLE_ISSUER, TASKRUN_FLAG, COOP_TASKRUN,
// SUBMIT_ALL, in that order) and retries; dropping DEFER_TASKRUN while
// TASKRUN_FLAG is set substitutes COOP_TASKRUN, which TASKRUN_FLAG needs.
// Once a set is accepted it tries to add each dropped flag back, oldest
// first, so a flag that was only incompatible with another one (SQPOLL
// rejects every TASKRUN flag, for example) is not lost with it. Flags
// reports what was granted. Errors wrap the errno: ENOSYS and EPERM mean
// io_uring is unavailable (see Available).
func New(entries uint32, opts ...Option) (*Ring, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	var dropped []uint32
	for {
		p := c.params
		err := trySetup(entries, &p)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		f := newestDroppable(c.params.Flags)
		if f == 0 {
			return nil, err
		}
		c.params.Flags &^= f
		if f == SetupDeferTaskrun && c.params.Flags&SetupTaskrunFlag != 0 {
			c.params.Flags |= SetupCoopTaskrun
		}
		dropped = append(dropped, f)
	}
	for i := len(dropped) - 1; i >= 0; i-- {
		p := c.params
		p.Flags |= dropped[i]
		if trySetup(entries, &p) == nil {
			c.params.Flags |= dropped[i]
		}
	}
	p := c.params
	r, err := Setup(entries, &p)
	if err != nil {
		return nil, err
	}
	if c.registerRingFd {
		r.registerRing()
	}
	return r, nil
}

// droppable lists, newest kernel first, the setup flags New removes one at a
// time when io_uring_setup fails with EINVAL.
var droppable = [...]uint32{
	SetupNoSQArray, SetupDeferTaskrun, SetupSingleIssuer,
	SetupTaskrunFlag, SetupCoopTaskrun, SetupSubmitAll,
}

func newestDroppable(flags uint32) uint32 {
	for _, f := range droppable {
		if flags&f != 0 {
			return f
		}
	}
	return 0
}

// trySetup asks the kernel whether it accepts p (creating and closing a
// ring without mapping it).
func trySetup(entries uint32, p *Params) error {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup(entries=%d, flags=%#x): %w", entries, p.Flags, errno)
	}
	unix.Close(int(fd))
	return nil
}

// Setup is the low-level constructor: io_uring_setup with p exactly as given
// (no flag fallback), then the mmaps. On return p holds what the kernel
// filled in (entries, features, ring offsets).
func Setup(entries uint32, p *Params) (*Ring, error) {
	if p.Flags&setupUnsupported != 0 {
		return nil, fmt.Errorf("io_uring_setup: flags %#x include SQE128, CQE32, NO_MMAP or REGISTERED_FD_ONLY, which this binding does not support; remove them", p.Flags&setupUnsupported)
	}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(entries=%d, flags=%#x): %w", entries, p.Flags, errno)
	}
	r := &Ring{fd: int(fd), enterFd: int(fd), ringIndex: -1, flags: p.Flags, features: p.Features}
	if err := r.mapRings(p); err != nil {
		r.unmap()
		unix.Close(r.fd)
		return nil, err
	}
	return r, nil
}

func (r *Ring) mapRings(p *Params) error {
	const prot = unix.PROT_READ | unix.PROT_WRITE
	const flags = unix.MAP_SHARED | unix.MAP_POPULATE
	r.sqRingSize = uintptr(p.SQOff.Array) + uintptr(p.SQEntries)*4
	r.cqRingSize = uintptr(p.CQOff.CQEs) + uintptr(p.CQEntries)*unsafe.Sizeof(CQE{})
	if p.Features&FeatSingleMmap != 0 {
		r.sqRingSize = max(r.sqRingSize, r.cqRingSize)
		r.cqRingSize = 0 // shares sqRing
	}
	var err error
	if r.sqRing, err = unix.MmapPtr(r.fd, offSQRing, nil, r.sqRingSize, prot, flags); err != nil {
		r.sqRing = nil
		return fmt.Errorf("io_uring: mmap SQ ring (%d bytes): %w", r.sqRingSize, err)
	}
	r.cqRing = r.sqRing
	if r.cqRingSize != 0 {
		if r.cqRing, err = unix.MmapPtr(r.fd, offCQRing, nil, r.cqRingSize, prot, flags); err != nil {
			r.cqRing = nil
			return fmt.Errorf("io_uring: mmap CQ ring (%d bytes): %w", r.cqRingSize, err)
		}
	}
	r.sqesSize = uintptr(p.SQEntries) * unsafe.Sizeof(SQE{})
	if r.sqesMem, err = unix.MmapPtr(r.fd, offSQEs, nil, r.sqesSize, prot, flags); err != nil {
		r.sqesMem = nil
		return fmt.Errorf("io_uring: mmap SQE array (%d bytes): %w", r.sqesSize, err)
	}

	sq := r.sqRing
	u32 := func(base unsafe.Pointer, off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.kSQHead = u32(sq, p.SQOff.Head)
	r.kSQTail = u32(sq, p.SQOff.Tail)
	r.kSQFlags = u32(sq, p.SQOff.Flags)
	r.kSQDropped = u32(sq, p.SQOff.Dropped)
	r.sqMask = *u32(sq, p.SQOff.RingMask)
	r.sqEntries = *u32(sq, p.SQOff.RingEntries)
	r.sqes = unsafe.Slice((*SQE)(r.sqesMem), p.SQEntries)
	if p.Flags&SetupNoSQArray == 0 {
		// SQEs are always handed out in ring order, so the indirection
		// array is the identity, written once.
		array := unsafe.Slice(u32(sq, p.SQOff.Array), p.SQEntries)
		for i := range array {
			array[i] = uint32(i)
		}
	}
	r.sqeTail = atomic.LoadUint32(r.kSQTail)
	r.sqePublished = r.sqeTail

	cq := r.cqRing
	r.kCQHead = u32(cq, p.CQOff.Head)
	r.kCQTail = u32(cq, p.CQOff.Tail)
	r.kCQOverflow = u32(cq, p.CQOff.Overflow)
	r.cqMask = *u32(cq, p.CQOff.RingMask)
	r.cqEntries = *u32(cq, p.CQOff.RingEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Add(cq, p.CQOff.CQEs)), p.CQEntries)

	r.timeouts = make([]Timespec, p.SQEntries)
	return nil
}

func (r *Ring) unmap() {
	if r.sqesMem != nil {
		unix.MunmapPtr(r.sqesMem, r.sqesSize)
	}
	if r.cqRing != nil && r.cqRing != r.sqRing {
		unix.MunmapPtr(r.cqRing, r.cqRingSize)
	}
	if r.sqRing != nil {
		unix.MunmapPtr(r.sqRing, r.sqRingSize)
	}
	r.sqesMem, r.cqRing, r.sqRing = nil, nil, nil
	r.sqes, r.cqes = nil, nil
}

// Close unregisters the ring fd (if registered), unmaps the rings and closes
// the fd; the kernel cancels whatever is still in flight. Call it from the
// owning thread, after every buffer the kernel may still write is no longer
// needed. Close is idempotent.
func (r *Ring) Close() error {
	if r.fd < 0 {
		return nil
	}
	var err error
	if r.ringIndex >= 0 {
		up := rsrcUpdate{Offset: uint32(r.ringIndex)}
		if _, e := r.register(unregisterRingFds, unsafe.Pointer(&up), 1); e != nil {
			err = fmt.Errorf("io_uring: unregister ring fd (Close must run on the thread that created the ring): %w", e)
		}
		r.ringIndex = -1
	}
	r.unmap()
	if e := unix.Close(r.fd); e != nil && err == nil {
		err = os.NewSyscallError("close", e)
	}
	r.fd = -1
	return err
}

// Fd returns the ring's file descriptor (for epoll, or -1 after Close).
func (r *Ring) Fd() int { return r.fd }

// Flags returns the setup flags the kernel accepted (after New's fallbacks).
func (r *Ring) Flags() uint32 { return r.flags }

// Features returns the kernel's Feat* bits.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries and CQEntries return the ring sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries returns the CQ size.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// RegisteredRing reports whether io_uring_enter uses a registered ring index.
func (r *Ring) RegisteredRing() bool { return r.ringIndex >= 0 }
