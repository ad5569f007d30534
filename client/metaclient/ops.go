package metaclient

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// Owner is who creates an inode.
type Owner struct{ Uid, Gid uint32 }

// outcome turns a command's result into the operation's error:
// conflicts and aborted transactions start the operation over.
func outcome(res *meta.Result, shard uint32) error {
	switch res.Status {
	case meta.OK:
		return nil
	case meta.StatusConflict, meta.StatusAborted:
		return errConflict
	}
	return statusErr(res.Status, shard)
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return syscall.EINVAL
	case len(name) > meta.MaxNameBytes:
		return syscall.ENAMETOOLONG
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return syscall.EINVAL
		}
	}
	return nil
}

// GetAttr returns inode ino.
func (c *Client) GetAttr(ctx context.Context, ino meta.Ino) (meta.Inode, error) {
	a, err := c.query(ctx, ino.Shard(), &meta.Query{Kind: meta.QGetAttr, Ino: ino})
	if err != nil {
		return meta.Inode{}, err
	}
	return a.Inode, statusErr(a.Status, ino.Shard())
}

// Lookup returns the entry name of directory parent, with its inode's
// attributes. When the inode lives on another shard it is read there; if
// it is gone by then, the entry was removed meanwhile and the lookup runs
// again, so the answer is one state of the namespace, never a mix.
func (c *Client) Lookup(ctx context.Context, parent meta.Ino, name string) (meta.Entry, error) {
	if len(name) > meta.MaxNameBytes {
		return meta.Entry{}, syscall.ENAMETOOLONG
	}
	for attempt := 0; ; attempt++ {
		a, err := c.query(ctx, parent.Shard(), &meta.Query{Kind: meta.QLookup, Ino: parent, Name: name})
		if err != nil {
			return meta.Entry{}, err
		}
		if err := statusErr(a.Status, parent.Shard()); err != nil {
			return meta.Entry{}, err
		}
		e := a.Entry
		if e.Attr != nil {
			return e, nil
		}
		in, err := c.GetAttr(ctx, e.Ino)
		if err == syscall.ENOENT && attempt < 16 {
			continue
		}
		if err != nil {
			return meta.Entry{}, err
		}
		e.Attr = &in
		return e, nil
	}
}

// Create makes a regular file (or, by mode's type bits, a fifo, socket or
// device: rdev) named name in parent. With excl false an existing file is
// returned instead (open(O_CREAT) without O_EXCL); existed says which.
func (c *Client) Create(ctx context.Context, parent meta.Ino, name string, mode, rdev uint32, o Owner, excl bool) (in meta.Inode, existed bool, err error) {
	if err := checkName(name); err != nil {
		return meta.Inode{}, false, err
	}
	if mode&meta.ModeType == 0 {
		mode |= meta.ModeRegular
	}
	if meta.IsDir(mode) || mode&meta.ModeType == meta.ModeSymlink {
		return meta.Inode{}, false, syscall.EINVAL
	}
	for attempt := 0; attempt < 8; attempt++ {
		in, err = c.createNode(ctx, parent, name, meta.Part{Kind: meta.PartCreate, Mode: mode, Rdev: rdev, Uid: o.Uid, Gid: o.Gid})
		if err != syscall.EEXIST || excl {
			return in, false, err
		}
		e, lerr := c.Lookup(ctx, parent, name)
		if lerr == syscall.ENOENT {
			continue // removed meanwhile: create again
		}
		if lerr != nil {
			return meta.Inode{}, false, lerr
		}
		if meta.IsDir(e.Mode) {
			return meta.Inode{}, true, syscall.EISDIR
		}
		return *e.Attr, true, nil
	}
	return meta.Inode{}, false, syscall.EAGAIN
}

// Symlink makes a symbolic link name in parent pointing at target.
func (c *Client) Symlink(ctx context.Context, parent meta.Ino, name, target string, o Owner) (meta.Inode, error) {
	if err := checkName(name); err != nil {
		return meta.Inode{}, err
	}
	if len(target) > meta.MaxSymlinkBytes {
		return meta.Inode{}, syscall.ENAMETOOLONG
	}
	return c.createNode(ctx, parent, name, meta.Part{Kind: meta.PartCreate, Mode: meta.ModeSymlink | 0o777, Target: target, Uid: o.Uid, Gid: o.Gid})
}

