package ioengine

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxWorkers bounds the pread engine's goroutines (each may hold an OS
// thread while blocked in a syscall).
const maxWorkers = 32

// preadEngine runs operations on a bounded pool of goroutines doing
// pread/pwrite/fsync on the registered fds. It mirrors io_uring semantics:
// one Completion per op, Res = bytes or -errno, FlagLink chains run in order
// and a failed or short link cancels the rest with -ECANCELED.
//
// Invariants: outstanding <= depth, so the slot table, the job channel and
// the completion ring (all sized depth) never overflow and nothing is
// allocated per operation.
type preadEngine struct {
	depth       int
	outstanding int     // owner only: prepared + in flight + unreaped
	batch       []int32 // owner only: slots prepared since the last Submit
	fds         []int
	bufs        [][]byte

	slots []pslot    // slot i is owned by whoever took it from free
	jobs  chan int32 // chain heads for the workers
	wg    sync.WaitGroup

	mu       sync.Mutex
	free     []int32      // guarded by mu
	done     []Completion // guarded by mu: ring of doneLen entries from doneHead
	doneHead int
	doneLen  int

	notify   chan struct{} // capacity 1: a completion or Wake for a sleeping owner
	sleeping atomic.Bool
	woken    atomic.Bool
	timer    *time.Timer
	closed   bool
}

type pslot struct {
	op   Op
	fd   int   // resolved at Prepare
	next int32 // next slot of a FlagLink chain, or -1
}

func newPread(depth int) *preadEngine {
	e := &preadEngine{
		depth:  depth,
		batch:  make([]int32, 0, depth),
		slots:  make([]pslot, depth),
		jobs:   make(chan int32, depth),
		free:   make([]int32, depth),
		done:   make([]Completion, depth),
		notify: make(chan struct{}, 1),
		timer:  time.NewTimer(time.Hour),
	}
	e.timer.Stop()
	for i := range e.free {
		e.free[i] = int32(depth - 1 - i)
	}
	workers := min(depth, maxWorkers)
	e.wg.Add(workers)
	for range workers {
		go e.worker()
	}
	return e
}

func (e *preadEngine) Name() string { return string(Pread) }
func (e *preadEngine) Depth() int   { return e.depth }

func (e *preadEngine) RegisterFiles(fds []int) error {
	e.fds = append([]int(nil), fds...)
	return nil
}

func (e *preadEngine) RegisterBuffers(bufs [][]byte) error {
	e.bufs = append([][]byte(nil), bufs...)
	return nil
}

func (e *preadEngine) Prepare(op *Op) error {
	if e.outstanding >= e.depth {
		return ErrQueueFull
	}
	if err := checkOp(op, len(e.fds), e.bufs); err != nil {
		return err
	}
	e.mu.Lock()
	i := e.free[len(e.free)-1]
	e.free = e.free[:len(e.free)-1]
	e.mu.Unlock()
	s := &e.slots[i]
	s.op, s.fd, s.next = *op, -1, -1
	if op.Opcode != OpNop {
		s.fd = e.fds[op.File]
	}
	e.batch = append(e.batch, i)
	e.outstanding++
	return nil
}

func (e *preadEngine) Submit(wait int, timeout time.Duration) (int, error) {
	n := len(e.batch)
	head := int32(-1)
	for k, i := range e.batch {
		if head < 0 {
			head = i
		}
		if e.slots[i].op.Flags&FlagLink != 0 && k+1 < n {
			e.slots[i].next = e.batch[k+1]
			continue
		}
		e.jobs <- head // never blocks: at most depth chains exist
		head = -1
	}
	e.batch = e.batch[:0]
	if wait <= 0 {
		return n, nil
	}
	e.sleeping.Store(true)
	if e.woken.Swap(false) {
		e.sleeping.Store(false)
		return n, nil
	}
	var expired <-chan time.Time
	if timeout > 0 {
		e.timer.Reset(timeout)
		expired = e.timer.C
	}
loop:
	for {
		e.mu.Lock()
		ready := e.doneLen
		e.mu.Unlock()
		if ready >= wait || e.woken.Load() {
			break
		}
		select {
		case <-e.notify:
		case <-expired:
			break loop
		}
	}
	if timeout > 0 {
		e.timer.Stop()
	}
	e.sleeping.Store(false)
	e.woken.Swap(false) // this return serves any Wake that came meanwhile
	return n, nil
}

