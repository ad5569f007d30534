package uring

import (
	"bytes"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestLayout(t *testing.T) {
	var s SQE
	var p Params
	var c CQE
	var sq SQRingOffsets
	var cq CQRingOffsets
	var a getEventsArg
	var probe Probe
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sqe.opcode", unsafe.Offsetof(s.Opcode), 0}, {"sqe.flags", unsafe.Offsetof(s.Flags), 1},
		{"sqe.ioprio", unsafe.Offsetof(s.IoPrio), 2}, {"sqe.fd", unsafe.Offsetof(s.Fd), 4},
		{"sqe.off", unsafe.Offsetof(s.Off), 8}, {"sqe.addr", unsafe.Offsetof(s.Addr), 16},
		{"sqe.len", unsafe.Offsetof(s.Len), 24}, {"sqe.op_flags", unsafe.Offsetof(s.OpFlags), 28},
		{"sqe.user_data", unsafe.Offsetof(s.UserData), 32}, {"sqe.buf_index", unsafe.Offsetof(s.BufIndex), 40},
		{"sqe.personality", unsafe.Offsetof(s.Personality), 42}, {"sqe.file_index", unsafe.Offsetof(s.FileIndex), 44},
		{"sqe.addr3", unsafe.Offsetof(s.Addr3), 48}, {"sizeof sqe", unsafe.Sizeof(s), 64},
		{"cqe.user_data", unsafe.Offsetof(c.UserData), 0}, {"cqe.res", unsafe.Offsetof(c.Res), 8},
		{"cqe.flags", unsafe.Offsetof(c.Flags), 12}, {"sizeof cqe", unsafe.Sizeof(c), 16},
		{"params.sq_entries", unsafe.Offsetof(p.SQEntries), 0}, {"params.cq_entries", unsafe.Offsetof(p.CQEntries), 4},
		{"params.flags", unsafe.Offsetof(p.Flags), 8}, {"params.sq_thread_cpu", unsafe.Offsetof(p.SQThreadCPU), 12},
		{"params.sq_thread_idle", unsafe.Offsetof(p.SQThreadIdle), 16}, {"params.features", unsafe.Offsetof(p.Features), 20},
		{"params.wq_fd", unsafe.Offsetof(p.WQFd), 24}, {"params.resv", unsafe.Offsetof(p.Resv), 28},
		{"params.sq_off", unsafe.Offsetof(p.SQOff), 40}, {"params.cq_off", unsafe.Offsetof(p.CQOff), 80},
		{"sizeof params", unsafe.Sizeof(p), 120},
		{"sq_off.head", unsafe.Offsetof(sq.Head), 0}, {"sq_off.tail", unsafe.Offsetof(sq.Tail), 4},
		{"sq_off.ring_mask", unsafe.Offsetof(sq.RingMask), 8}, {"sq_off.ring_entries", unsafe.Offsetof(sq.RingEntries), 12},
		{"sq_off.flags", unsafe.Offsetof(sq.Flags), 16}, {"sq_off.dropped", unsafe.Offsetof(sq.Dropped), 20},
		{"sq_off.array", unsafe.Offsetof(sq.Array), 24}, {"sq_off.user_addr", unsafe.Offsetof(sq.UserAddr), 32},
		{"cq_off.head", unsafe.Offsetof(cq.Head), 0}, {"cq_off.tail", unsafe.Offsetof(cq.Tail), 4},
		{"cq_off.ring_mask", unsafe.Offsetof(cq.RingMask), 8}, {"cq_off.ring_entries", unsafe.Offsetof(cq.RingEntries), 12},
		{"cq_off.overflow", unsafe.Offsetof(cq.Overflow), 16}, {"cq_off.cqes", unsafe.Offsetof(cq.CQEs), 20},
		{"cq_off.flags", unsafe.Offsetof(cq.Flags), 24}, {"cq_off.user_addr", unsafe.Offsetof(cq.UserAddr), 32},
		{"getevents.sigmask_sz", unsafe.Offsetof(a.SigmaskSz), 8}, {"getevents.min_wait_usec", unsafe.Offsetof(a.MinWaitUsec), 12},
		{"getevents.ts", unsafe.Offsetof(a.Ts), 16}, {"sizeof getevents", unsafe.Sizeof(a), 24},
		{"probe.ops", unsafe.Offsetof(probe.Ops), 16}, {"sizeof timespec", unsafe.Sizeof(Timespec{}), 16},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestKernelOffsets(t *testing.T) {
	var p Params
	newRing(t, 8) // locks the thread; skips when io_uring is unavailable
	// Setup fills p: ring pointers must land inside the mapping.
	r2, err := Setup(8, &p)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if p.SQEntries != 8 || p.CQEntries != 16 {
		t.Errorf("entries = %d/%d, want 8/16", p.SQEntries, p.CQEntries)
	}
	if p.Features&FeatSingleMmap == 0 || p.Features&FeatNoDrop == 0 || p.Features&FeatExtArg == 0 {
		t.Errorf("features %#x lack SINGLE_MMAP/NODROP/EXT_ARG", p.Features)
	}
	if r2.sqMask != 7 || r2.cqMask != 15 || r2.SQEntries() != 8 || r2.CQEntries() != 16 {
		t.Errorf("masks %d/%d entries %d/%d", r2.sqMask, r2.cqMask, r2.SQEntries(), r2.CQEntries())
	}
	for _, off := range []uint32{p.SQOff.Head, p.SQOff.Tail, p.SQOff.Flags, p.SQOff.Dropped, p.CQOff.Head, p.CQOff.Tail, p.CQOff.Overflow} {
		if uintptr(off)+4 > r2.sqRingSize {
			t.Errorf("offset %d outside the %d-byte ring mapping", off, r2.sqRingSize)
		}
	}
}

func TestPrepHelpersExactFields(t *testing.T) {
	r := newRing(t, 8)
	buf := mmapBuf(t, 8192)
	data := uint64(uintptr(unsafe.Pointer(&buf[0])))

	s := r.GetSQE()
	s.PrepRead(7, buf[:4096], 8192)
	if s.Opcode != OpRead || s.Fd != 7 || s.Addr != data || s.Len != 4096 || s.Off != 8192 || s.OpFlags != 0 {
		t.Errorf("PrepRead: %+v", *s)
	}
	s.PrepWrite(3, buf[4096:], -1)
	if s.Opcode != OpWrite || s.Fd != 3 || s.Addr != data+4096 || s.Len != 4096 || s.Off != ^uint64(0) {
		t.Errorf("PrepWrite: %+v", *s)
	}
	s.PrepReadFixed(1, buf[512:1024], 4096, 3)
	if s.Opcode != OpReadFixed || s.Addr != data+512 || s.Len != 512 || s.BufIndex != 3 || s.Off != 4096 {
		t.Errorf("PrepReadFixed: %+v", *s)
	}
	s.PrepWriteFixed(2, buf, 0, 9)
	if s.Opcode != OpWriteFixed || s.Fd != 2 || s.Addr != data || s.Len != 8192 || s.BufIndex != 9 {
		t.Errorf("PrepWriteFixed: %+v", *s)
	}
	iovs := make([]unix.Iovec, 2)
	s.PrepReadv(4, iovs, 12)
	if s.Opcode != OpReadv || s.Addr != uint64(uintptr(unsafe.Pointer(&iovs[0]))) || s.Len != 2 || s.Off != 12 {
		t.Errorf("PrepReadv: %+v (addr must be &iovs[0], not the slice header)", *s)
	}
	s.PrepWritev(4, iovs[:1], 0)
	if s.Opcode != OpWritev || s.Addr != uint64(uintptr(unsafe.Pointer(&iovs[0]))) || s.Len != 1 {
		t.Errorf("PrepWritev: %+v", *s)
	}
	*s = SQE{}
	s.PrepFsync(5, FsyncDatasync)
	if s.Opcode != OpFsync || s.Fd != 5 || s.OpFlags != FsyncDatasync || s.Addr != 0 || s.Len != 0 {
		t.Errorf("PrepFsync: %+v", *s)
	}
	s.PrepNop()
	if s.Opcode != OpNop || s.Fd != -1 {
		t.Errorf("PrepNop: %+v", *s)
	}

	// Timeouts point at the Ring-owned timespec slot of this very SQE.
	s2 := r.GetSQE()
	r.PrepTimeout(s2, 1500*time.Millisecond, 3)
	ts := &r.timeouts[1]
	if s2.Opcode != OpTimeout || s2.Addr != uint64(uintptr(unsafe.Pointer(ts))) || s2.Len != 1 || s2.Off != 3 || s2.Fd != -1 {
		t.Errorf("PrepTimeout: %+v", *s2)
	}
	if *ts != (Timespec{Sec: 1, Nsec: 500e6}) {
		t.Errorf("timespec = %+v", *ts)
	}
	r.PrepLinkTimeout(s, 2*time.Microsecond)
	if s.Opcode != OpLinkTimeout || s.Addr != uint64(uintptr(unsafe.Pointer(&r.timeouts[0]))) || r.timeouts[0] != (Timespec{Nsec: 2000}) {
		t.Errorf("PrepLinkTimeout: %+v %+v", *s, r.timeouts[0])
	}
	if rwLen(maxRW+1) != maxRW || rwLen(10) != 10 {
		t.Errorf("rwLen does not clamp to MAX_RW_COUNT")
	}
	defer func() {
		if recover() == nil {
			t.Errorf("PrepTimeout with a foreign SQE did not panic")
		}
	}()
	r.PrepTimeout(&SQE{}, time.Second, 0)
}

func TestGetSQEFullAndZeroed(t *testing.T) {
	r := newRing(t, 4)
	for i := range 4 {
		s := r.GetSQE()
		if s == nil {
			t.Fatalf("GetSQE %d = nil with %d left", i, r.SQSpaceLeft())
		}
		s.PrepNop()
		s.UserData, s.OpFlags, s.Addr3, s.BufIndex = 0xdead, 7, 9, 5
	}
	if r.GetSQE() != nil || r.SQSpaceLeft() != 0 || r.SQPending() != 4 {
		t.Fatalf("full SQ: GetSQE != nil or space %d", r.SQSpaceLeft())
	}
	reapAll(t, r, 4)
	for range 4 {
		if s := r.GetSQE(); *s != (SQE{}) {
			t.Fatalf("reused SQE not zeroed: %+v", *s)
		}
	}
}

func TestNopWraparound(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default", nil},
		{"engine-flags", []Option{WithFlags(engineFlags), WithCQSize(32), WithRegisteredRing()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, 8, tc.opts...)
			const total = 8*10*3 + 5
			next, seen := uint64(0), make(map[uint64]bool)
			for next < total {
				n := 0
				for next < total && r.SQSpaceLeft() > 0 {
					s := r.GetSQE()
					s.PrepNop()
					s.UserData = next
					next++
					n++
				}
				if got, err := r.SubmitAndWait(uint32(n)); err != nil || got != n {
					t.Fatalf("SubmitAndWait(%d) = %d, %v", n, got, err)
				}
				r.ForEachCQE(func(c *CQE) {
					if c.Res != 0 || seen[c.UserData] {
						t.Fatalf("bad or duplicate CQE %+v", *c)
					}
					seen[c.UserData] = true
				})
			}
			if len(seen) != total || r.CQReady() != 0 || r.SQPending() != 0 {
				t.Fatalf("saw %d of %d NOPs; ready %d pending %d", len(seen), total, r.CQReady(), r.SQPending())
			}
		})
	}
}

