package fusefs

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func lk(start, end uint64, typ uint32) *fuse.FileLock {
	return &fuse.FileLock{Start: start, End: end, Typ: typ}
}

// TestLockTable: locks conflict between handles only, an unlock in the
// middle splits a lock, and a waiter gets the lock when it goes or gives
// up when its context ends.
func TestLockTable(t *testing.T) {
	tb := newLockTable()
	ctx := context.Background()
	a, b := &handle{}, &handle{}
	if e := tb.set(ctx, 1, a, lk(0, 99, syscall.F_WRLCK), false); e != 0 {
		t.Fatal(e)
	}
	if e := tb.set(ctx, 1, a, lk(50, 60, syscall.F_WRLCK), false); e != 0 {
		t.Fatalf("a handle's own locks do not conflict: %v", e)
	}
	if e := tb.set(ctx, 1, b, lk(10, 10, syscall.F_RDLCK), false); e != syscall.EAGAIN {
		t.Fatalf("read lock under another handle's write lock: %v, want EAGAIN", e)
	}
	if e := tb.set(ctx, 2, b, lk(10, 10, syscall.F_WRLCK), false); e != 0 {
		t.Fatalf("another inode: %v", e)
	}
	// Unlock 40..69: b may lock there, not at 39 or 70.
	if e := tb.set(ctx, 1, a, lk(40, 69, syscall.F_UNLCK), false); e != 0 {
		t.Fatal(e)
	}
	for _, c := range []struct {
		at   uint64
		want syscall.Errno
	}{{39, syscall.EAGAIN}, {40, 0}, {69, 0}, {70, syscall.EAGAIN}} {
		if e := tb.set(ctx, 1, b, lk(c.at, c.at, syscall.F_RDLCK), false); e != c.want {
			t.Fatalf("b at %d: %v, want %v", c.at, e, c.want)
		}
		_ = tb.set(ctx, 1, b, lk(c.at, c.at, syscall.F_UNLCK), false)
	}
	got := make(chan syscall.Errno)
	go func() { got <- tb.set(ctx, 1, b, lk(0, 0, syscall.F_WRLCK), true) }()
	select {
	case e := <-got:
		t.Fatalf("waiter returned %v while the lock is held", e)
	case <-time.After(50 * time.Millisecond):
	}
	tb.drop(1, a)
	if e := <-got; e != 0 {
		t.Fatalf("waiter after the holder closed: %v", e)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if e := tb.set(cctx, 1, a, lk(0, 0, syscall.F_RDLCK), true); e != syscall.EINTR {
		t.Fatalf("interrupted waiter: %v, want EINTR", e)
	}
}
