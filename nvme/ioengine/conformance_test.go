package ioengine

import (
	"bytes"
	"errors"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kinds are the engines every conformance test runs against.
var kinds = []Kind{Uring, Pread}

// withEngine runs fn with a fresh engine of kind on a locked thread. The
// io_uring case skips, loudly, only when io_uring is unavailable.
func withEngine(t testing.TB, kind Kind, depth int, fn func(e Engine)) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	e, err := New(kind, depth, t.Logf)
	if err != nil && kind == Uring && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)) {
		t.Skipf("SKIPPING the io_uring engine: unavailable on this machine: %v", err)
	}
	if err != nil {
		t.Fatalf("New(%s, %d): %v", kind, depth, err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if e.Name() != string(kind) || e.Depth() != depth {
		t.Fatalf("engine %s depth %d, want %s depth %d", e.Name(), e.Depth(), kind, depth)
	}
	fn(e)
}

func forEachKind(t *testing.T, depth int, fn func(t *testing.T, e Engine)) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			withEngine(t, kind, depth, func(e Engine) { fn(t, e) })
		})
	}
}

func mmapBuf(tb testing.TB, n int) []byte {
	tb.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		tb.Fatalf("mmap %d bytes: %v", n, err)
	}
	tb.Cleanup(func() { unix.Munmap(b) })
	return b
}

// openFile opens name under dir with extra flags, creating it.
func openFile(tb testing.TB, dir, name string, flags int) int {
	tb.Helper()
	fd, err := unix.Open(filepath.Join(dir, name), unix.O_CREAT|unix.O_CLOEXEC|flags, 0o600)
	if err != nil {
		tb.Fatalf("open %s: %v", name, err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

func pattern(b []byte, seed int) {
	for i := range b {
		b[i] = byte(seed*31 + i*7 + i>>8)
	}
}

// runAll prepares ops in order (submitting and reaping whenever the engine
// reports ErrQueueFull), waits for every completion and returns the results
// by user data, plus how often the queue was full.
func runAll(t testing.TB, e Engine, ops []Op) (map[uint64]int32, int) {
	t.Helper()
	res := make(map[uint64]int32, len(ops))
	out := make([]Completion, 8)
	reap := func() {
		for {
			n := e.Reap(out)
			for _, c := range out[:n] {
				if _, dup := res[c.UserData]; dup {
					t.Fatalf("duplicate completion for user data %d", c.UserData)
				}
				res[c.UserData] = c.Res
			}
			if n < len(out) {
				return
			}
		}
	}
	full := 0
	for i := 0; i < len(ops); {
		err := e.Prepare(&ops[i])
		if err == ErrQueueFull {
			full++
			if _, err := e.Submit(1, 0); err != nil {
				t.Fatalf("Submit: %v", err)
			}
			reap()
			continue
		}
		if err != nil {
			t.Fatalf("Prepare(op %d): %v", i, err)
		}
		i++
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(res) < len(ops) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d completions", len(res), len(ops))
		}
		if _, err := e.Submit(1, time.Second); err != nil {
			t.Fatalf("Submit: %v", err)
		}
		reap()
	}
	if len(res) != len(ops) {
		t.Fatalf("%d completions for %d ops", len(res), len(ops))
	}
	return res, full
}

func TestConformanceNop(t *testing.T) {
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		ops := []Op{{Opcode: OpNop, UserData: 1}, {Opcode: OpNop, UserData: 2}, {Opcode: OpNop, UserData: 3}}
		res, _ := runAll(t, e, ops)
		for ud, r := range res {
			if r != 0 {
				t.Errorf("NOP %d: res %d", ud, r)
			}
		}
	})
}