// Timeouts with decreasing durations complete in reverse submission order;
// each CQE must carry its own user_data.
func TestCompletionOrderByUserData(t *testing.T) {
	r := newRing(t, 16, WithFlags(engineFlags))
	const n = 8
	for i := range n {
		s := r.GetSQE()
		r.PrepTimeout(s, time.Duration(n-i)*8*time.Millisecond, 0)
		s.UserData = uint64(100 + i)
	}
	got := reapAll(t, r, n)
	for i, c := range got {
		if want := uint64(100 + n - 1 - i); c.UserData != want || c.Res != -int32(unix.ETIME) {
			t.Errorf("CQE %d = %+v, want user_data %d res -ETIME", i, c, want)
		}
	}
}

func TestReadsMatchedByUserData(t *testing.T) {
	r := newRing(t, 32, WithFlags(engineFlags))
	fd := tempFile(t, 0, 0)
	const blocks, bs = 64, 4096
	want := make([]byte, blocks*bs)
	fill(want, 3)
	if _, err := unix.Pwrite(fd, want, 0); err != nil {
		t.Fatal(err)
	}
	buf := mmapBuf(t, blocks*bs)
	inflight, done := 0, 0
	for i := 0; done < blocks; {
		for ; i < blocks; i++ {
			s := r.GetSQE()
			if s == nil {
				break
			}
			blk := (i * 37) % blocks // scattered offsets
			s.PrepRead(fd, buf[blk*bs:(blk+1)*bs], int64(blk*bs))
			s.UserData = uint64(blk)
			inflight++
		}
		if _, err := r.SubmitAndWait(1); err != nil {
			t.Fatal(err)
		}
		r.ForEachCQE(func(c *CQE) {
			blk := int(c.UserData)
			if c.Res != bs || !bytes.Equal(buf[blk*bs:(blk+1)*bs], want[blk*bs:(blk+1)*bs]) {
				t.Fatalf("block %d: res %d or wrong contents", blk, c.Res)
			}
			inflight--
			done++
		})
	}
	if inflight != 0 {
		t.Fatalf("%d reads never completed", inflight)
	}
}

