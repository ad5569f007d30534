package data

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// versionWindow is how many stripe versions one metadata query loads.
const versionWindow = 1024

// File is one regular file's data as this client sees it: the committed
// stripe versions it has read from metadata, the stripes it has written
// and not yet flushed (write-back, whole stripes in memory), and the size
// including them. One File serves every open handle of the file in the
// process, so reads see the process's own writes (read-after-write);
// Flush commits them, so another client that opens the file afterwards
// sees them (close-to-open).
//
// It is safe for concurrent use; mu owns every field below it.
type File struct {
	c      *Client
	ino    meta.Ino
	layout meta.Layout
	sb     uint64 // stripe bytes: k × unit

	mu       sync.Mutex
	size     uint64
	versions map[uint64]uint64 // stripe → committed version (absent: a hole)
	windows  map[uint64]bool   // version windows loaded
	dirty    map[uint64][]byte // stripe → its new content (up to sb bytes; zeros past the end)
	flushing map[uint64]chan struct{}
	err      error // the first failure of a background flush, until Flush reports it
	// pending holds attribute changes made while data was buffered, to be
	// committed with that data, in the same metadata command (DeferAttr).
	pending meta.SetAttr
	raNext  uint64 // stripes below it were fetched by readahead already
	lastEnd uint64 // where the last read ended: a read from there is sequential
	sem     chan struct{}
	// recent holds the stripes this file fetched last (at most
	// recentStripes), whatever the shared cache admitted: a sequential
	// reader's next kernel reads hit them.
	recent []recentStripe
	// loading holds the stripes being fetched into recent, closed once
	// they are there: a reader arriving between a fetch's end and its
	// entry in recent waits instead of fetching the stripe again.
	loading map[recentKey]chan struct{}
}

type recentKey struct{ s, v uint64 }

type recentStripe struct {
	s, v uint64
	data stripeData
}

// recentStripes bounds File.recent: readahead's stripes, the current
// one, and room for a second reader of the file.
const recentStripes = readaheadStripes + 4

// stripe returns stripe s at version v, read-only, from the file's recent
// stripes, the shared cache or the dataplanes. Called without mu.
func (f *File) stripe(ctx context.Context, s, v uint64) (stripeData, error) {
	key := recentKey{s, v}
	f.mu.Lock()
	for {
		for _, r := range f.recent {
			if r.s == s && r.v == v {
				f.mu.Unlock()
				return r.data, nil
			}
		}
		ch, ok := f.loading[key]
		if !ok {
			break
		}
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return stripeData{}, ctx.Err()
		}
		f.mu.Lock()
		if _, again := f.loading[key]; !again {
			// Loaded (or failed): take it from recent, or fetch it here.
			for _, r := range f.recent {
				if r.s == s && r.v == v {
					f.mu.Unlock()
					return r.data, nil
				}
			}
			break
		}
	}
	ch := make(chan struct{})
	f.loading[key] = ch
	f.mu.Unlock()
	data, err := f.c.readStripe(ctx, f.ino, f.layout, s, v)
	f.mu.Lock()
	if err == nil {
		f.remember(s, v, data)
	}
	delete(f.loading, key)
	close(ch)
	f.mu.Unlock()
	return data, err
}

// remember adds stripe s at version v to the file's recent stripes, once:
// a reader that met readahead's fetch of the same stripe in flight gets
// the same data, and a second entry would push out a stripe the reader
// is about to need (that cost a refetch of one stripe in six on a busy
// machine). Called with mu held.
func (f *File) remember(s, v uint64, data stripeData) {
	for _, r := range f.recent {
		if r.s == s && r.v == v {
			return
		}
	}
	if len(f.recent) >= recentStripes {
		// Out goes the lowest stripe, the one furthest behind a forward
		// reader: readahead's fetches finish in any order, so the oldest
		// entry may be a stripe the reader has yet to reach.
		low := 0
		for i, r := range f.recent {
			if r.s < f.recent[low].s {
				low = i
			}
		}
		f.recent = append(f.recent[:low], f.recent[low+1:]...)
	}
	f.recent = append(f.recent, recentStripe{s: s, v: v, data: data})
}

