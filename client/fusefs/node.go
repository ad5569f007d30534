package fusefs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// node is one inode of the mount. Directory nodes remember the entries
// their last readdir returned with attributes for a moment, so the
// lookups of a readdirplus do not ask the metadata service again.
type node struct {
	fs.Inode
	fs  *FS
	ino meta.Ino

	mu      sync.Mutex
	listed  map[string]meta.Inode
	listedT time.Time
}

var (
	_ fs.NodeLookuper      = (*node)(nil)
	_ fs.NodeGetattrer     = (*node)(nil)
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeOpener        = (*node)(nil)
	_ fs.NodeReader        = (*node)(nil)
	_ fs.NodeWriter        = (*node)(nil)
	_ fs.NodeFlusher       = (*node)(nil)
	_ fs.NodeFsyncer       = (*node)(nil)
	_ fs.NodeReleaser      = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeMknoder       = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeReadlinker    = (*node)(nil)
	_ fs.NodeReaddirer     = (*node)(nil)
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeStatfser      = (*node)(nil)
	_ fs.NodeAllocater     = (*node)(nil)
	_ fs.NodeLseeker       = (*node)(nil)
	_ fs.NodeAccesser      = (*node)(nil)
)

// detach keeps the caller's identity but not the kernel's interrupt: the
// Go runtime's preemption signals interrupt FUSE requests all the time,
// and an operation half done on the metadata service is better finished
// (each is bounded by the metadata client's timeout) than answered EIO.
func detach(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// listedTTL is how long readdir's attributes answer lookups.
const listedTTL = time.Second

// child makes (or finds, by inode number) the node of in.
func (n *node) child(ctx context.Context, in *meta.Inode, out *fuse.EntryOut) *fs.Inode {
	n.fs.fillAttr(in, &out.Attr)
	out.NodeId = 0
	out.Generation = in.Gen
	return n.NewInode(ctx, &node{fs: n.fs, ino: in.Ino}, fs.StableAttr{Mode: in.Mode & syscall.S_IFMT, Ino: uint64(in.Ino), Gen: in.Gen})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if n.ino == meta.RootIno && name == OrphanDir {
		return nil, syscall.ENOENT
	}
	n.mu.Lock()
	in, ok := n.listed[name]
	if ok && time.Since(n.listedT) < listedTTL {
		delete(n.listed, name)
		n.mu.Unlock()
		return n.child(ctx, &in, out), 0
	}
	n.mu.Unlock()
	e, err := n.fs.mc.Lookup(ctx, n.ino, name)
	if err != nil {
		return nil, n.fs.errno("lookup", err)
	}
	return n.child(ctx, e.Attr, out), 0
}

func (n *node) getattr(ctx context.Context) (meta.Inode, syscall.Errno) {
	in, err := n.fs.mc.GetAttr(ctx, n.ino)
	return in, n.fs.errno("getattr", err)
}

func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = detach(ctx)
	in, e := n.getattr(ctx)
	if e == syscall.ENOENT {
		// Deleted by another operation that raced with this file's open
		// (the orphan directory keeps it otherwise): the open handle
		// still has a file, with no links.
		if of := n.fs.opened(n.ino); of != nil {
			n.fs.mu.Lock()
			in, e = of.attr, 0
			n.fs.mu.Unlock()
			in.Nlink = 0
		}
	}
	if e != 0 {
		return e
	}
	n.fs.noteAttr(&in)
	n.fs.fillAttr(&in, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = detach(ctx)
	var a meta.SetAttr
	if m, ok := in.GetMode(); ok {
		a.Mask |= meta.AttrMode
		a.Mode = m
	}
	if u, ok := in.GetUID(); ok {
		a.Mask |= meta.AttrUid
		a.Uid = u
	}
	if g, ok := in.GetGID(); ok {
		a.Mask |= meta.AttrGid
		a.Gid = g
	}
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		a.Mask |= meta.AttrAtimeNow
	} else if t, ok := in.GetATime(); ok {
		a.Mask |= meta.AttrAtime
		a.Atime = t.UnixNano()
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		a.Mask |= meta.AttrMtimeNow
	} else if t, ok := in.GetMTime(); ok {
		a.Mask |= meta.AttrMtime
		a.Mtime = t.UnixNano()
	}
	if t, ok := in.GetCTime(); ok {
		a.Mask |= meta.AttrCtime
		a.Ctime = t.UnixNano()
	}
	var (
		res meta.Inode
		err error
	)
	if size, ok := in.GetSize(); ok {
		res, err = n.truncate(ctx, size, a)
	} else {
		res, err = n.setattr(ctx, a)
	}
	if err != nil {
		return n.fs.errno("setattr", err)
	}
	n.fs.fillAttr(&res, &out.Attr)
	return 0
}