func TestBatchLargerThanSQ(t *testing.T) {
	r := newRing(t, 8)
	const total = 1000
	seen := make([]bool, total)
	count := 0
	reap := func(c *CQE) { seen[c.UserData] = true; count++ }
	for i := range total {
		s := r.GetSQE()
		if s == nil {
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			r.ForEachCQE(reap)
			if s = r.GetSQE(); s == nil {
				t.Fatalf("SQ still full after Submit: pending %d", r.SQPending())
			}
		}
		s.PrepNop()
		s.UserData = uint64(i)
	}
	for count < total {
		if _, err := r.SubmitAndWait(1); err != nil {
			t.Fatal(err)
		}
		r.ForEachCQE(reap)
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("NOP %d lost", i)
		}
	}
}

func TestCQOverflowNoLoss(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
	}{{"default", 0}, {"defer-taskrun", engineFlags}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, 4, WithFlags(tc.flags), WithCQSize(4))
			if r.Features()&FeatNoDrop == 0 {
				t.Fatalf("kernel lacks FEAT_NODROP (features %#x)", r.Features())
			}
			const total = 40
			for i := 0; i < total; {
				for s := r.GetSQE(); s != nil; s = r.GetSQE() {
					s.PrepNop()
					s.UserData = uint64(i)
					i++
				}
				if _, err := r.Submit(); err != nil {
					t.Fatalf("Submit with %d queued CQEs: %v", i, err)
				}
			}
			if tc.flags&SetupDeferTaskrun != 0 {
				if err := r.GetEvents(); err != nil {
					t.Fatal(err)
				}
			}
			if r.CQReady() != r.CQEntries() || r.SQFlags()&SQFlagCQOverflow == 0 {
				t.Fatalf("expected a full CQ with SQ_CQ_OVERFLOW: ready %d flags %#x", r.CQReady(), r.SQFlags())
			}
			seen := make(map[uint64]bool)
			for rounds := 0; len(seen) < total; rounds++ {
				if rounds > 100 {
					t.Fatalf("only %d of %d CQEs after flushing", len(seen), total)
				}
				r.ForEachCQE(func(c *CQE) { seen[c.UserData] = true })
				if r.CQNeedsFlush() {
					if err := r.GetEvents(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if r.CQOverflow() != 0 || r.SQFlags()&SQFlagCQOverflow != 0 {
				t.Fatalf("dropped %d CQEs, flags %#x", r.CQOverflow(), r.SQFlags())
			}
		})
	}
}

