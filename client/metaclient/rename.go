package metaclient

import (
	"context"
	"syscall"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// Rename flags (Linux's renameat2 values).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
)

// maxDepth bounds the ancestor walk of a directory rename.
const maxDepth = 4096

// Rename moves p1/n1 to p2/n2 (flags: RenameNoReplace, RenameExchange).
// An existing target is replaced (a directory only by a directory, and
// only if empty). The parts land on up to five shards — both parents', the
// moved directory's (its parent pointer), the replaced inode's, and the
// root's for the directory-rename lock — and run as one transaction
// decided by the target parent's shard.
func (c *Client) Rename(ctx context.Context, p1 meta.Ino, n1 string, p2 meta.Ino, n2 string, flags uint32) error {
	if flags&^uint32(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return syscall.EINVAL
	}
	for _, n := range []string{n1, n2} {
		if err := checkName(n); err != nil {
			if n == "." || n == ".." {
				return syscall.EBUSY
			}
			return err
		}
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	return retry(ctx, func() error { return c.rename(ctx, p1, n1, p2, n2, flags) })
}

func (c *Client) rename(ctx context.Context, p1 meta.Ino, n1 string, p2 meta.Ino, n2 string, flags uint32) error {
	src, err := c.Lookup(ctx, p1, n1)
	if err != nil {
		return err
	}
	dst, err := c.Lookup(ctx, p2, n2)
	exists := err == nil
	switch {
	case err == syscall.ENOENT:
	case err != nil:
		return err
	}
	if dst.Attr == nil {
		// The target's parent must be a directory that exists.
		if _, err := c.GetAttr(ctx, p2); err != nil {
			return err
		}
	}
	I, T := src.Ino, dst.Ino
	iDir, tDir := meta.IsDir(src.Mode), exists && meta.IsDir(dst.Mode)
	exchange := flags&RenameExchange != 0
	// Answers that rest on both lookups must hold at one moment: check the
	// two entries together before giving them.
	both := func(answer error) error {
		if err := c.checkEntries(ctx, []meta.Part{
			{Kind: meta.PartCheckEntry, Parent: p1, Name: n1, ExpectIno: I},
			{Kind: meta.PartCheckEntry, Parent: p2, Name: n2, ExpectIno: T},
		}); err != nil {
			return err
		}
		return answer
	}
	switch {
	case exchange && !exists:
		return syscall.ENOENT
	case flags&RenameNoReplace != 0 && exists:
		return both(syscall.EEXIST)
	case exists && I == T:
		return both(nil) // two links of one inode: nothing to do
	}
	// The kernel's order: a source that is an ancestor of the target is
	// EINVAL, a target that is an ancestor of the source ENOTEMPTY, and
	// only then do the types matter. (Checked again under the rename lock
	// below; these reads only choose the errno.)
	if p1 != p2 {
		if iDir {
			if err := c.notInside(ctx, p2, I, 0); err != nil {
				return err
			}
		}
		if tDir {
			if err := c.notInside(ctx, p1, T, 0); err == syscall.EINVAL {
				if exchange {
					return syscall.EINVAL
				}
				return syscall.ENOTEMPTY
			} else if err != nil {
				return err
			}
		}
	}
	switch {
	case !exchange && exists && iDir && !tDir:
		return both(syscall.ENOTDIR)
	case !exchange && exists && !iDir && tDir:
		return both(syscall.EISDIR)
	}

	shares := map[uint32][]meta.Part{}
	add := func(s uint32, p meta.Part) { shares[s] = append(shares[s], p) }
	coord := p2.Shard()
	// The target entry first: on one shard, replacing before unlinking the
	// replaced directory keeps that directory's emptiness check simple.
	switch {
	case exchange:
		add(coord, meta.Part{Kind: meta.PartSetEntry, Parent: p2, Name: n2, ExpectIno: T, Ino: I, Mode: src.Mode})
	case exists:
		add(coord, meta.Part{Kind: meta.PartAddEntry, Parent: p2, Name: n2, ExpectIno: T, Ino: I, Mode: src.Mode})
	default:
		add(coord, meta.Part{Kind: meta.PartAddEntry, Parent: p2, Name: n2, Ino: I, Mode: src.Mode})
	}
	if exchange {
		add(p1.Shard(), meta.Part{Kind: meta.PartSetEntry, Parent: p1, Name: n1, ExpectIno: I, Ino: T, Mode: dst.Mode})
	} else {
		add(p1.Shard(), meta.Part{Kind: meta.PartRemoveEntry, Parent: p1, Name: n1, ExpectIno: I})
	}
	moves := false
	if p1 != p2 {
		if iDir {
			add(I.Shard(), meta.Part{Kind: meta.PartSetParent, Ino: I, Parent: p2})
			moves = true
		}
		if exchange && tDir {
			add(T.Shard(), meta.Part{Kind: meta.PartSetParent, Ino: T, Parent: p1})
			moves = true
		}
	}
	if exists && !exchange {
		if tDir {
			add(T.Shard(), meta.Part{Kind: meta.PartDeleteDir, Ino: T})
		} else {
			add(T.Shard(), meta.Part{Kind: meta.PartLink, Ino: T, Delta: -1})
		}
	}

	var check func(txid uint64) error
	if moves {
		// A directory changes parent: no target may lie inside the
		// directory it moves. Directory moves are serialised by the rename
		// lock, so the ancestry read below cannot change until the decision.
		add(meta.RootIno.Shard(), meta.Part{Kind: meta.PartLockKey, Name: meta.RenameLock})
		check = func(txid uint64) error {
			if iDir {
				if err := c.notInside(ctx, p2, I, txid); err != nil {
					return err
				}
			}
			if exchange && tDir {
				return c.notInside(ctx, p1, T, txid)
			}
			return nil
		}
	}

	var res *meta.Result
	if len(shares) == 1 && check == nil {
		res, err = c.exec(ctx, coord, shares[coord])
	} else {
		coordParts := shares[coord]
		delete(shares, coord)
		if check != nil && p2.Shard() == meta.RootIno.Shard() {
			// The lock share goes on the coordinator: prepared, not committed.
			var lock, rest []meta.Part
			for _, p := range coordParts {
				if p.Kind == meta.PartLockKey {
					lock = append(lock, p)
				} else {
					rest = append(rest, p)
				}
			}
			coordParts = rest
			shares[coord] = lock
		}
		res, _, err = c.txn(ctx, coord, shares, func(map[uint32]*meta.Result) []meta.Part { return coordParts }, check)
	}
	if err != nil {
		return err
	}
	if res.Status == meta.StatusCrossShard {
		return errConflict // an inode moved shards under us? start over with fresh lookups
	}
	switch res.Status.Errno() {
	case syscall.EEXIST:
		if !exists {
			return errConflict // the target appeared meanwhile: replace it
		}
	case syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR:
		// An inode or entry the lookups found changed before the shares
		// were applied (the replaced file unlinked meanwhile, say): the
		// next attempt's lookups give the answer of the state it meets.
		return errConflict
	}
	return outcome(res, coord)
}

// notInside returns EINVAL if dir is moved is or lies below moved,
// walking dir's ancestors to the root. Reads pass through the locks of
// txid (the rename's own).
func (c *Client) notInside(ctx context.Context, dir, moved meta.Ino, txid uint64) error {
	cur := dir
	for depth := 0; depth < maxDepth; depth++ {
		if cur == moved {
			return syscall.EINVAL
		}
		if cur == meta.RootIno {
			return nil
		}
		a, err := c.query(ctx, cur.Shard(), &meta.Query{Kind: meta.QGetAttr, Ino: cur, Txid: txid})
		if err != nil {
			return err
		}
		if err := statusErr(a.Status, cur.Shard()); err != nil {
			return err
		}
		cur = a.Inode.Parent
	}
	return syscall.ELOOP
}

// checkEntries verifies that the entries of checks (PartCheckEntry parts)
// all name their inodes at one moment: one command when they share a
// shard, else a transaction decided by the first's shard. A change is
// errConflict.
func (c *Client) checkEntries(ctx context.Context, checks []meta.Part) error {
	coord := checks[0].Parent.Shard()
	shares := map[uint32][]meta.Part{}
	var coordParts []meta.Part
	for _, p := range checks {
		if s := p.Parent.Shard(); s == coord {
			coordParts = append(coordParts, p)
		} else {
			shares[s] = append(shares[s], p)
		}
	}
	var res *meta.Result
	var err error
	if len(shares) == 0 {
		res, err = c.exec(ctx, coord, coordParts)
	} else {
		res, _, err = c.txn(ctx, coord, shares, func(map[uint32]*meta.Result) []meta.Part { return coordParts }, nil)
	}
	if err != nil {
		return err
	}
	if res.Status.Errno() != 0 {
		return errConflict // a parent vanished: look again
	}
	return outcome(res, coord)
}
