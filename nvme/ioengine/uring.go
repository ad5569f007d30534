package ioengine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/nvme/uring"
	"golang.org/x/sys/unix"
)

// uringFlags are the setup flags the engine asks for; uring.New drops the
// ones an older kernel rejects.
const uringFlags = uring.SetupSingleIssuer | uring.SetupDeferTaskrun | uring.SetupTaskrunFlag |
	uring.SetupSubmitAll | uring.SetupNoSQArray

// wakeValue is what Wake adds to the eventfd counter.
var wakeValue = binary.NativeEndian.AppendUint64(nil, 1)

// uringEngine runs operations on an io_uring owned by the creating thread.
//
// Invariants: outstanding <= depth, so user CQEs never exceed the CQ (4x
// the SQ); the SQ has depth+1 slots, one kept for re-arming the wakeup
// read, which is armed (or its re-arm SQE is prepared) at all times.
type uringEngine struct {
	ring        *uring.Ring
	depth       int
	outstanding int // prepared + in flight + completed-unreaped user ops
	prepared    int // user SQEs not yet consumed by the kernel
	nfiles      int
	bufs        [][]byte
	filesReg    bool

	// Wakeup: a READ on efd is kept armed under ReservedUserData. scanned
	// counts CQEs (from the CQ head) already checked for a wakeup CQE;
	// wakeInCQ counts wakeup CQEs among them, not yet consumed by Reap.
	efd      int
	wakeBuf  [8]byte // the kernel writes the eventfd counter here
	scanned  uint32
	wakeInCQ uint32
	sleeping atomic.Bool // owner is (about to be) blocked in Submit
	woken    atomic.Bool // a Wake no Submit has consumed yet
}

func newUring(depth int) (*uringEngine, error) {
	entries := uint32(depth + 1)
	r, err := uring.New(entries, uring.WithFlags(uringFlags), uring.WithCQSize(4*entries), uring.WithRegisteredRing())
	if err != nil {
		return nil, fmt.Errorf("ioengine: create io_uring with %d entries: %w", entries, err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("ioengine: eventfd for Wake: %w", err)
	}
	e := &uringEngine{ring: r, depth: depth, efd: efd}
	e.rearm()
	if _, err := r.Submit(); err != nil {
		e.Close()
		return nil, fmt.Errorf("ioengine: arm the wakeup read: %w", err)
	}
	return e, nil
}

func (e *uringEngine) Name() string { return string(Uring) }
func (e *uringEngine) Depth() int   { return e.depth }

func (e *uringEngine) RegisterFiles(fds []int) error {
	if e.filesReg {
		if err := e.ring.UnregisterFiles(); err != nil {
			return fmt.Errorf("ioengine: %w", err)
		}
		e.filesReg, e.nfiles = false, 0
	}
	fd32 := make([]int32, len(fds))
	for i, fd := range fds {
		fd32[i] = int32(fd)
	}
	if err := e.ring.RegisterFiles(fd32); err != nil {
		return fmt.Errorf("ioengine: %w", err)
	}
	e.filesReg, e.nfiles = true, len(fds)
	return nil
}

func (e *uringEngine) RegisterBuffers(bufs [][]byte) error {
	if e.bufs != nil {
		if err := e.ring.UnregisterBuffers(); err != nil {
			return fmt.Errorf("ioengine: %w", err)
		}
		e.bufs = nil
	}
	iovs := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		if len(b) == 0 {
			return fmt.Errorf("ioengine: registered buffer %d is empty", i)
		}
		iovs[i].Base = &b[0]
		iovs[i].SetLen(len(b))
	}
	if err := e.ring.RegisterBuffers(iovs); err != nil {
		return fmt.Errorf("ioengine: %w", err)
	}
	e.bufs = append([][]byte(nil), bufs...)
	return nil
}

func (e *uringEngine) Prepare(op *Op) error {
	if e.outstanding >= e.depth {
		return ErrQueueFull
	}
	if err := checkOp(op, e.nfiles, e.bufs); err != nil {
		return err
	}
	s := e.ring.GetSQE()
	if s == nil {
		return ErrQueueFull // unreachable while the invariants hold
	}
	fd := int(op.File)
	switch op.Opcode {
	case OpNop:
		s.PrepNop()
	case OpRead:
		if op.BufIndex >= 0 {
			s.PrepReadFixed(fd, op.Buf, op.Off, uint16(op.BufIndex))
		} else {
			s.PrepRead(fd, op.Buf, op.Off)
		}
		s.Flags |= uring.SQEFixedFile
	case OpWrite:
		if op.BufIndex >= 0 {
			s.PrepWriteFixed(fd, op.Buf, op.Off, uint16(op.BufIndex))
		} else {
			s.PrepWrite(fd, op.Buf, op.Off)
		}
		if op.Flags&FlagDatasync != 0 {
			s.OpFlags = uring.RWFDsync
		}
		s.Flags |= uring.SQEFixedFile
	case OpFsync:
		var flags uint32
		if op.Flags&FlagDatasync != 0 {
			flags = uring.FsyncDatasync
		}
		s.PrepFsync(fd, flags)
		s.Flags |= uring.SQEFixedFile
	}
	if op.Flags&FlagLink != 0 {
		s.Flags |= uring.SQEIOLink
	}
	s.UserData = op.UserData
	e.outstanding++
	e.prepared++
	return nil
}