// Open returns the data of regular file in, whose attributes the caller
// just read from metadata.
func (c *Client) Open(in meta.Inode) (*File, error) {
	if in.Mode&meta.ModeType != meta.ModeRegular {
		return nil, syscall.EINVAL
	}
	l := in.Layout
	if l.K == 0 {
		l = meta.DefaultLayout
	}
	if err := checkLayout(l); err != nil {
		return nil, err
	}
	return &File{
		c: c, ino: in.Ino, layout: l, sb: l.StripeBytes(), size: in.Size,
		versions: map[uint64]uint64{}, windows: map[uint64]bool{}, dirty: map[uint64][]byte{},
		flushing: map[uint64]chan struct{}{}, sem: make(chan struct{}, c.opts.FlushesPerFile),
		loading: map[recentKey]chan struct{}{},
	}, nil
}

// Ino is the file's inode number.
func (f *File) Ino() meta.Ino { return f.ino }

// Size is the file's size including unflushed writes.
func (f *File) Size() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// Dirty reports whether the file has writes not yet committed.
func (f *File) Dirty() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dirty) > 0 || len(f.flushing) > 0
}

// DeferAttr holds the attribute changes a (mode and explicit atime and
// mtime only) to be committed with the file's buffered data when it is
// flushed (fsync, close), in the same metadata command, after the stripes:
// a file written and then given its times and mode (cp -a, tar, rsync)
// costs one commit instead of three, and its times are not overwritten by
// the flush's. It defers nothing and returns false when a holds anything
// else or no data is buffered or in flight; the caller then commits a
// itself (no flush can follow it and overwrite its mtime). Until the
// flush, another client sees neither the data nor these attributes.
func (f *File) DeferAttr(a meta.SetAttr) bool {
	if a.Mask == 0 || a.Mask&^(meta.AttrMode|meta.AttrAtime|meta.AttrMtime) != 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dirty) == 0 && len(f.flushing) == 0 {
		return false
	}
	f.pending = mergeAttr(f.pending, a)
	return true
}

// PendingAttr returns the attribute changes DeferAttr holds (Mask 0: none).
func (f *File) PendingAttr() meta.SetAttr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending
}

// keepAttr puts back deferred changes a whose commit failed, under any
// made since. Called with mu held.
func (f *File) keepAttr(a meta.SetAttr) { f.pending = mergeAttr(a, f.pending) }

// mergeAttr returns the changes of old then a: a's fields where a has
// them, old's elsewhere.
func mergeAttr(old, a meta.SetAttr) meta.SetAttr {
	if a.Mask&meta.AttrMode != 0 {
		old.Mode = a.Mode
	}
	if a.Mask&meta.AttrAtime != 0 {
		old.Atime = a.Atime
	}
	if a.Mask&meta.AttrMtime != 0 {
		old.Mtime = a.Mtime
	}
	old.Mask |= a.Mask
	return old
}

// Refresh forgets what the file knew of metadata when it has nothing
// unflushed: an open after another client's close sees that client's data.
func (f *File) Refresh(in meta.Inode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dirty) > 0 || len(f.flushing) > 0 {
		return
	}
	f.size = in.Size
	clear(f.versions)
	clear(f.windows)
}

// version returns stripe s's committed version (0: a hole), loading its
// window from metadata if needed. Called with mu held; it may release it.
func (f *File) version(ctx context.Context, s uint64) (uint64, error) {
	w := s / versionWindow
	for !f.windows[w] {
		f.mu.Unlock()
		got, err := f.loadWindow(ctx, w)
		f.mu.Lock()
		if err != nil {
			return 0, err
		}
		if !f.windows[w] {
			for _, sv := range got {
				if _, ok := f.versions[sv.Index]; !ok {
					f.versions[sv.Index] = sv.Version
				}
			}
			f.windows[w] = true
		}
	}
	return f.versions[s], nil
}

func (f *File) loadWindow(ctx context.Context, w uint64) ([]meta.StripeVersion, error) {
	from, end := w*versionWindow, (w+1)*versionWindow
	var out []meta.StripeVersion
	for from < end {
		svs, more, err := f.c.meta.Stripes(ctx, f.ino, from, versionWindow)
		if err != nil {
			return nil, err
		}
		for _, sv := range svs {
			if sv.Index < end {
				out = append(out, sv)
			}
		}
		if !more || len(svs) == 0 || svs[len(svs)-1].Index+1 >= end {
			break
		}
		from = svs[len(svs)-1].Index + 1
	}
	return out, nil
}