func TestFixedBuffersAndFilesODirect(t *testing.T) {
	r := newRing(t, 16, WithFlags(engineFlags))
	fd := tempFile(t, unix.O_DIRECT, 0)
	const n, bs = 8, 4096
	wbuf, rbuf := mmapBuf(t, n*bs), mmapBuf(t, n*bs)
	fill(wbuf, 11)
	iovs := []unix.Iovec{{Base: &wbuf[0]}, {Base: &rbuf[0]}}
	iovs[0].SetLen(len(wbuf))
	iovs[1].SetLen(len(rbuf))
	if err := r.RegisterBuffers(iovs); err != nil {
		t.Fatal(err)
	}
	// Slot 0 empty: Fd is an index into this table, not the fd number.
	if err := r.RegisterFiles([]int32{-1, int32(fd)}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s := r.GetSQE()
		s.PrepWriteFixed(1, wbuf[i*bs:(i+1)*bs], int64(i*bs), 0)
		s.Flags |= SQEFixedFile
		s.UserData = uint64(i)
	}
	s := r.GetSQE()
	s.PrepFsync(1, FsyncDatasync)
	s.Flags |= SQEFixedFile
	s.UserData = 99
	for _, c := range reapAll(t, r, n+1) {
		if (c.UserData == 99 && c.Res != 0) || (c.UserData != 99 && c.Res != bs) {
			t.Fatalf("write/fsync CQE %+v", c)
		}
	}
	for i := range n {
		s := r.GetSQE()
		s.PrepReadFixed(1, rbuf[i*bs:(i+1)*bs], int64(i*bs), 1)
		s.Flags |= SQEFixedFile
		s.UserData = uint64(i)
	}
	for _, c := range reapAll(t, r, n) {
		if c.Res != bs {
			t.Fatalf("read CQE %+v", c)
		}
	}
	if !bytes.Equal(rbuf, wbuf) {
		t.Fatal("O_DIRECT read-back differs from what WRITE_FIXED wrote")
	}
	// Outside the registered buffer: the kernel refuses with EFAULT.
	other := mmapBuf(t, bs)
	s = r.GetSQE()
	s.PrepReadFixed(1, other, 0, 1)
	s.Flags |= SQEFixedFile
	if c := reapAll(t, r, 1)[0]; c.Res != -int32(unix.EFAULT) {
		t.Errorf("READ_FIXED outside the buffer: res %d, want -EFAULT", c.Res)
	}
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
	if err := r.UnregisterBuffers(); err != nil {
		t.Fatal(err)
	}
}