// setattr applies a (no size change) and returns the attributes. On a
// file this mount is writing, changes of times and mode that take no
// permission away wait for the data's commit and go in the same metadata
// command (data.File.DeferAttr): cp -a's utimensat and ACL-as-chmod after
// its writes cost no commit of their own. Taking a permission away is
// committed at once, so no other client keeps access it should lose.
func (n *node) setattr(ctx context.Context, a meta.SetAttr) (meta.Inode, error) {
	if of := n.fs.opened(n.ino); of != nil {
		cur := n.fs.openAttr(of)
		const perms = 0o7777
		loosens := a.Mask&meta.AttrMode == 0 || cur.Mode&perms&^(a.Mode&perms) == 0
		if loosens && of.f.DeferAttr(a) {
			return cur, nil // fillAttr adds the deferred changes
		}
	}
	res, _, err := n.fs.mc.SetAttr(ctx, n.ino, a)
	if err == nil {
		n.fs.noteAttr(&res)
	}
	return res, err
}

// truncate cuts or grows a regular file through its data (open or not).
func (n *node) truncate(ctx context.Context, size uint64, a meta.SetAttr) (meta.Inode, error) {
	in, err := n.fs.mc.GetAttr(ctx, n.ino)
	if err != nil {
		return meta.Inode{}, err
	}
	if meta.IsDir(in.Mode) {
		return meta.Inode{}, syscall.EISDIR
	}
	if in.Mode&meta.ModeType != meta.ModeRegular {
		return meta.Inode{}, syscall.EINVAL
	}
	of, err := n.fs.acquire(in)
	if err != nil {
		return meta.Inode{}, err
	}
	res, err := of.f.Truncate(ctx, size, a)
	if rerr := n.fs.release(ctx, of); err == nil {
		err = rerr
	}
	return res, err
}

// handle is an open file's FUSE handle.
type handle struct{ of *openFile }

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ctx = detach(ctx)
	in, e := n.getattr(ctx)
	if e != 0 {
		return nil, 0, e
	}
	if in.Mode&meta.ModeType != meta.ModeRegular {
		return nil, 0, 0 // devices, fifos: the kernel serves them
	}
	of, err := n.fs.acquire(in)
	if err != nil {
		return nil, 0, n.fs.errno("open", err)
	}
	return &handle{of: of}, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ctx = detach(ctx)
	if n.ino == meta.RootIno && name == OrphanDir {
		return nil, nil, 0, syscall.EPERM
	}
	in, existed, err := n.fs.mc.Create(ctx, n.ino, name, mode&^syscall.S_IFMT, 0, owner(ctx), flags&syscall.O_EXCL != 0)
	if err != nil {
		return nil, nil, 0, n.fs.errno("create", err)
	}
	of, err := n.fs.acquire(in)
	if err != nil {
		return nil, nil, 0, n.fs.errno("create", err)
	}
	if !existed {
		n.fs.mu.Lock()
		of.noXattrs = true
		n.fs.mu.Unlock()
	}
	if existed && flags&syscall.O_TRUNC != 0 {
		if in, err = of.f.Truncate(ctx, 0, meta.SetAttr{}); err != nil {
			_ = n.fs.release(ctx, of)
			return nil, nil, 0, n.fs.errno("create", err)
		}
	}
	return n.child(ctx, &in, out), &handle{of: of}, 0, 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx = detach(ctx)
	h, ok := fh.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	b, err := h.of.f.Read(ctx, dest, off)
	if err != nil {
		return nil, n.fs.errno("read", err)
	}
	return fuse.ReadResultData(b), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, p []byte, off int64) (uint32, syscall.Errno) {
	ctx = detach(ctx)
	h, ok := fh.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	got, err := h.of.f.WriteAt(ctx, p, off)
	if err != nil {
		return uint32(got), n.fs.errno("write", err)
	}
	return uint32(got), 0
}