// waitFlushing waits for stripe s's flush in flight, if any. Called with
// mu held; it may release it. It reports whether it waited.
func (f *File) waitFlushing(ctx context.Context, s uint64) (bool, error) {
	ch, ok := f.flushing[s]
	if !ok {
		return false, nil
	}
	f.mu.Unlock()
	defer f.mu.Lock()
	select {
	case <-ch:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// ReadAt reads into p from offset off; it returns fewer bytes only at the
// end of the file.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	b, err := f.read(ctx, p, off, false)
	return len(b), err
}

// Read returns the file's bytes from offset off, at most len(p) of them
// (fewer only at the end of the file): when they lie in one shard of a
// stripe already read, a view of the stripe's buffer, which the caller
// must not change; else p, filled.
func (f *File) Read(ctx context.Context, p []byte, off int64) ([]byte, error) {
	return f.read(ctx, p, off, true)
}

func (f *File) read(ctx context.Context, p []byte, off int64, view bool) ([]byte, error) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if uint64(off) >= f.size {
		return p[:0], nil
	}
	n := int(min(uint64(len(p)), f.size-uint64(off)))
	sequential := uint64(off) == f.lastEnd
	f.lastEnd = uint64(off) + uint64(n)
	done := 0
	for done < n {
		pos := uint64(off) + uint64(done)
		s, so := pos/f.sb, pos%f.sb
		m := int(min(uint64(n-done), f.sb-so))
		if d, ok := f.dirty[s]; ok {
			got := 0
			if so < uint64(len(d)) {
				got = copy(p[done:done+m], d[so:])
			}
			clear(p[done+got : done+m]) // past the buffer's end: zeros
			done += m
			continue
		}
		if waited, err := f.waitFlushing(ctx, s); err != nil {
			return p[:done], err
		} else if waited {
			continue
		}
		v, err := f.version(ctx, s)
		if err != nil {
			return p[:done], err
		}
		if _, ok := f.dirty[s]; ok || f.flushing[s] != nil {
			continue // written while the lock was released
		}
		if v == 0 {
			clear(p[done : done+m])
			done += m
			continue
		}
		if sequential {
			f.readahead(s)
		} else if b, ok := f.readOneShard(ctx, s, v, int(so), m); ok {
			// A random read within one shard: that shard alone.
			if view && m == n {
				return b, nil
			}
			copy(p[done:done+m], b)
			done += m
			continue
		}
		f.mu.Unlock()
		data, err := f.stripe(ctx, s, v)
		f.mu.Lock()
		if err != nil {
			return p[:done], err
		}
		if b, ok := data.view(int(so), m); ok && view && m == n {
			return b, nil
		}
		data.copyAt(p[done:done+m], int(so))
		done += m
	}
	return p[:n], nil
}

// readOneShard returns the m bytes at offset so of stripe s (version v)
// when they lie in one data shard and the stripe is not among the file's
// recent ones (read-only bytes): a read of the whole shard reads that
// shard alone, checked end to end; a read of part of it reads just that
// range (readRange). False when the stripe should be read whole (the
// bytes span shards, the stripe is at hand, or the shard or range could
// not be read: missing, corrupt, another version, its dataplane down —
// the stripe's read rebuilds it). Called with mu held; it may release it.
func (f *File) readOneShard(ctx context.Context, s, v uint64, so, m int) ([]byte, bool) {
	unit := int(f.layout.StripeUnit)
	idx, w := so/unit, so%unit
	if w+m > unit {
		return nil, false
	}
	for _, r := range f.recent {
		if r.s == s && r.v == v {
			return nil, false
		}
	}
	if idx < ZeroMaskBits && zeroMask(v)&(1<<idx) != 0 {
		return nil, false // a zero shard: the stripe path answers zeros without a read
	}
	f.mu.Unlock()
	var b []byte
	var err error
	if m < unit {
		b, err = f.c.readRange(ctx, f.ino, f.layout, s, v, idx, w, m)
	} else {
		b, err = f.c.readDataShard(ctx, f.ino, f.layout, s, v, idx)
	}
	f.mu.Lock()
	if err != nil {
		if ctx.Err() == nil {
			f.c.logf("data: inode %v stripe %d shard %d: %v (reading the stripe)", f.ino, s, idx, err)
		}
		return nil, false
	}
	return b, true // m < unit: the range; else w is 0 and b the whole shard
}

// readaheadStripes is how many stripes readahead fetches ahead of a
// sequential reader (32 MiB at EC 4+2, 1 MiB units): enough to keep every
// dataplane busy while the reader copies.
const readaheadStripes = 8

// readahead fetches the stripes after s into the file's recent stripes in
// the background, each once, while reads go in order. Called with mu held.
func (f *File) readahead(s uint64) {
	for next := max(f.raNext, s+1); next <= s+readaheadStripes && next*f.sb < f.size; next++ {
		f.raNext = next + 1
		v, ok := f.versions[next]
		if _, d := f.dirty[next]; !ok || v == 0 || d {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), f.c.opts.Timeout)
			defer cancel()
			_, _ = f.stripe(ctx, next, v)
		}()
	}
}