func TestReadvWritev(t *testing.T) {
	r := newRing(t, 8)
	fd := tempFile(t, 0, 0)
	a, b := []byte("hello, "), []byte("io_uring")
	pa, pb := new(runtime.Pinner), new(runtime.Pinner)
	pa.Pin(&a[0])
	pa.Pin(&b[0])
	defer pa.Unpin()
	iovs := []unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iovs[0].SetLen(len(a))
	iovs[1].SetLen(len(b))
	s := r.GetSQE()
	s.PrepWritev(fd, iovs, 0)
	if c := reapAll(t, r, 1)[0]; c.Res != int32(len(a)+len(b)) {
		t.Fatalf("writev res %d", c.Res)
	}
	out := make([]byte, 15)
	pb.Pin(&out[0])
	defer pb.Unpin()
	riov := []unix.Iovec{{Base: &out[0]}}
	riov[0].SetLen(len(out))
	s = r.GetSQE()
	s.PrepReadv(fd, riov, 0)
	if c := reapAll(t, r, 1)[0]; c.Res != 15 || string(out) != "hello, io_uring" {
		t.Fatalf("readv res %d %q", c.Res, out)
	}
}

func TestLinkChains(t *testing.T) {
	r := newRing(t, 8)
	path := filepath.Join(t.TempDir(), "wo")
	wo, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wo)
	buf := mmapBuf(t, 4096)

	// IO_LINK: the failing head cancels the rest of the chain.
	s := r.GetSQE()
	s.PrepRead(wo, buf, 0) // read on a write-only fd: -EBADF at issue time
	s.Flags, s.UserData = SQEIOLink, 1
	s = r.GetSQE()
	s.PrepNop()
	s.Flags, s.UserData = SQEIOLink, 2
	s = r.GetSQE()
	s.PrepNop()
	s.UserData = 3
	res := map[uint64]int32{}
	for _, c := range reapAll(t, r, 3) {
		res[c.UserData] = c.Res
	}
	if res[1] != -int32(unix.EBADF) || res[2] != -int32(unix.ECANCELED) || res[3] != -int32(unix.ECANCELED) {
		t.Errorf("link chain results %v, want -EBADF, -ECANCELED, -ECANCELED", res)
	}

	// IO_HARDLINK: the chain survives the failure.
	s = r.GetSQE()
	s.PrepRead(wo, buf, 0)
	s.Flags, s.UserData = SQEIOHardlink, 1
	s = r.GetSQE()
	s.PrepNop()
	s.UserData = 2
	clear(res)
	for _, c := range reapAll(t, r, 2) {
		res[c.UserData] = c.Res
	}
	if res[1] != -int32(unix.EBADF) || res[2] != 0 {
		t.Errorf("hardlink results %v, want -EBADF, 0", res)
	}

	// CQE_SKIP_SUCCESS: only the second NOP posts a CQE.
	s = r.GetSQE()
	s.PrepNop()
	s.Flags, s.UserData = SQECQESkipSuccess, 1
	s = r.GetSQE()
	s.PrepNop()
	s.UserData = 2
	if c := reapAll(t, r, 1)[0]; c.UserData != 2 || r.CQReady() != 0 {
		t.Errorf("CQE_SKIP_SUCCESS: got %+v, ready %d", c, r.CQReady())
	}
}

