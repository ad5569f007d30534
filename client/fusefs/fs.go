// Package fusefs serves a ClaudeFS file system to the kernel over FUSE
// (hanwen/go-fuse/v2): metadata operations go to the metadata service
// (client/metaclient), file data through the native data path
// (client/data).
//
// Semantics:
//   - FUSE's root (node id 1) is meta.RootIno; st_ino is the metadata
//     inode number, the FUSE generation the inode's (meta.Inode.Gen).
//   - The kernel caches attributes and entries for AttrTTL/EntryTTL; the
//     data of an open file is shared by all its handles in the mount
//     (read-after-write), flushed at close and fsync and refreshed at open
//     (close-to-open across clients).
//   - Permissions are checked by the kernel (default_permissions) against
//     the attributes this file system reports, as Linux does for a local
//     file system.
//   - A file unlinked (or renamed over) while this mount has it open stays
//     readable and writable through its open handles: instead of dropping
//     its last link the mount renames it into the hidden directory
//     OrphanDir at the root, and unlinks it there when the last handle is
//     released. A crashed mount leaves its orphans there (their names start
//     with the mount's id); they are plain files an operator may delete.
//   - POSIX (fcntl) and BSD (flock) locks are held by this mount per open
//     file description (locks.go): cluster-wide locks are not supported yet.
package fusefs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/claudefs/claudefs/client/data"
	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
)

// OrphanDir is the root's hidden directory of open-unlinked files.
const OrphanDir = ".cfs-orphans"

// Options of a mount.
type Options struct {
	// AttrTTL and EntryTTL are how long the kernel may cache attributes
	// and names (default 1 s each).
	AttrTTL, EntryTTL time.Duration
	// Logf receives errors that are not file-system outcomes. Nil: dropped.
	Logf func(format string, args ...any)
}

// FS is one mount's state shared by its nodes. It is safe for concurrent
// use; mu owns open and orphanIno.
type FS struct {
	mc   *metaclient.Client
	dc   *data.Client
	opts Options
	id   string // this mount's id: orphan names start with it

	locks *lockTable

	mu        sync.Mutex
	open      map[meta.Ino]*openFile
	orphanIno meta.Ino
}

// openFile is a file this mount has open: its data and handle count.
type openFile struct {
	f      *data.File
	refs   int
	orphan string     // its name in OrphanDir once unlinked, else ""
	attr   meta.Inode // the attributes last read: what fstat answers if a race deleted it anyway
	// noXattrs: created by this mount and given no stored extended
	// attribute through it since, so it has none: getxattr, listxattr and
	// removexattr are answered here without asking metadata (the kernel
	// asks for security.capability before every write), and a minimal ACL
	// has no stored one to remove. Another client setting one on the file
	// in that window is not seen here until it is closed and reopened.
	noXattrs bool
}

// New returns the file system of the cluster mc and dc talk to.
func New(mc *metaclient.Client, dc *data.Client, opts Options) *FS {
	if opts.AttrTTL <= 0 {
		opts.AttrTTL = time.Second
	}
	if opts.EntryTTL <= 0 {
		opts.EntryTTL = time.Second
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &FS{mc: mc, dc: dc, opts: opts, id: hex.EncodeToString(b[:]), locks: newLockTable(), open: map[meta.Ino]*openFile{}}
}

// Root returns the root node to mount.
func (f *FS) Root() fs.InodeEmbedder { return &node{fs: f, ino: meta.RootIno} }

// FSOptions are the go-fuse options the root needs. Splicing is off:
// reads answer bytes in memory, never a file descriptor, and go-fuse would
// otherwise try a splice for every read reply first (the header written
// into a pipe, the attempt given up, the pipe drained: three wasted
// system calls per read).
func (f *FS) FSOptions(mo fuse.MountOptions) *fs.Options {
	mo.DisableSplice = true
	attr, entry, neg := f.opts.AttrTTL, f.opts.EntryTTL, time.Duration(0)
	return &fs.Options{
		MountOptions:    mo,
		AttrTimeout:     &attr,
		EntryTimeout:    &entry,
		NegativeTimeout: &neg,
		RootStableAttr:  &fs.StableAttr{Ino: uint64(meta.RootIno), Mode: syscall.S_IFDIR},
		Logger:          nil,
	}
}

func (f *FS) logf(format string, args ...any) {
	if f.opts.Logf != nil {
		f.opts.Logf(format, args...)
	}
}

// errno turns an error into the errno the kernel gets: file-system
// outcomes as they are, anything else (a shard unreachable, a timeout)
// logged and answered EIO.
func (f *FS) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		f.logf("%s: %v", op, err)
		return syscall.EIO
	}
	f.logf("%s: %v", op, err)
	return syscall.EIO
}