// createNode creates a non-directory inode in the parent's shard and its
// entry, in one command.
func (c *Client) createNode(ctx context.Context, parent meta.Ino, name string, create meta.Part) (meta.Inode, error) {
	s := parent.Shard()
	res, err := c.exec(ctx, s, []meta.Part{create,
		{Kind: meta.PartAddEntry, Flags: meta.FlagNewInode, Parent: parent, Name: name, Mode: create.Mode}})
	if err != nil {
		return meta.Inode{}, err
	}
	if err := statusErr(res.Status, s); err != nil {
		return meta.Inode{}, err
	}
	in, ok := res.Inode(res.Ino)
	if !ok {
		return meta.Inode{}, fmt.Errorf("metaclient: shard %d: create answered no inode", s)
	}
	return in, nil
}

// Mkdir makes directory name in parent. The new directory lives in a
// shard picked from its parent and name; when that is not the parent's
// shard the mkdir is a cross-shard transaction.
func (c *Client) Mkdir(ctx context.Context, parent meta.Ino, name string, mode uint32, o Owner) (meta.Inode, error) {
	if err := checkName(name); err != nil {
		if name == "." || name == ".." {
			return meta.Inode{}, syscall.EEXIST
		}
		return meta.Inode{}, err
	}
	mode = meta.ModeDir | mode&^uint32(meta.ModeType)
	create := meta.Part{Kind: meta.PartCreate, Mode: mode, Uid: o.Uid, Gid: o.Gid, Parent: parent}
	ps := parent.Shard()
	ds := c.dirShard(parent, name)
	if ds == ps {
		return c.createNode(ctx, parent, name, create)
	}
	var in meta.Inode
	err := retry(ctx, func() error {
		res, prepared, err := c.txn(ctx, ps, map[uint32][]meta.Part{ds: {create}}, func(p map[uint32]*meta.Result) []meta.Part {
			return []meta.Part{{Kind: meta.PartAddEntry, Parent: parent, Name: name, Ino: p[ds].Ino, Mode: mode}}
		}, nil)
		if err != nil {
			return err
		}
		if err := outcome(res, ps); err != nil {
			return err
		}
		p := prepared[ds]
		in, _ = p.Inode(p.Ino)
		return nil
	})
	return in, err
}

// Unlink removes the non-directory entry name from parent.
func (c *Client) Unlink(ctx context.Context, parent meta.Ino, name string) error {
	return c.remove(ctx, parent, name, false)
}

// Rmdir removes the empty directory name from parent.
func (c *Client) Rmdir(ctx context.Context, parent meta.Ino, name string) error {
	switch name {
	case ".":
		return syscall.EINVAL
	case "..":
		return syscall.ENOTEMPTY
	}
	return c.remove(ctx, parent, name, true)
}

func (c *Client) remove(ctx context.Context, parent meta.Ino, name string, dir bool) error {
	if len(name) > meta.MaxNameBytes {
		return syscall.ENAMETOOLONG
	}
	typeFlag := uint32(meta.FlagMustNotBeDir)
	if dir {
		typeFlag = meta.FlagMustBeDir
	}
	ps := parent.Shard()
	return retry(ctx, func() error {
		res, err := c.exec(ctx, ps, []meta.Part{{Kind: meta.PartRemoveEntry, Flags: typeFlag | meta.FlagDropLink, Parent: parent, Name: name}})
		if err != nil {
			return err
		}
		if res.Status != meta.StatusCrossShard {
			return outcome(res, ps)
		}
		// The inode is another shard's: drop its link there, under the
		// entry's removal here.
		ino := res.Ino
		share := meta.Part{Kind: meta.PartLink, Ino: ino, Delta: -1}
		if dir {
			share = meta.Part{Kind: meta.PartDeleteDir, Ino: ino}
		}
		tres, _, err := c.txn(ctx, ps, map[uint32][]meta.Part{ino.Shard(): {share}}, func(map[uint32]*meta.Result) []meta.Part {
			return []meta.Part{{Kind: meta.PartRemoveEntry, Flags: typeFlag, Parent: parent, Name: name, ExpectIno: ino}}
		}, nil)
		if err != nil {
			return err
		}
		if tres.Status.Errno() == syscall.ENOENT {
			return errConflict // the entry or its inode changed since the first answer: look again
		}
		return outcome(tres, ps)
	})
}