func TestConformanceManyInFlight(t *testing.T) {
	const blocks, bs, depth = 256, 4096, 16
	forEachKind(t, depth, func(t *testing.T, e Engine) {
		dir := t.TempDir()
		fd := openFile(t, dir, "data", unix.O_RDWR)
		want := make([]byte, blocks*bs)
		for b := range blocks {
			pattern(want[b*bs:(b+1)*bs], b)
		}
		if _, err := unix.Pwrite(fd, want, 0); err != nil {
			t.Fatal(err)
		}
		if err := e.RegisterFiles([]int{fd}); err != nil {
			t.Fatal(err)
		}
		buf := mmapBuf(t, blocks*bs)
		ops := make([]Op, blocks)
		for i := range ops {
			b := (i * 97) % blocks // scattered, distinct
			ops[i] = Op{Opcode: OpRead, BufIndex: -1, Buf: buf[b*bs : (b+1)*bs], Off: int64(b * bs), UserData: uint64(1000 + b)}
		}
		res, full := runAll(t, e, ops)
		if full == 0 {
			t.Errorf("%d ops through depth %d never hit ErrQueueFull", blocks, depth)
		}
		for b := range blocks {
			if r := res[uint64(1000+b)]; r != bs {
				t.Fatalf("block %d: res %d", b, r)
			}
		}
		if !bytes.Equal(buf, want) {
			t.Fatal("read data does not match the file: completions were mismatched")
		}
	})
}

func TestConformanceDepthBound(t *testing.T) {
	const depth = 4
	forEachKind(t, depth, func(t *testing.T, e Engine) {
		for round := range 3 {
			for i := range depth {
				if err := e.Prepare(&Op{Opcode: OpNop, UserData: uint64(i)}); err != nil {
					t.Fatalf("round %d op %d: %v", round, i, err)
				}
			}
			if err := e.Prepare(&Op{Opcode: OpNop}); err != ErrQueueFull {
				t.Fatalf("op beyond depth: %v, want ErrQueueFull", err)
			}
			if n, err := e.Submit(depth, 5*time.Second); n != depth || err != nil {
				t.Fatalf("Submit = %d, %v", n, err)
			}
			// Completed but unreaped ops still count against Depth.
			if err := e.Prepare(&Op{Opcode: OpNop}); err != ErrQueueFull {
				t.Fatalf("op with %d unreaped completions: %v, want ErrQueueFull", depth, err)
			}
			out := make([]Completion, 2*depth)
			if n := e.Reap(out); n != depth {
				t.Fatalf("Reap = %d, want %d", n, depth)
			}
		}
	})
}

func TestConformanceFixedBuffersODirect(t *testing.T) {
	const n, bs = 16, 4096
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		fd := openFile(t, t.TempDir(), "direct", unix.O_RDWR|unix.O_DIRECT)
		wbuf, rbuf, plain := mmapBuf(t, n*bs), mmapBuf(t, n*bs), mmapBuf(t, n*bs)
		pattern(wbuf, 5)
		if err := e.RegisterFiles([]int{fd}); err != nil {
			t.Fatal(err)
		}
		if err := e.RegisterBuffers([][]byte{wbuf, rbuf}); err != nil {
			t.Fatal(err)
		}
		var ops []Op
		for i := range n {
			op := Op{Opcode: OpWrite, BufIndex: 0, Buf: wbuf[i*bs : (i+1)*bs], Off: int64(i * bs), UserData: uint64(i)}
			if i%2 == 1 {
				op.Flags = FlagDatasync // RWF_DSYNC
			}
			ops = append(ops, op)
		}
		ops = append(ops, Op{Opcode: OpFsync, Flags: FlagDatasync, UserData: 100})
		res, _ := runAll(t, e, ops)
		for ud, r := range res {
			if (ud == 100 && r != 0) || (ud != 100 && r != bs) {
				t.Fatalf("write/fsync %d: res %d", ud, r)
			}
		}
		ops = ops[:0]
		for i := range n {
			ops = append(ops,
				Op{Opcode: OpRead, BufIndex: 1, Buf: rbuf[i*bs : (i+1)*bs], Off: int64(i * bs), UserData: uint64(i)},
				Op{Opcode: OpRead, BufIndex: -1, Buf: plain[i*bs : (i+1)*bs], Off: int64(i * bs), UserData: uint64(n + i)})
		}
		res, _ = runAll(t, e, ops)
		for ud, r := range res {
			if r != bs {
				t.Fatalf("read %d: res %d", ud, r)
			}
		}
		if !bytes.Equal(rbuf, wbuf) || !bytes.Equal(plain, wbuf) {
			t.Fatal("O_DIRECT read-back differs from the written data")
		}
	})
}

