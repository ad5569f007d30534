package uring

import (
	"errors"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// engineFlags is the flag set the storage engine uses.
const engineFlags = SetupSingleIssuer | SetupDeferTaskrun | SetupTaskrunFlag | SetupSubmitAll | SetupNoSQArray

// newRing locks the test goroutine to its thread and creates a ring on it.
// It skips (loudly) only when io_uring is unavailable: ENOSYS or EPERM.
func newRing(tb testing.TB, entries uint32, opts ...Option) *Ring {
	tb.Helper()
	runtime.LockOSThread()
	tb.Cleanup(runtime.UnlockOSThread)
	r, err := New(entries, opts...)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		tb.Skipf("SKIPPING: io_uring is unavailable on this machine (%v); the binding is NOT tested here", err)
	}
	if err != nil {
		tb.Fatalf("New(%d): %v", entries, err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return r
}

// mmapBuf returns n bytes of page-aligned anonymous memory outside the Go heap.
func mmapBuf(tb testing.TB, n int) []byte {
	tb.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		tb.Fatalf("mmap %d bytes: %v", n, err)
	}
	tb.Cleanup(func() { unix.Munmap(b) })
	return b
}

// tempFile opens a fresh file under tb.TempDir with extra open flags
// (e.g. unix.O_DIRECT) and sizes it to size bytes.
func tempFile(tb testing.TB, flags int, size int64) int {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "data")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|flags, 0o600)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		tb.Fatalf("ftruncate: %v", err)
	}
	return fd
}

// reapAll waits until want CQEs arrived and returns them in arrival order.
func reapAll(tb testing.TB, r *Ring, want int) []CQE {
	tb.Helper()
	var got []CQE
	for len(got) < want {
		if _, err := r.SubmitAndWait(1); err != nil {
			tb.Fatalf("SubmitAndWait: %v", err)
		}
		r.ForEachCQE(func(c *CQE) { got = append(got, *c) })
	}
	if len(got) != want {
		tb.Fatalf("got %d CQEs, want %d: %+v", len(got), want, got)
	}
	return got
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
}