// Link makes name in parent a new hard link to ino.
func (c *Client) Link(ctx context.Context, ino, parent meta.Ino, name string) (meta.Inode, error) {
	if err := checkName(name); err != nil {
		if name == "." || name == ".." {
			return meta.Inode{}, syscall.EEXIST
		}
		return meta.Inode{}, err
	}
	var out meta.Inode
	err := retry(ctx, func() error {
		in, err := c.GetAttr(ctx, ino)
		if err != nil {
			return err
		}
		add := meta.Part{Kind: meta.PartAddEntry, Parent: parent, Name: name, Ino: ino, Mode: in.Mode}
		inc := meta.Part{Kind: meta.PartLink, Ino: ino, Delta: 1, Flags: meta.FlagMustNotBeDir}
		ps := parent.Shard()
		var res *meta.Result
		var prepared map[uint32]*meta.Result
		if ino.Shard() == ps {
			res, err = c.exec(ctx, ps, []meta.Part{add, inc})
		} else {
			if meta.IsDir(in.Mode) {
				return syscall.EPERM
			}
			res, prepared, err = c.txn(ctx, ps, map[uint32][]meta.Part{ino.Shard(): {inc}}, func(map[uint32]*meta.Result) []meta.Part { return []meta.Part{add} }, nil)
		}
		if err != nil {
			return err
		}
		if err := outcome(res, ps); err != nil {
			return err
		}
		var ok bool
		if out, ok = res.Inode(ino); !ok && prepared != nil {
			out, ok = prepared[ino.Shard()].Inode(ino)
		}
		if !ok {
			return fmt.Errorf("metaclient: link answered no inode")
		}
		return nil
	})
	return out, err
}

// Readlink returns a symlink's target.
func (c *Client) Readlink(ctx context.Context, ino meta.Ino) (string, error) {
	in, err := c.GetAttr(ctx, ino)
	if err != nil {
		return "", err
	}
	if in.Mode&meta.ModeType != meta.ModeSymlink {
		return "", syscall.EINVAL
	}
	return in.Target, nil
}

// SetAttr changes ino's attributes as a.Mask says and returns them.
func (c *Client) SetAttr(ctx context.Context, ino meta.Ino, a meta.SetAttr) (meta.Inode, meta.Result, error) {
	res, err := c.exec(ctx, ino.Shard(), []meta.Part{{Kind: meta.PartSetAttr, Ino: ino, Attr: a}})
	if err != nil {
		return meta.Inode{}, meta.Result{}, err
	}
	if err := statusErr(res.Status, ino.Shard()); err != nil {
		return meta.Inode{}, meta.Result{}, err
	}
	in, _ := res.Inode(ino)
	return in, *res, nil
}

// CommitStripes records new stripe versions of a file and grows its size
// to at least size; the result names the replaced versions.
func (c *Client) CommitStripes(ctx context.Context, ino meta.Ino, stripes []meta.StripeVersion, size uint64) (meta.Inode, meta.Result, error) {
	return c.CommitStripesAttr(ctx, ino, stripes, size, meta.SetAttr{})
}

// CommitStripesAttr is CommitStripes followed, in the same command, by the
// attribute changes a (none if a.Mask is 0): both or neither happen, and
// a's times are the ones that stay (the commit sets mtime first).
func (c *Client) CommitStripesAttr(ctx context.Context, ino meta.Ino, stripes []meta.StripeVersion, size uint64, a meta.SetAttr) (meta.Inode, meta.Result, error) {
	if len(stripes) > meta.MaxStripesPerCommit {
		return meta.Inode{}, meta.Result{}, fmt.Errorf("metaclient: %d stripes in one commit, at most %d", len(stripes), meta.MaxStripesPerCommit)
	}
	parts := []meta.Part{{Kind: meta.PartCommitStripes, Ino: ino, Stripes: stripes, Size: size}}
	if a.Mask != 0 {
		parts = append(parts, meta.Part{Kind: meta.PartSetAttr, Ino: ino, Attr: a})
	}
	res, err := c.exec(ctx, ino.Shard(), parts)
	if err != nil {
		return meta.Inode{}, meta.Result{}, err
	}
	if err := statusErr(res.Status, ino.Shard()); err != nil {
		return meta.Inode{}, meta.Result{}, err
	}
	in, _ := res.Inode(ino)
	return in, *res, nil
}

// Stripes returns a file's stripe versions from index from, at most limit,
// and whether more follow.
func (c *Client) Stripes(ctx context.Context, ino meta.Ino, from uint64, limit int) ([]meta.StripeVersion, bool, error) {
	a, err := c.query(ctx, ino.Shard(), &meta.Query{Kind: meta.QStripes, Ino: ino, From: from, Limit: uint32(limit)})
	if err != nil {
		return nil, false, err
	}
	return a.Stripes, a.More, statusErr(a.Status, ino.Shard())
}

