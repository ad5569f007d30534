package uring

import (
	"errors"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errNoExtArg is returned by SubmitAndWaitTimeout on kernels before 5.11.
var errNoExtArg = errors.New("io_uring: SubmitAndWaitTimeout needs IORING_FEAT_EXT_ARG (Linux 5.11+); use SubmitAndWait with a linked or standalone PrepTimeout instead")

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full (submit
// and retry). The SQE belongs to the caller until the next Submit*; it is
// not visible to the kernel before then.
func (r *Ring) GetSQE() *SQE {
	if r.sqeTail-atomic.LoadUint32(r.kSQHead) >= r.sqEntries {
		return nil
	}
	sqe := &r.sqes[r.sqeTail&r.sqMask]
	r.sqeTail++
	*sqe = SQE{}
	return sqe
}

// SQPending returns the SQEs handed out by GetSQE that the kernel has not
// consumed yet (prepared, or published but not yet picked up by SQPOLL).
func (r *Ring) SQPending() uint32 { return r.sqeTail - atomic.LoadUint32(r.kSQHead) }

// SQSpaceLeft returns how many more SQEs GetSQE can hand out.
func (r *Ring) SQSpaceLeft() uint32 { return r.sqEntries - r.SQPending() }

// SQFlags returns the kernel's SQ ring flags (SQFlag*).
func (r *Ring) SQFlags() uint32 { return atomic.LoadUint32(r.kSQFlags) }

// SQDropped returns how many SQEs the kernel dropped as invalid.
func (r *Ring) SQDropped() uint32 { return atomic.LoadUint32(r.kSQDropped) }

// flushSQ publishes the prepared SQEs with a release store of the SQ tail
// (the SQE contents are written before it) and returns how many the kernel
// has not consumed.
func (r *Ring) flushSQ() uint32 {
	if r.sqeTail != r.sqePublished {
		atomic.StoreUint32(r.kSQTail, r.sqeTail)
		r.sqePublished = r.sqeTail
	}
	return r.sqeTail - atomic.LoadUint32(r.kSQHead)
}

// cqNeedsFlush reports completions held back from the CQ: an overflow list
// or pending task work. Entering with GETEVENTS moves them into the CQ.
func (r *Ring) cqNeedsFlush() bool {
	return atomic.LoadUint32(r.kSQFlags)&(SQFlagCQOverflow|SQFlagTaskrun) != 0
}

// CQNeedsFlush reports that completions wait outside the CQ (overflow list or
// pending task work); GetEvents, or any Submit*, moves them in.
func (r *Ring) CQNeedsFlush() bool { return r.cqNeedsFlush() }

// Submit publishes the prepared SQEs and tells the kernel about them without
// waiting. It also flushes overflowed completions and runs pending task work
// when the ring signals either. It returns the number of SQEs submitted.
func (r *Ring) Submit() (int, error) { return r.submit(0, false, 0) }

// SubmitAndWait submits and then blocks until at least waitNr completions are
// in the CQ. EINTR (and a signal that cuts the wait short after the submit
// part succeeded) is retried, so it returns only when the CQ holds waitNr
// CQEs or on a real error. waitNr must not exceed CQEntries.
func (r *Ring) SubmitAndWait(waitNr uint32) (int, error) { return r.submit(waitNr, false, 0) }

// SubmitAndWaitTimeout is SubmitAndWait bounded by d (nanosecond resolution,
// measured from the call; EINTR retries wait only for the remainder). When d
// passes first it returns unix.ETIME. It uses IORING_ENTER_EXT_ARG with a
// Ring-owned timespec, so it allocates nothing.
func (r *Ring) SubmitAndWaitTimeout(waitNr uint32, d time.Duration) (int, error) {
	if r.features&FeatExtArg == 0 {
		return 0, errNoExtArg
	}
	return r.submit(waitNr, true, d)
}

// GetEvents enters the kernel with GETEVENTS and no wait: it flushes the CQ
// overflow list and runs deferred task work (needed with SetupDeferTaskrun
// before completions show up in the CQ).
func (r *Ring) GetEvents() error {
	for {
		_, err := r.enter(0, 0, enterGetEvents, nil, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

func (r *Ring) submit(waitNr uint32, timed bool, d time.Duration) (int, error) {
	var deadline time.Time
	if timed {
		deadline = time.Now().Add(d)
	}
	sqpoll := r.flags&SetupSQPoll != 0
	submitted := 0
	for {
		published := r.sqeTail - r.sqePublished
		toSubmit := r.flushSQ()
		var flags uint32
		if waitNr > 0 || r.cqNeedsFlush() {
			flags |= enterGetEvents
		}
		if sqpoll {
			// The tail store above is an XCHG on amd64 (seq-cst on every
			// architecture), the full barrier required before reading
			// NEED_WAKEUP.
			submitted += int(published)
			if atomic.LoadUint32(r.kSQFlags)&SQFlagNeedWakeup != 0 {
				flags |= enterSQWakeup
			}
			if flags == 0 {
				return submitted, nil
			}
		} else if toSubmit == 0 && flags == 0 {
			return submitted, nil
		}
		var arg unsafe.Pointer
		var argSz uintptr
		if timed {
			rem := max(time.Until(deadline), 0)
			r.waitTS = Timespec{Sec: int64(rem / time.Second), Nsec: int64(rem % time.Second)}
			r.waitArg = getEventsArg{Ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
			flags |= enterExtArg
			arg, argSz = unsafe.Pointer(&r.waitArg), unsafe.Sizeof(r.waitArg)
		}
		n, err := r.enter(toSubmit, waitNr, flags, arg, argSz)
		if err == unix.EINTR {
			continue // nothing was submitted by this call; retry as is
		}
		if err != nil {
			return submitted, err
		}
		if !sqpoll {
			submitted += n
		}
		if waitNr == 0 || r.CQReady() >= waitNr {
			return submitted, nil
		}
		// A signal ended the wait after the submit part succeeded (the
		// kernel then returns the submit count, not EINTR): wait again.
	}
}

// enter is io_uring_enter. It uses Syscall6 (not RawSyscall6) because it may
// block: the Go scheduler then hands this thread's P to other goroutines.
func (r *Ring) enter(toSubmit, minComplete, flags uint32, arg unsafe.Pointer, argSz uintptr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.enterFd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags|r.enterFlags), uintptr(arg), argSz)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// CQReady returns the number of CQEs ready to be read.
func (r *Ring) CQReady() uint32 {
	return atomic.LoadUint32(r.kCQTail) - atomic.LoadUint32(r.kCQHead)
}

// CQOverflow returns the kernel's count of CQEs lost to overflow. With
// FeatNoDrop (5.5+) overflowed CQEs are kept in a list instead and this stays
// 0 unless the kernel ran out of memory.
func (r *Ring) CQOverflow() uint32 { return atomic.LoadUint32(r.kCQOverflow) }

// CQEAt returns the i-th ready CQE (0 is the oldest) without consuming it.
// i must be below CQReady(). The CQE is valid until CQAdvance passes it.
func (r *Ring) CQEAt(i uint32) *CQE {
	return &r.cqes[(atomic.LoadUint32(r.kCQHead)+i)&r.cqMask]
}

// PeekBatchCQE fills cqes with pointers to up to len(cqes) ready CQEs, oldest
// first, and returns how many. It does not consume them: call CQAdvance(n)
// when done. It makes no syscall; when CQNeedsFlush reports true, Submit or
// GetEvents brings the held-back completions in.
func (r *Ring) PeekBatchCQE(cqes []*CQE) uint32 {
	head := atomic.LoadUint32(r.kCQHead)
	n := min(atomic.LoadUint32(r.kCQTail)-head, uint32(min(len(cqes), int(r.cqEntries))))
	for i := range n {
		cqes[i] = &r.cqes[(head+i)&r.cqMask]
	}
	return n
}

// CQAdvance consumes n CQEs: a release store of the CQ head, after which the
// kernel may overwrite them.
func (r *Ring) CQAdvance(n uint32) {
	atomic.StoreUint32(r.kCQHead, atomic.LoadUint32(r.kCQHead)+n)
}

// ForEachCQE calls fn for every ready CQE, oldest first, then consumes them
// all and returns how many it saw. fn must not keep the pointer.
func (r *Ring) ForEachCQE(fn func(*CQE)) uint32 {
	head := atomic.LoadUint32(r.kCQHead)
	tail := atomic.LoadUint32(r.kCQTail)
	for i := head; i != tail; i++ {
		fn(&r.cqes[i&r.cqMask])
	}
	atomic.StoreUint32(r.kCQHead, tail)
	return tail - head
}