// account updates prepared after an enter and returns how many user SQEs
// it submitted.
func (e *uringEngine) account() int {
	left := min(int(e.ring.SQPending()), e.prepared)
	n := e.prepared - left
	e.prepared = left
	return n
}

func (e *uringEngine) Submit(wait int, timeout time.Duration) (int, error) {
	if wait <= 0 {
		_, err := e.ring.Submit()
		return e.account(), err
	}
	e.sleeping.Store(true)
	if e.woken.Swap(false) {
		e.sleeping.Store(false)
		_, err := e.ring.Submit()
		return e.account(), err
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	submitted := -1
	var err error
	for {
		e.scan()
		ready := e.ring.CQReady()
		userReady := int(ready - e.wakeInCQ)
		if submitted >= 0 && (userReady >= wait || e.woken.Load()) {
			break
		}
		// Wait for one CQE beyond those present: a user completion or the
		// wakeup read. Only submit if enough are already there.
		minComplete := ready + 1
		if submitted < 0 && userReady >= wait {
			minComplete = 0
		}
		if timeout > 0 {
			_, err = e.ring.SubmitAndWaitTimeout(minComplete, max(time.Until(deadline), 0))
		} else {
			_, err = e.ring.SubmitAndWait(minComplete)
		}
		if submitted < 0 {
			submitted = e.account()
		}
		if errors.Is(err, unix.ETIME) {
			err = nil
			break
		}
		if err != nil {
			break
		}
	}
	e.sleeping.Store(false)
	e.woken.Swap(false) // this return serves any Wake that came meanwhile
	return submitted, err
}

// scan looks for wakeup CQEs that arrived since the last scan and re-arms
// the read for each, so Wake works even before Reap consumes them.
func (e *uringEngine) scan() {
	ready := e.ring.CQReady()
	for i := e.scanned; i < ready; i++ {
		if e.ring.CQEAt(i).UserData == ReservedUserData {
			e.wakeInCQ++
			e.rearm()
		}
	}
	e.scanned = ready
}

// rearm prepares the wakeup read in the SQ slot kept for it; the next enter
// submits it.
func (e *uringEngine) rearm() {
	s := e.ring.GetSQE()
	s.PrepRead(e.efd, e.wakeBuf[:], -1)
	s.UserData = ReservedUserData
}

func (e *uringEngine) Reap(out []Completion) int {
	n := 0
	for flushed := false; ; flushed = true {
		ready := e.ring.CQReady()
		var i uint32
		for ; i < ready && n < len(out); i++ {
			c := e.ring.CQEAt(i)
			if c.UserData == ReservedUserData {
				if i < e.scanned {
					e.wakeInCQ--
				} else {
					e.rearm()
				}
				continue
			}
			out[n] = Completion{UserData: c.UserData, Res: c.Res}
			n++
		}
		e.ring.CQAdvance(i)
		e.scanned -= min(e.scanned, i)
		// With DEFER_TASKRUN, finished I/O waits as task work until the
		// owner enters the kernel: do that (without waiting) when the CQ
		// ran dry and the kernel flags pending work or overflow. An error
		// here resurfaces from the next Submit.
		if flushed || n == len(out) || !e.ring.CQNeedsFlush() || e.ring.GetEvents() != nil {
			break
		}
	}
	e.outstanding -= n
	return n
}

func (e *uringEngine) Wake() error {
	if e.woken.Swap(true) || !e.sleeping.Load() {
		return nil
	}
	if _, err := unix.Write(e.efd, wakeValue); err != nil {
		return fmt.Errorf("ioengine: wake (eventfd write): %w", err)
	}
	return nil
}

func (e *uringEngine) Close() error {
	if e.ring == nil {
		return nil
	}
	err := e.ring.Close()
	if cerr := unix.Close(e.efd); cerr != nil && err == nil {
		err = cerr
	}
	e.ring = nil
	if err != nil {
		return fmt.Errorf("ioengine: close io_uring engine: %w", err)
	}
	return nil
}