// ReadDir returns up to limit entries of dir after the name after ("" from
// the start), in name order, and whether more follow. Entries whose inode
// lives in the directory's shard carry their attributes.
func (c *Client) ReadDir(ctx context.Context, dir meta.Ino, after string, limit int) ([]meta.Entry, bool, error) {
	a, err := c.query(ctx, dir.Shard(), &meta.Query{Kind: meta.QReadDir, Ino: dir, After: after, Limit: uint32(limit)})
	if err != nil {
		return nil, false, err
	}
	return a.Entries, a.More, statusErr(a.Status, dir.Shard())
}

// SetXattr sets an extended attribute (flags: meta.FlagXattrCreate or
// meta.FlagXattrReplace, as setxattr's XATTR_CREATE and XATTR_REPLACE).
func (c *Client) SetXattr(ctx context.Context, ino meta.Ino, name string, value []byte, flags uint32) error {
	if len(name) > meta.MaxXattrNameBytes {
		return syscall.ERANGE
	}
	if len(value) > meta.MaxXattrValueBytes {
		return syscall.E2BIG
	}
	res, err := c.exec(ctx, ino.Shard(), []meta.Part{{Kind: meta.PartSetXattr, Ino: ino, Name: name, Value: value, Flags: flags}})
	if err != nil {
		return err
	}
	return statusErr(res.Status, ino.Shard())
}

// GetXattr returns an extended attribute's value (ENODATA if absent).
func (c *Client) GetXattr(ctx context.Context, ino meta.Ino, name string) ([]byte, error) {
	if len(name) > meta.MaxXattrNameBytes {
		return nil, syscall.ERANGE
	}
	a, err := c.query(ctx, ino.Shard(), &meta.Query{Kind: meta.QGetXattr, Ino: ino, Name: name})
	if err != nil {
		return nil, err
	}
	return a.Value, statusErr(a.Status, ino.Shard())
}

// ListXattr returns the names of ino's extended attributes.
func (c *Client) ListXattr(ctx context.Context, ino meta.Ino) ([]string, error) {
	a, err := c.query(ctx, ino.Shard(), &meta.Query{Kind: meta.QListXattr, Ino: ino})
	if err != nil {
		return nil, err
	}
	return a.Names, statusErr(a.Status, ino.Shard())
}

// RemoveXattr removes an extended attribute (ENODATA if absent).
func (c *Client) RemoveXattr(ctx context.Context, ino meta.Ino, name string) error {
	if len(name) > meta.MaxXattrNameBytes {
		return syscall.ERANGE
	}
	res, err := c.exec(ctx, ino.Shard(), []meta.Part{{Kind: meta.PartRemoveXattr, Ino: ino, Name: name}})
	if err != nil {
		return err
	}
	return statusErr(res.Status, ino.Shard())
}

// FSStat is the file system's inode figures, summed over the shards.
type FSStat struct {
	Inodes     uint64 // inodes in use
	InodeLimit uint64
}

// StatFS sums the shards' inode figures.
func (c *Client) StatFS(ctx context.Context) (FSStat, error) {
	ids := c.Shards()
	type one struct {
		st  meta.StatFS
		err error
	}
	out := make(chan one, len(ids))
	sem := make(chan struct{}, 32)
	for _, s := range ids {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := c.query(ctx, s, &meta.Query{Kind: meta.QStatFS})
			if err == nil {
				err = statusErr(a.Status, s)
			}
			if err != nil {
				out <- one{err: err}
				return
			}
			out <- one{st: a.Stat}
		}()
	}
	var st FSStat
	var firstErr error
	for range ids {
		o := <-out
		if o.err != nil && firstErr == nil {
			firstErr = o.err
		}
		st.Inodes += o.st.Used
		st.InodeLimit = max(st.InodeLimit, o.st.Limit)
	}
	return st, firstErr
}

// Intents lists the cross-shard transactions prepared on shard before
// before and not yet finished (at most 256): what fsck and the tests read
// to see that nothing stays locked.
func (c *Client) Intents(ctx context.Context, shard uint32, before time.Time) ([]meta.Intent, error) {
	a, err := c.query(ctx, shard, &meta.Query{Kind: meta.QIntents, Time: before.UnixNano()})
	if err != nil {
		return nil, err
	}
	return a.Intents, statusErr(a.Status, shard)
}