func owner(ctx context.Context) metaclient.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return metaclient.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	return metaclient.Owner{}
}

// acquire returns the mount's open state of regular file in, opening its
// data on first use and refreshing it (close-to-open) otherwise.
func (f *FS) acquire(in meta.Inode) (*openFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of := f.open[in.Ino]; of != nil {
		of.refs++
		of.attr = in
		of.f.Refresh(in)
		return of, nil
	}
	df, err := f.dc.Open(in)
	if err != nil {
		return nil, err
	}
	of := &openFile{f: df, refs: 1, attr: in}
	f.open[in.Ino] = of
	return of, nil
}

// release drops a handle; the last one of an orphaned file deletes it.
func (f *FS) release(ctx context.Context, of *openFile) error {
	err := of.f.Flush(ctx)
	f.mu.Lock()
	of.refs--
	last := of.refs == 0
	if last {
		delete(f.open, of.f.Ino())
	}
	orphan, dir := of.orphan, f.orphanIno
	f.mu.Unlock()
	if last && orphan != "" {
		in, gerr := f.mc.GetAttr(ctx, of.f.Ino())
		d := f.doom(ctx, &in)
		if uerr := f.mc.Unlink(ctx, dir, orphan); uerr != nil && uerr != syscall.ENOENT {
			f.logf("release: deleting orphan %s/%s: %v", OrphanDir, orphan, uerr)
		} else if gerr == nil {
			f.free(ctx, d)
		}
	}
	return err
}

// withAttr returns in with the deferred changes a (mode, explicit atime
// and mtime: data.File.DeferAttr) applied.
func withAttr(in meta.Inode, a meta.SetAttr) meta.Inode {
	if a.Mask&meta.AttrMode != 0 {
		in.Mode = in.Mode&meta.ModeType | a.Mode&^meta.ModeType
	}
	if a.Mask&meta.AttrAtime != 0 {
		in.Atime = a.Atime
	}
	if a.Mask&meta.AttrMtime != 0 {
		in.Mtime = a.Mtime
	}
	return in
}

// openAttr returns what this mount knows of open file of's attributes:
// the last read, with the changes waiting for its data's commit.
func (f *FS) openAttr(of *openFile) meta.Inode {
	f.mu.Lock()
	in := of.attr
	f.mu.Unlock()
	return withAttr(in, of.f.PendingAttr())
}

// noteAttr records in as the attributes last read of ino, if open here.
func (f *FS) noteAttr(in *meta.Inode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of := f.open[in.Ino]; of != nil {
		of.attr = *in
	}
}

// knownNoXattrs reports whether ino is open here with no extended
// attributes (openFile.noXattrs).
func (f *FS) knownNoXattrs(ino meta.Ino) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	of := f.open[ino]
	return of != nil && of.noXattrs
}

// xattrsChanged notes that ino, if open here, may now have extended
// attributes.
func (f *FS) xattrsChanged(ino meta.Ino) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of := f.open[ino]; of != nil {
		of.noXattrs = false
	}
}

// opened returns the open state of ino, if the mount has it open.
func (f *FS) opened(ino meta.Ino) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[ino]
}

// orphanDir returns the hidden directory of open-unlinked files, making it.
func (f *FS) orphanDir(ctx context.Context) (meta.Ino, error) {
	f.mu.Lock()
	ino := f.orphanIno
	f.mu.Unlock()
	if ino != 0 {
		return ino, nil
	}
	in, err := f.mc.Mkdir(ctx, meta.RootIno, OrphanDir, 0o700, metaclient.Owner{})
	if err == syscall.EEXIST {
		var e meta.Entry
		if e, err = f.mc.Lookup(ctx, meta.RootIno, OrphanDir); err == nil {
			in = *e.Attr
		}
	}
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.orphanIno = in.Ino
	f.mu.Unlock()
	return in.Ino, nil
}

// doomed is a regular file whose last link an operation is about to
// drop, with the stripes it had: once the metadata has deleted the inode,
// free deletes their shards.
type doomed struct {
	in      meta.Inode
	stripes []meta.StripeVersion
}

// maxFreeStripes bounds the stripes listed for freeing (4 TiB at EC 4+2,
// 1 MiB units); a larger file's rest is left to the scrubber.
const maxFreeStripes = 1 << 20