// WriteAt writes p at offset off into the write-back buffer; whole stripes
// are flushed in the background as they fill.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if uint64(off)+uint64(len(p)) > MaxStripes*f.sb {
		return 0, syscall.EFBIG
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		err := f.err
		f.err = nil
		return 0, err
	}
	// A write after a deferred mtime: the flush's mtime (the write's) wins.
	f.pending.Mask &^= meta.AttrMtime
	done := 0
	for done < len(p) {
		pos := uint64(off) + uint64(done)
		s, so := pos/f.sb, pos%f.sb
		m := int(min(uint64(len(p)-done), f.sb-so))
		d, ok := f.dirty[s]
		if !ok {
			if waited, err := f.waitFlushing(ctx, s); err != nil {
				return done, err
			} else if waited {
				continue
			}
			if err := f.throttle(ctx); err != nil {
				return done, err
			}
			if _, ok := f.dirty[s]; ok || f.flushing[s] != nil {
				continue
			}
			full := so == 0 && uint64(m) == f.sb
			var v uint64
			if !full && s*f.sb < f.size {
				var err error
				if v, err = f.version(ctx, s); err != nil {
					return done, err
				}
				if _, ok := f.dirty[s]; ok || f.flushing[s] != nil {
					continue
				}
			}
			if v != 0 {
				d = make([]byte, f.sb)
				// Read-modify-write: the stripe's current bytes first.
				f.mu.Unlock()
				base, err := f.stripe(ctx, s, v)
				f.mu.Lock()
				if err != nil {
					return done, err
				}
				if _, ok := f.dirty[s]; ok || f.flushing[s] != nil || f.versions[s] != v {
					continue
				}
				base.copyAt(d, 0)
			}
			f.dirty[s] = d
		}
		if end := int(so) + m; end > len(d) {
			if s > 0 || end > int(f.sb)/8 {
				end = int(f.sb) // not a small file: the whole stripe at once
			}
			d = growStripe(d, end, int(f.sb))
			f.dirty[s] = d
		}
		copy(d[so:], p[done:done+m])
		done += m
		f.size = max(f.size, s*f.sb+so+uint64(m))
		if so+uint64(m) == f.sb {
			f.startFlush(s)
		}
	}
	if len(f.dirty) > f.c.opts.DirtyStripesPerFile {
		for s := range f.dirty {
			f.startFlush(s)
		}
	}
	return done, nil
}

// growStripe returns stripe buffer d grown to hold at least end bytes
// (end ≤ sb): a new stripe's buffer holds only what was written so far,
// the rest reads as zeros. A small file (its first stripe, up to an
// eighth of it) so costs a small buffer, not a whole stripe (4 MiB to
// allocate and clear, to scan for trailing zeros at flush, to hold in the
// cache); one that grows doubles, from 64 KiB. Larger writes get the
// whole stripe at once.
func growStripe(d []byte, end, sb int) []byte {
	n := min((max(end, 2*len(d), 64<<10)+4095)&^4095, sb)
	nd := make([]byte, n)
	copy(nd, d)
	return nd
}