func (e *preadEngine) Reap(out []Completion) int {
	e.mu.Lock()
	n := min(len(out), e.doneLen)
	for k := range n {
		out[k] = e.done[(e.doneHead+k)%len(e.done)]
	}
	e.doneHead = (e.doneHead + n) % len(e.done)
	e.doneLen -= n
	e.mu.Unlock()
	e.outstanding -= n
	return n
}

func (e *preadEngine) Wake() error {
	if e.woken.Swap(true) || !e.sleeping.Load() {
		return nil
	}
	e.kick()
	return nil
}

func (e *preadEngine) kick() {
	select {
	case e.notify <- struct{}{}:
	default: // a kick is already pending
	}
}

func (e *preadEngine) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	close(e.jobs)
	e.wg.Wait()
	e.timer.Stop()
	return nil
}

// worker runs chains until jobs is closed. iov is its own scratch iovec for
// pwritev2, so a durable write allocates nothing.
func (e *preadEngine) worker() {
	defer e.wg.Done()
	var iov unix.Iovec
	for i := range e.jobs {
		broken := false
		for i >= 0 {
			s := &e.slots[i]
			res := -int32(unix.ECANCELED)
			if !broken {
				res = execute(s, &iov)
				broken = s.next >= 0 && linkBroken(&s.op, res)
			}
			ud, next := s.op.UserData, s.next
			s.op = Op{} // drop the Buf reference
			e.post(i, ud, res)
			i = next
		}
	}
}

// post frees slot i, queues its completion and kicks a sleeping owner.
func (e *preadEngine) post(i int32, ud uint64, res int32) {
	e.mu.Lock()
	e.done[(e.doneHead+e.doneLen)%len(e.done)] = Completion{UserData: ud, Res: res}
	e.doneLen++
	e.free = append(e.free, i)
	e.mu.Unlock()
	if e.sleeping.Load() {
		e.kick()
	}
}

// execute performs one operation and returns bytes or -errno.
func execute(s *pslot, iov *unix.Iovec) int32 {
	op := &s.op
	var n int
	var err error
	for {
		switch op.Opcode {
		case OpNop:
			return 0
		case OpRead:
			n, err = unix.Pread(s.fd, op.Buf, op.Off)
		case OpWrite:
			if op.Flags&FlagDatasync != 0 {
				n, err = pwriteDsync(s.fd, op.Buf, op.Off, iov)
			} else {
				n, err = unix.Pwrite(s.fd, op.Buf, op.Off)
			}
		case OpFsync:
			if op.Flags&FlagDatasync != 0 {
				err = unix.Fdatasync(s.fd)
			} else {
				err = unix.Fsync(s.fd)
			}
		}
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		if errno, ok := err.(unix.Errno); ok {
			return -int32(errno)
		}
		return -int32(unix.EIO)
	}
	return int32(n)
}

// pwriteDsync writes b at off durably: pwritev2(RWF_DSYNC) (Linux 4.7+), or
// pwrite then fdatasync where the kernel or file system lacks it. It calls
// the syscall directly because unix.Pwritev2 allocates its iovec array.
func pwriteDsync(fd int, b []byte, off int64, iov *unix.Iovec) (int, error) {
	iov.Base = unsafe.SliceData(b)
	iov.SetLen(len(b))
	half := 4 * unsafe.Sizeof(uintptr(0)) // pos_h holds the bits above one long
	hi := uintptr(uint64(off) >> half >> half)
	r, _, errno := unix.Syscall6(unix.SYS_PWRITEV2, uintptr(fd), uintptr(unsafe.Pointer(iov)), 1,
		uintptr(off), hi, unix.RWF_DSYNC)
	iov.Base = nil
	switch errno {
	case 0:
		return int(r), nil
	case unix.ENOSYS, unix.EOPNOTSUPP:
		n, err := unix.Pwrite(fd, b, off)
		if err == nil {
			err = unix.Fdatasync(fd)
		}
		return n, err
	}
	return 0, errno
}