func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	ctx = detach(ctx)
	if h, ok := fh.(*handle); ok {
		return n.fs.errno("flush", h.of.f.Flush(ctx))
	}
	return 0
}

func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, _ uint32) syscall.Errno {
	ctx = detach(ctx)
	if h, ok := fh.(*handle); ok {
		return n.fs.errno("fsync", h.of.f.Flush(ctx))
	}
	return 0
}

func (n *node) Release(_ context.Context, fh fs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		n.fs.locks.drop(n.ino, h)
		// The kernel does not wait for release: bound it ourselves.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return n.fs.errno("release", n.fs.release(rctx, h.of))
	}
	return 0
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	ctx = detach(ctx)
	switch mode {
	case 0:
	case 1: // FALLOC_FL_KEEP_SIZE: space is not reserved ahead, so nothing to do
		return 0
	default:
		return syscall.EOPNOTSUPP // punching holes and the like: not supported yet
	}
	in, e := n.getattr(ctx)
	if e != 0 {
		return e
	}
	cur := in.Size
	if h, ok := fh.(*handle); ok {
		cur = max(cur, h.of.f.Size())
	}
	if off+size <= cur {
		return 0
	}
	_, err := n.truncate(ctx, off+size, meta.SetAttr{})
	return n.fs.errno("fallocate", err)
}

func (n *node) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	ctx = detach(ctx)
	in, e := n.getattr(ctx)
	if e != 0 {
		return 0, e
	}
	size := in.Size
	if h, ok := fh.(*handle); ok && h.of.f.Dirty() {
		size = h.of.f.Size()
	}
	// Holes are not tracked yet: the whole file counts as data.
	switch whence {
	case 3: // SEEK_DATA
		if off >= size {
			return 0, syscall.ENXIO
		}
		return off, 0
	case 4: // SEEK_HOLE
		if off > size {
			return 0, syscall.ENXIO
		}
		return size, 0
	}
	return 0, syscall.EINVAL
}