func TestConformanceLinks(t *testing.T) {
	const bs = 4096
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		dir := t.TempDir()
		rw := openFile(t, dir, "rw", unix.O_RDWR)
		wo := openFile(t, dir, "rw", unix.O_WRONLY) // same file, write-only
		if err := e.RegisterFiles([]int{rw, wo}); err != nil {
			t.Fatal(err)
		}
		buf := mmapBuf(t, 2*bs)
		pattern(buf[:bs], 9)

		// A failing head cancels the rest; the linked write never runs.
		res, _ := runAll(t, e, []Op{
			{Opcode: OpRead, Flags: FlagLink, File: 1, BufIndex: -1, Buf: buf[bs:], UserData: 1},
			{Opcode: OpWrite, Flags: FlagLink, File: 0, BufIndex: -1, Buf: buf[:bs], UserData: 2},
			{Opcode: OpNop, UserData: 3},
		})
		if res[1] != -int32(unix.EBADF) || res[2] != -int32(unix.ECANCELED) || res[3] != -int32(unix.ECANCELED) {
			t.Fatalf("chain results %v, want -EBADF, -ECANCELED, -ECANCELED", res)
		}
		var st unix.Stat_t
		if err := unix.Fstat(rw, &st); err != nil || st.Size != 0 {
			t.Fatalf("cancelled write ran: size %d (%v)", st.Size, err)
		}

		// A successful chain runs in order: write, fsync, read back.
		res, _ = runAll(t, e, []Op{
			{Opcode: OpWrite, Flags: FlagLink, BufIndex: -1, Buf: buf[:bs], UserData: 1},
			{Opcode: OpFsync, Flags: FlagLink, UserData: 2},
			{Opcode: OpRead, BufIndex: -1, Buf: buf[bs:], UserData: 3},
		})
		if res[1] != bs || res[2] != 0 || res[3] != bs || !bytes.Equal(buf[:bs], buf[bs:]) {
			t.Fatalf("ordered chain results %v", res)
		}

		// A short read breaks the link too (read past EOF returns 0).
		res, _ = runAll(t, e, []Op{
			{Opcode: OpRead, Flags: FlagLink, BufIndex: -1, Buf: buf[bs:], Off: bs, UserData: 1},
			{Opcode: OpNop, UserData: 2},
		})
		if res[1] != 0 || res[2] != -int32(unix.ECANCELED) {
			t.Fatalf("short-read chain results %v, want 0, -ECANCELED", res)
		}
	})
}

func TestConformanceFsync(t *testing.T) {
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		fd := openFile(t, t.TempDir(), "f", unix.O_RDWR)
		if err := e.RegisterFiles([]int{fd}); err != nil {
			t.Fatal(err)
		}
		buf := mmapBuf(t, 4096)
		res, _ := runAll(t, e, []Op{
			{Opcode: OpWrite, BufIndex: -1, Buf: buf, UserData: 1},
			{Opcode: OpFsync, UserData: 2},
			{Opcode: OpFsync, Flags: FlagDatasync, UserData: 3},
		})
		if res[1] != 4096 || res[2] != 0 || res[3] != 0 {
			t.Fatalf("results %v", res)
		}
	})
}

func TestConformanceWake(t *testing.T) {
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		watchdog := time.AfterFunc(30*time.Second, func() { panic("Wake did not unblock Submit(1, no timeout)") })
		defer watchdog.Stop()
		for round := range 3 {
			go func() {
				time.Sleep(30 * time.Millisecond)
				if err := e.Wake(); err != nil {
					t.Errorf("Wake: %v", err)
				}
			}()
			start := time.Now()
			if _, err := e.Submit(1, 0); err != nil {
				t.Fatalf("round %d: Submit: %v", round, err)
			}
			if el := time.Since(start); el < 20*time.Millisecond {
				t.Fatalf("round %d: Submit returned after %v, before the Wake", round, el)
			}
		}
		// A Wake while the owner is busy is kept for its next sleep.
		if err := e.Wake(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := e.Submit(1, 0); err != nil || time.Since(start) > time.Second {
			t.Fatalf("pending Wake: Submit took %v (%v)", time.Since(start), err)
		}
		// Wakeups never show up as completions, and I/O still works.
		out := make([]Completion, 8)
		if n := e.Reap(out); n != 0 {
			t.Fatalf("Reap returned %d completions after Wakes: %+v", n, out[:n])
		}
		res, _ := runAll(t, e, []Op{{Opcode: OpNop, UserData: 5}})
		if r, ok := res[5]; !ok || r != 0 {
			t.Fatalf("NOP after Wakes: %v", res)
		}
	})
}