func TestTimeoutOps(t *testing.T) {
	r := newRing(t, 8, WithFlags(engineFlags))
	start := time.Now()
	s := r.GetSQE()
	r.PrepTimeout(s, 20*time.Millisecond, 0)
	if c := reapAll(t, r, 1)[0]; c.Res != -int32(unix.ETIME) || time.Since(start) < 20*time.Millisecond {
		t.Errorf("timeout res %d after %v", c.Res, time.Since(start))
	}

	// Count-based: completes with 0 once 2 other CQEs were posted.
	s = r.GetSQE()
	r.PrepTimeout(s, time.Minute, 2)
	s.UserData = 7
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r.GetSQE().PrepNop()
	}
	got := reapAll(t, r, 3)
	if got[2].UserData != 7 || got[2].Res != 0 {
		t.Errorf("count timeout: %+v", got)
	}

	// Linked timeout cancels a read on an empty pipe.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := mmapBuf(t, 4096)
	s = r.GetSQE()
	s.PrepRead(p[0], buf[:16], -1)
	s.Flags, s.UserData = SQEIOLink, 1
	s = r.GetSQE()
	r.PrepLinkTimeout(s, 15*time.Millisecond)
	s.UserData = 2
	res := map[uint64]int32{}
	for _, c := range reapAll(t, r, 2) {
		res[c.UserData] = c.Res
	}
	if res[1] != -int32(unix.ECANCELED) || res[2] != -int32(unix.ETIME) {
		t.Errorf("link timeout results %v, want read -ECANCELED, timeout -ETIME", res)
	}
}

func TestSubmitAndWaitTimeout(t *testing.T) {
	r := newRing(t, 8, WithFlags(engineFlags))
	start := time.Now()
	_, err := r.SubmitAndWaitTimeout(1, 30*time.Millisecond)
	if !errors.Is(err, unix.ETIME) {
		t.Fatalf("empty ring wait: err %v, want ETIME", err)
	}
	if el := time.Since(start); el < 30*time.Millisecond || el > 2*time.Second {
		t.Errorf("waited %v for a 30ms timeout", el)
	}
	r.GetSQE().PrepNop()
	if n, err := r.SubmitAndWaitTimeout(1, time.Second); n != 1 || err != nil || r.CQReady() != 1 {
		t.Fatalf("NOP wait: %d, %v, ready %d", n, err, r.CQReady())
	}
}