func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	ctx = detach(ctx)
	// default_permissions: the kernel checks access itself; this only
	// tells it the inode still exists.
	_, e := n.getattr(ctx)
	return e
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	in, err := n.fs.mc.Mkdir(ctx, n.ino, name, mode, owner(ctx))
	if err != nil {
		return nil, n.fs.errno("mkdir", err)
	}
	return n.child(ctx, &in, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	in, _, err := n.fs.mc.Create(ctx, n.ino, name, mode, dev, owner(ctx), true)
	if err != nil {
		return nil, n.fs.errno("mknod", err)
	}
	return n.child(ctx, &in, out), 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = detach(ctx)
	return n.fs.errno("rmdir", n.fs.mc.Rmdir(ctx, n.ino, name))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = detach(ctx)
	kept, d, err := n.fs.keepIfOpen(ctx, n.ino, name)
	if err != nil || kept != 0 {
		return n.fs.errno("unlink", err)
	}
	if err := n.fs.mc.Unlink(ctx, n.ino, name); err != nil {
		return n.fs.errno("unlink", err)
	}
	n.fs.free(ctx, d)
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	var (
		d    *doomed
		kept meta.Ino
	)
	if flags == 0 && !(n.ino == np.ino && name == newName) {
		// A replaced file this mount has open stays readable; one it
		// has not is freed.
		var err error
		if kept, d, err = n.fs.keepIfOpen(ctx, np.ino, newName); err != nil {
			return n.fs.errno("rename", err)
		}
	}
	if err := n.fs.mc.Rename(ctx, n.ino, name, np.ino, newName, flags); err != nil {
		if kept != 0 {
			n.fs.unkeep(ctx, kept, np.ino, newName)
		}
		return n.fs.errno("rename", err)
	}
	n.fs.free(ctx, d)
	return 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	in, err := n.fs.mc.Link(ctx, t.ino, n.ino, name)
	if err != nil {
		return nil, n.fs.errno("link", err)
	}
	return n.child(ctx, &in, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	in, err := n.fs.mc.Symlink(ctx, n.ino, name, target, owner(ctx))
	if err != nil {
		return nil, n.fs.errno("symlink", err)
	}
	return n.child(ctx, &in, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx = detach(ctx)
	t, err := n.fs.mc.Readlink(ctx, n.ino)
	if err != nil {
		return nil, n.fs.errno("readlink", err)
	}
	return []byte(t), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ctx = detach(ctx)
	in, e := n.getattr(ctx)
	if e != 0 {
		return nil, e
	}
	list := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: uint64(n.ino)},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: uint64(in.Parent)},
	}
	listed := map[string]meta.Inode{}
	after := ""
	for {
		es, more, err := n.fs.mc.ReadDir(ctx, n.ino, after, meta.MaxReadDir)
		if err != nil {
			return nil, n.fs.errno("readdir", err)
		}
		for _, e := range es {
			if n.ino == meta.RootIno && e.Name == OrphanDir {
				continue
			}
			list = append(list, fuse.DirEntry{Name: e.Name, Mode: e.Mode & syscall.S_IFMT, Ino: uint64(e.Ino)})
			if e.Attr != nil {
				listed[e.Name] = *e.Attr
			}
		}
		if !more || len(es) == 0 {
			break
		}
		after = es[len(es)-1].Name
	}
	n.mu.Lock()
	n.listed, n.listedT = listed, time.Now()
	n.mu.Unlock()
	return fs.NewListDirStream(list), 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx = detach(ctx)
	if n.fs.knownNoXattrs(n.ino) {
		return 0, syscall.ENODATA
	}
	v, err := n.fs.mc.GetXattr(ctx, n.ino, attr)
	if err != nil {
		return 0, n.fs.errno("getxattr", err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, value []byte, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	if attr == aclAccessXattr {
		return n.fs.errno("setxattr", n.setAccessACL(ctx, value))
	}
	var f uint32
	if flags&1 != 0 { // XATTR_CREATE
		f |= meta.FlagXattrCreate
	}
	if flags&2 != 0 { // XATTR_REPLACE
		f |= meta.FlagXattrReplace
	}
	n.fs.xattrsChanged(n.ino) // before: a getxattr racing the set must ask
	return n.fs.errno("setxattr", n.fs.mc.SetXattr(ctx, n.ino, attr, value, f))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx = detach(ctx)
	if n.fs.knownNoXattrs(n.ino) {
		return 0, 0
	}
	names, err := n.fs.mc.ListXattr(ctx, n.ino)
	if err != nil {
		return 0, n.fs.errno("listxattr", err)
	}
	var b strings.Builder
	for _, nm := range names {
		b.WriteString(nm)
		b.WriteByte(0)
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	ctx = detach(ctx)
	if n.fs.knownNoXattrs(n.ino) {
		return syscall.ENODATA
	}
	return n.fs.errno("removexattr", n.fs.mc.RemoveXattr(ctx, n.ino, attr))
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	ctx = detach(ctx)
	st, err := n.fs.mc.StatFS(ctx)
	if err != nil {
		return n.fs.errno("statfs", err)
	}
	total, free, err := n.fs.dc.Capacity(ctx)
	if err != nil {
		n.fs.logf("statfs: %v", err)
	}
	const bsize = 4096
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks, out.Bfree, out.Bavail = total/bsize, free/bsize, free/bsize
	out.Files = st.InodeLimit
	if st.InodeLimit > st.Inodes {
		out.Ffree = st.InodeLimit - st.Inodes
	}
	out.NameLen = meta.MaxNameBytes
	return 0
}
