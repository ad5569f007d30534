package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// Locks: POSIX (fcntl) and BSD (flock) locks are held per open file
// description, as Linux's open-file-description locks are: two opens of
// one file conflict even in one process. They are this mount's only: a
// lock does not keep another mount's processes out (cluster-wide locks
// are not supported yet).

// lockRange is a lock on bytes [start, end] (end inclusive, as FUSE's).
type lockRange struct {
	h          *handle
	start, end uint64
	typ        uint32 // syscall.F_RDLCK or F_WRLCK
}

// lockTable holds the mount's locks; mu owns by, and cond is signalled
// whenever a lock goes.
type lockTable struct {
	mu   sync.Mutex
	cond *sync.Cond
	by   map[meta.Ino][]lockRange
}

func newLockTable() *lockTable {
	t := &lockTable{by: map[meta.Ino][]lockRange{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// conflict returns a lock of another handle that lk conflicts with. Called with mu held.
func (t *lockTable) conflict(ino meta.Ino, h *handle, lk *fuse.FileLock) (lockRange, bool) {
	for _, r := range t.by[ino] {
		if r.h != h && r.start <= lk.End && lk.Start <= r.end && (r.typ == syscall.F_WRLCK || lk.Typ == syscall.F_WRLCK) {
			return r, true
		}
	}
	return lockRange{}, false
}

// set applies lk for h: F_UNLCK removes h's locks in the range, others
// replace them. With wait it blocks until no other lock conflicts or ctx
// ends (EINTR); without, a conflict is EAGAIN.
func (t *lockTable) set(ctx context.Context, ino meta.Ino, h *handle, lk *fuse.FileLock, wait bool) syscall.Errno {
	t.mu.Lock()
	defer t.mu.Unlock()
	if lk.Typ != syscall.F_UNLCK {
		if wait {
			stop := context.AfterFunc(ctx, func() {
				t.mu.Lock()
				t.cond.Broadcast()
				t.mu.Unlock()
			})
			defer stop()
		}
		for {
			if _, ok := t.conflict(ino, h, lk); !ok {
				break
			}
			if !wait {
				return syscall.EAGAIN
			}
			if ctx.Err() != nil {
				return syscall.EINTR
			}
			t.cond.Wait()
		}
	}
	var keep []lockRange
	for _, r := range t.by[ino] {
		if r.h != h || r.end < lk.Start || lk.End < r.start {
			keep = append(keep, r)
			continue
		}
		if r.start < lk.Start {
			keep = append(keep, lockRange{h: h, start: r.start, end: lk.Start - 1, typ: r.typ})
		}
		if r.end > lk.End {
			keep = append(keep, lockRange{h: h, start: lk.End + 1, end: r.end, typ: r.typ})
		}
	}
	if lk.Typ != syscall.F_UNLCK {
		keep = append(keep, lockRange{h: h, start: lk.Start, end: lk.End, typ: lk.Typ})
	}
	if len(keep) == 0 {
		delete(t.by, ino)
	} else {
		t.by[ino] = keep
	}
	t.cond.Broadcast()
	return 0
}

// drop removes every lock of h (its last close).
func (t *lockTable) drop(ino meta.Ino, h *handle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keep []lockRange
	for _, r := range t.by[ino] {
		if r.h != h {
			keep = append(keep, r)
		}
	}
	if len(keep) == 0 {
		delete(t.by, ino)
	} else {
		t.by[ino] = keep
	}
	t.cond.Broadcast()
}

var (
	_ fs.NodeGetlker  = (*node)(nil)
	_ fs.NodeSetlker  = (*node)(nil)
	_ fs.NodeSetlkwer = (*node)(nil)
)

func (n *node) Getlk(ctx context.Context, fh fs.FileHandle, _ uint64, lk *fuse.FileLock, _ uint32, out *fuse.FileLock) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok {
		return syscall.EBADF
	}
	t := n.fs.locks
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.conflict(n.ino, h, lk); ok {
		*out = fuse.FileLock{Start: r.start, End: r.end, Typ: r.typ}
		return 0
	}
	*out = *lk
	out.Typ = syscall.F_UNLCK
	return 0
}

func (n *node) Setlk(ctx context.Context, fh fs.FileHandle, _ uint64, lk *fuse.FileLock, _ uint32) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok {
		return syscall.EBADF
	}
	return n.fs.locks.set(ctx, n.ino, h, lk, false)
}

func (n *node) Setlkw(ctx context.Context, fh fs.FileHandle, _ uint64, lk *fuse.FileLock, _ uint32) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok {
		return syscall.EBADF
	}
	// The kernel's interrupt (a signal to the waiting process) ends the wait.
	return n.fs.locks.set(ctx, n.ino, h, lk, true)
}