// throttle waits while the file has too many flushes in flight, so a fast
// writer holds at most a bounded amount of memory. Called with mu held.
func (f *File) throttle(ctx context.Context) error {
	for len(f.flushing) >= 2*f.c.opts.FlushesPerFile {
		var ch chan struct{}
		for _, c := range f.flushing {
			ch = c
			break
		}
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		f.mu.Lock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// startFlush hands dirty stripe s to a background flush, with the
// deferred attribute changes. Called with mu held.
func (f *File) startFlush(s uint64) {
	d := f.dirty[s]
	delete(f.dirty, s)
	ch := make(chan struct{})
	f.flushing[s] = ch
	size := min(f.size, (s+1)*f.sb)
	a := f.pending
	f.pending = meta.SetAttr{}
	go func() {
		f.sem <- struct{}{}
		err := f.flushStripe(s, d, size, a)
		<-f.sem
		f.mu.Lock()
		delete(f.flushing, s)
		if err != nil {
			if _, ok := f.dirty[s]; !ok {
				f.dirty[s] = d // keep the data: a later Flush tries again
			}
			f.keepAttr(a) // and the changes
			if f.err == nil {
				f.err = err
			}
		}
		f.mu.Unlock()
		close(ch)
	}()
}

// flushStripe writes and commits one stripe: shards first, then the
// version in metadata (with the attribute changes a), then the old
// version's shards go.
func (f *File) flushStripe(s uint64, d []byte, size uint64, a meta.SetAttr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*f.c.opts.Timeout)
	defer cancel()
	v, err := f.c.writeStripe(ctx, f.ino, f.layout, s, d)
	if err != nil {
		return err
	}
	_, res, err := f.c.meta.CommitStripesAttr(ctx, f.ino, []meta.StripeVersion{{Index: s, Version: v}}, size, a)
	if err != nil {
		f.c.deleteShards(f.ino, f.layout, s, v, nil)
		return fmt.Errorf("data: commit of inode %v stripe %d: %w", f.ino, s, err)
	}
	f.c.cache.Set(cacheKey(f.ino, s, v), flatStripe(d, int(f.layout.StripeUnit), int(f.layout.K)), int64(cap(d)))
	f.mu.Lock()
	f.versions[s] = v
	f.mu.Unlock()
	f.c.dropOld(f.ino, f.layout, res.OldStripes)
	return nil
}

// Flush writes and commits every buffered stripe and waits for the
// flushes in flight (fsync, close); it returns the first failure since
// the last Flush.
func (f *File) Flush(ctx context.Context) error {
	f.mu.Lock()
	for s := range f.dirty {
		f.startFlush(s)
	}
	chs := make([]chan struct{}, 0, len(f.flushing))
	for _, ch := range f.flushing {
		chs = append(chs, ch)
	}
	f.mu.Unlock()
	for _, ch := range chs {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	err := f.err
	f.err = nil
	// Deferred changes no stripe flush took (its data went out before
	// they were made): committed alone.
	a := f.pending
	f.pending = meta.SetAttr{}
	f.mu.Unlock()
	if a.Mask == 0 {
		return err
	}
	if err == nil {
		_, _, err = f.c.meta.SetAttr(ctx, f.ino, a)
	}
	if err != nil {
		f.mu.Lock()
		f.keepAttr(a)
		f.mu.Unlock()
	}
	return err
}

// Truncate sets the file's size, committing buffered writes first. A cut
// in the middle of a stripe rewrites that stripe with its tail zeroed, so
// growing the file again shows zeros.
func (f *File) Truncate(ctx context.Context, size uint64, extra meta.SetAttr) (meta.Inode, error) {
	if size > MaxStripes*f.sb {
		return meta.Inode{}, syscall.EFBIG
	}
	if err := f.Flush(ctx); err != nil {
		return meta.Inode{}, err
	}
	extra.Mask |= meta.AttrSize
	extra.Size = size
	in, res, err := f.c.meta.SetAttr(ctx, f.ino, extra)
	if err != nil {
		return meta.Inode{}, err
	}
	f.c.dropOld(f.ino, f.layout, res.OldStripes)
	f.mu.Lock()
	old := f.size
	f.size = size
	first := (size + f.sb - 1) / f.sb
	for s := range f.versions {
		if s >= first {
			delete(f.versions, s)
		}
	}
	var v uint64
	s := size / f.sb
	if size < old && size%f.sb != 0 {
		v, err = f.version(ctx, s)
	}
	f.mu.Unlock()
	if err != nil || v == 0 {
		return in, err
	}
	base, err := f.stripe(ctx, s, v)
	if err != nil {
		return meta.Inode{}, err
	}
	nb := make([]byte, size%f.sb) // the rest of the stripe: zeros
	base.copyAt(nb, 0)
	nv, err := f.c.writeStripe(ctx, f.ino, f.layout, s, nb)
	if err != nil {
		return meta.Inode{}, err
	}
	in, res, err = f.c.meta.CommitStripes(ctx, f.ino, []meta.StripeVersion{{Index: s, Version: nv}}, size)
	if err != nil {
		f.c.deleteShards(f.ino, f.layout, s, nv, nil)
		return meta.Inode{}, err
	}
	f.c.cache.Set(cacheKey(f.ino, s, nv), flatStripe(nb, int(f.layout.StripeUnit), int(f.layout.K)), int64(cap(nb)))
	f.mu.Lock()
	f.versions[s] = nv
	f.mu.Unlock()
	f.c.dropOld(f.ino, f.layout, res.OldStripes)
	return in, nil
}

// flushTimeout bounds a flush at close when the caller's context has no deadline.
const flushTimeout = 2 * time.Minute

// FlushTimeout returns a context for a flush from ctx, bounded by flushTimeout.
func FlushTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, flushTimeout)
}