func TestSingleIssuerCrossThreadEEXIST(t *testing.T) {
	for _, flags := range []uint32{SetupSingleIssuer, engineFlags} {
		r := newRing(t, 8, WithFlags(flags))
		if r.Flags()&SetupSingleIssuer == 0 {
			t.Fatalf("kernel refused SINGLE_ISSUER (flags %#x); Linux 6.0+ required", r.Flags())
		}
		r.GetSQE().PrepNop()
		errc := make(chan error)
		go func() {
			runtime.LockOSThread() // a different thread from the owner's
			defer runtime.UnlockOSThread()
			_, err := r.Submit()
			errc <- err
		}()
		if err := <-errc; !errors.Is(err, unix.EEXIST) {
			t.Fatalf("flags %#x: submit from another thread: %v, want EEXIST", flags, err)
		}
		if got := reapAll(t, r, 1); got[0].Res != 0 {
			t.Fatalf("owner submit after EEXIST: %+v", got)
		}
	}
}

func TestEINTRDuringWaitResumes(t *testing.T) {
	r := newRing(t, 8, WithFlags(engineFlags))
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, syscall.SIGUSR1)
	defer signal.Stop(sigc)
	pid, tid := unix.Getpid(), unix.Gettid()

	s := r.GetSQE()
	r.PrepTimeout(s, 300*time.Millisecond, 0)
	s.UserData = 42
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				unix.Tgkill(pid, tid, syscall.SIGUSR1)
			}
		}
	}()
	start := time.Now()
	_, err := r.SubmitAndWait(1)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("SubmitAndWait interrupted by signals: %v", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("wait returned after %v, before the 300ms timeout completed", el)
	}
	if len(sigc) == 0 {
		t.Fatal("no SIGUSR1 was delivered; the test proved nothing")
	}
	if c := r.CQEAt(0); r.CQReady() != 1 || c.UserData != 42 || c.Res != -int32(unix.ETIME) {
		t.Fatalf("CQ after wait: ready %d %+v", r.CQReady(), *c)
	}
	r.CQAdvance(1)

	// The timed variant resumes too and keeps its deadline.
	go func() {
		for range 5 {
			time.Sleep(10 * time.Millisecond)
			unix.Tgkill(pid, tid, syscall.SIGUSR1)
		}
	}()
	start = time.Now()
	if _, err := r.SubmitAndWaitTimeout(1, 100*time.Millisecond); !errors.Is(err, unix.ETIME) {
		t.Fatalf("timed wait with signals: %v, want ETIME", err)
	}
	if el := time.Since(start); el < 100*time.Millisecond || el > 2*time.Second {
		t.Fatalf("timed wait took %v, want about 100ms", el)
	}
}

func TestRegisteredRing(t *testing.T) {
	r := newRing(t, 8, WithFlags(engineFlags), WithRegisteredRing())
	if !r.RegisteredRing() {
		t.Fatal("ring fd not registered (Linux 5.18+ expected)")
	}
	for i := range 3 {
		r.GetSQE().PrepNop()
		if c := reapAll(t, r, 1)[0]; c.Res != 0 {
			t.Fatalf("round %d: %+v", i, c)
		}
	}
}