func TestConformanceSubmitTimeout(t *testing.T) {
	forEachKind(t, 8, func(t *testing.T, e Engine) {
		start := time.Now()
		if _, err := e.Submit(1, 30*time.Millisecond); err != nil {
			t.Fatalf("timeout is not an error: %v", err)
		}
		if el := time.Since(start); el < 30*time.Millisecond || el > 5*time.Second {
			t.Fatalf("Submit(1, 30ms) returned after %v", el)
		}
	})
}

func TestConformanceRejectsInvalidOps(t *testing.T) {
	forEachKind(t, 2, func(t *testing.T, e Engine) {
		fd := openFile(t, t.TempDir(), "f", unix.O_RDWR)
		reg, other := mmapBuf(t, 8192), mmapBuf(t, 4096)
		if err := e.RegisterFiles([]int{fd}); err != nil {
			t.Fatal(err)
		}
		if err := e.RegisterBuffers([][]byte{reg}); err != nil {
			t.Fatal(err)
		}
		for name, op := range map[string]Op{
			"file index":        {Opcode: OpRead, File: 1, BufIndex: -1, Buf: other},
			"negative file":     {Opcode: OpFsync, File: -1},
			"reserved userdata": {Opcode: OpNop, UserData: ReservedUserData},
			"buffer index":      {Opcode: OpRead, BufIndex: 1, Buf: reg[:4096]},
			"outside buffer":    {Opcode: OpWrite, BufIndex: 0, Buf: other},
			"opcode":            {Opcode: 99},
		} {
			if err := e.Prepare(&op); err == nil || err == ErrQueueFull {
				t.Errorf("%s: Prepare = %v, want a validation error", name, err)
			}
		}
		// Rejected ops took no room.
		for i := range 2 {
			if err := e.Prepare(&Op{Opcode: OpWrite, BufIndex: 0, Buf: reg[4096*i : 4096*(i+1)], Off: int64(4096 * i), UserData: uint64(i)}); err != nil {
				t.Fatalf("valid op %d: %v", i, err)
			}
		}
		if _, err := e.Submit(2, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		out := make([]Completion, 2)
		for got := 0; got < 2; {
			got += e.Reap(out[got:])
		}
	})
}

func TestConformanceNoAllocs(t *testing.T) {
	forEachKind(t, 32, func(t *testing.T, e Engine) {
		fd := openFile(t, t.TempDir(), "f", unix.O_RDWR|unix.O_DIRECT)
		buf := mmapBuf(t, 16*4096)
		if err := unix.Ftruncate(fd, 16*4096); err != nil {
			t.Fatal(err)
		}
		if err := e.RegisterFiles([]int{fd}); err != nil {
			t.Fatal(err)
		}
		if err := e.RegisterBuffers([][]byte{buf}); err != nil {
			t.Fatal(err)
		}
		op := &Op{Opcode: OpRead, BufIndex: 0}
		out := make([]Completion, 16)
		allocs := testing.AllocsPerRun(200, func() {
			for i := range 16 {
				op.Buf, op.Off, op.UserData = buf[i*4096:(i+1)*4096], int64(i*4096), uint64(i)
				if err := e.Prepare(op); err != nil {
					t.Fatal(err)
				}
			}
			for got := 0; got < 16; {
				if _, err := e.Submit(1, 0); err != nil {
					t.Fatal(err)
				}
				got += e.Reap(out)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations per 16-read round", allocs)
		}
	})
}