// free deletes a doomed file's shards if its inode is gone now (another
// link made meanwhile keeps it, and its data).
func (f *FS) free(ctx context.Context, d *doomed) {
	if d == nil || len(d.stripes) == 0 {
		return
	}
	if _, err := f.mc.GetAttr(ctx, d.in.Ino); err != syscall.ENOENT {
		return
	}
	f.dc.DropStripes(d.in.Ino, d.in.Layout, d.stripes)
}

// doom returns the doomed state of inode in if it is a regular file with
// a single link, else nil.
func (f *FS) doom(ctx context.Context, in *meta.Inode) *doomed {
	if in == nil || in.Mode&meta.ModeType != meta.ModeRegular || in.Nlink != 1 {
		return nil
	}
	d := &doomed{in: *in}
	for from := uint64(0); len(d.stripes) < maxFreeStripes; {
		svs, more, err := f.mc.Stripes(ctx, in.Ino, from, meta.MaxStripesPerCommit)
		if err != nil {
			break
		}
		d.stripes = append(d.stripes, svs...)
		if !more || len(svs) == 0 {
			break
		}
		from = svs[len(svs)-1].Index + 1
	}
	return d
}

// keepIfOpen moves parent/name into OrphanDir when it names a regular
// file with a single link that this mount has open, so removing or
// replacing the name does not delete it under its open handles. It
// returns the inode it moved (0: none); when it did not move it and the
// name is a file's last link, it returns what to free once the name is gone.
func (f *FS) keepIfOpen(ctx context.Context, parent meta.Ino, name string) (kept meta.Ino, d *doomed, err error) {
	e, err := f.mc.Lookup(ctx, parent, name)
	if err != nil {
		if err == syscall.ENOENT {
			return 0, nil, nil
		}
		return 0, nil, err
	}
	of := f.opened(e.Ino)
	if of == nil || e.Attr == nil || e.Attr.Mode&meta.ModeType != meta.ModeRegular || e.Attr.Nlink > 1 {
		return 0, f.doom(ctx, e.Attr), nil
	}
	dir, err := f.orphanDir(ctx)
	if err != nil {
		return 0, nil, err
	}
	oname := fmt.Sprintf("%s.%d", f.id, uint64(e.Ino))
	if err := f.mc.Rename(ctx, parent, name, dir, oname, 0); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	of.orphan = oname
	f.mu.Unlock()
	return e.Ino, nil, nil
}

// unkeep moves a file keepIfOpen moved into OrphanDir back to
// parent/name (the operation it made room for failed).
func (f *FS) unkeep(ctx context.Context, ino meta.Ino, parent meta.Ino, name string) {
	of := f.opened(ino)
	if of == nil {
		return
	}
	f.mu.Lock()
	oname, dir := of.orphan, f.orphanIno
	f.mu.Unlock()
	if oname == "" {
		return
	}
	if err := f.mc.Rename(ctx, dir, oname, parent, name, metaclient.RenameNoReplace); err != nil {
		f.logf("putting %s back from %s/%s: %v (it stays there until closed)", name, OrphanDir, oname, err)
		return
	}
	f.mu.Lock()
	of.orphan = ""
	f.mu.Unlock()
}

// fillAttr copies an inode into FUSE attributes.
func (f *FS) fillAttr(in *meta.Inode, out *fuse.Attr) {
	of := f.opened(in.Ino)
	if of != nil {
		if a := of.f.PendingAttr(); a.Mask != 0 { // deferred until the data's commit
			c := withAttr(*in, a)
			in = &c
		}
	}
	out.Ino = uint64(in.Ino)
	out.Mode = in.Mode
	out.Nlink = in.Nlink
	out.Uid, out.Gid = in.Uid, in.Gid
	out.Rdev = in.Rdev
	out.Size = in.Size
	if in.Mode&meta.ModeType == meta.ModeSymlink {
		out.Size = uint64(len(in.Target))
	}
	out.Blksize = 1 << 20
	out.Blocks = (out.Size + 511) / 512
	at, mt, ct := time.Unix(0, in.Atime), time.Unix(0, in.Mtime), time.Unix(0, in.Ctime)
	out.SetTimes(&at, &mt, &ct)
	if of != nil {
		if of.f.Dirty() {
			out.Size = of.f.Size()
		}
		out.Blocks = (out.Size + 511) / 512
		f.mu.Lock()
		if of.orphan != "" && out.Nlink > 0 {
			out.Nlink--
		}
		f.mu.Unlock()
	}
}