func TestSQPoll(t *testing.T) {
	r := newRing(t, 8, WithSQPoll(5*time.Millisecond, 0))
	if r.Flags()&(SetupSQPoll|SetupSQAff) != SetupSQPoll|SetupSQAff {
		t.Fatalf("flags %#x lack SQPOLL|SQ_AFF", r.Flags())
	}
	for round := range 3 {
		time.Sleep(20 * time.Millisecond) // let the SQ thread go idle: NEED_WAKEUP
		for i := range 4 {
			s := r.GetSQE()
			s.PrepNop()
			s.UserData = uint64(i)
		}
		if n, err := r.Submit(); n != 4 || err != nil {
			t.Fatalf("round %d: Submit = %d, %v", round, n, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for r.CQReady() < 4 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: SQ thread never consumed the SQEs (ready %d, flags %#x)", round, r.CQReady(), r.SQFlags())
			}
			if _, err := r.SubmitAndWait(4); err != nil {
				t.Fatal(err)
			}
		}
		r.CQAdvance(4)
	}
}

func TestProbe(t *testing.T) {
	r := newRing(t, 4)
	p, err := r.Probe()
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []uint8{OpNop, OpReadv, OpWritev, OpFsync, OpReadFixed, OpWriteFixed, OpTimeout, OpLinkTimeout, OpRead, OpWrite} {
		if !p.Supported(op) {
			t.Errorf("opcode %d reported unsupported (last op %d)", op, p.LastOp)
		}
	}
	if p.Supported(255) {
		t.Error("opcode 255 reported supported")
	}
}

func TestRegisterEventfd(t *testing.T) {
	r := newRing(t, 4)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := r.RegisterEventfd(efd); err != nil {
		t.Fatal(err)
	}
	r.GetSQE().PrepNop()
	reapAll(t, r, 1)
	var b [8]byte
	if n, err := unix.Read(efd, b[:]); n != 8 || err != nil || b[0] == 0 {
		t.Fatalf("eventfd not signalled: %d %v %v", n, err, b)
	}
	if err := r.UnregisterEventfd(); err != nil {
		t.Fatal(err)
	}
}

func TestNewFallbackDropsNewestFlag(t *testing.T) {
	// SQPOLL rejects DEFER_TASKRUN, TASKRUN_FLAG and COOP_TASKRUN (EINVAL).
	// New drops flags newest first until the kernel accepts, then adds back
	// the ones that were not the problem: SINGLE_ISSUER and NO_SQARRAY.
	r := newRing(t, 8, WithFlags(SetupSingleIssuer|SetupDeferTaskrun|SetupTaskrunFlag|SetupNoSQArray), WithSQPoll(10*time.Millisecond, -1))
	want := SetupSQPoll | SetupSingleIssuer | SetupNoSQArray
	if f := r.Flags(); f != want {
		t.Fatalf("granted flags %#x, want %#x", f, want)
	}
	r.GetSQE().PrepNop()
	reapAll(t, r, 1)

	// DEFER_TASKRUN without SINGLE_ISSUER is EINVAL: it becomes COOP_TASKRUN.
	r2, err := New(8, WithFlags(SetupDeferTaskrun|SetupTaskrunFlag))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if f := r2.Flags(); f != SetupCoopTaskrun|SetupTaskrunFlag {
		t.Fatalf("granted flags %#x, want COOP_TASKRUN|TASKRUN_FLAG", f)
	}

	if _, err := New(8, WithFlags(setupSQE128)); err == nil {
		t.Fatal("SQE128 accepted although the binding assumes 64-byte SQEs")
	}
	if _, err := New(0); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("New(0) = %v, want EINVAL", err)
	}
}

func TestAvailability(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "disabled2")
	if err := os.WriteFile(two, []byte("2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := availability(two)
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, unix.EPERM) || ue.Reason[:18] != "io_uring_disabled=" {
		t.Fatalf("disabled=2: %v", err)
	}
	err = Available()
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("SKIPPING: io_uring unavailable here: %v", err)
	}
	if err != nil {
		t.Fatalf("Available() = %v", err)
	}
}

func TestHotPathsDoNotAllocate(t *testing.T) {
	r := newRing(t, 32, WithFlags(engineFlags), WithCQSize(128))
	cqes := make([]*CQE, 32)
	allocs := testing.AllocsPerRun(100, func() {
		for range 16 {
			r.GetSQE().PrepNop()
		}
		s := r.GetSQE()
		r.PrepTimeout(s, time.Millisecond, 1)
		if _, err := r.SubmitAndWaitTimeout(17, time.Second); err != nil {
			t.Fatal(err)
		}
		r.CQAdvance(r.PeekBatchCQE(cqes))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per submit/reap round", allocs)
	}
}
