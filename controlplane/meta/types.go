package meta

import (
	"fmt"
	"syscall"
)

// Ino is an inode number. The top bits name the shard that holds the inode
// (ShardBits above SeqBits), the rest is that shard's own counter, so any
// node finds an inode's shard without a lookup and shards allocate numbers
// without talking to each other.
type Ino uint64

const (
	// SeqBits is the width of a shard's inode counter.
	SeqBits = 40
	// MaxShard is the largest shard id an inode number can name.
	MaxShard = 1<<(64-SeqBits) - 1
)

// RootIno is the root directory: the first inode of shard 1.
const RootIno Ino = 1<<SeqBits | 1

// MakeIno returns the inode number seq of shard.
func MakeIno(shard uint32, seq uint64) Ino { return Ino(uint64(shard)<<SeqBits | seq) }

// Shard returns the shard that holds the inode.
func (i Ino) Shard() uint32 { return uint32(uint64(i) >> SeqBits) }

func (i Ino) String() string { return fmt.Sprintf("%d:%d", i.Shard(), uint64(i)&(1<<SeqBits-1)) }

// File types, as the S_IFMT bits of Mode (Linux values).
const (
	ModeType    = syscall.S_IFMT
	ModeDir     = syscall.S_IFDIR
	ModeRegular = syscall.S_IFREG
	ModeSymlink = syscall.S_IFLNK
	ModeFifo    = syscall.S_IFIFO
	ModeSocket  = syscall.S_IFSOCK
	ModeChar    = syscall.S_IFCHR
	ModeBlock   = syscall.S_IFBLK
)

// IsDir reports whether mode is a directory's.
func IsDir(mode uint32) bool { return mode&ModeType == ModeDir }

// Limits of names and values (Linux's, where Linux has one).
const (
	MaxNameBytes       = 255
	MaxSymlinkBytes    = 4095
	MaxXattrNameBytes  = 255
	MaxXattrValueBytes = 64 << 10
	// MaxXattrsPerInode bounds the xattrs of one inode (and so a listxattr answer).
	MaxXattrsPerInode = 1024
	// MaxParts bounds the parts of one command.
	MaxParts = 16
	// MaxStripesPerCommit bounds the stripe versions one command commits.
	MaxStripesPerCommit = 1024
	// MaxReadDir bounds the entries of one readdir answer.
	MaxReadDir = 4096
)

// Layout is how a file's data is cut into EC stripes: K data and M parity
// shards of StripeUnit bytes each per stripe.
type Layout struct {
	K, M       uint8
	StripeUnit uint32
}

// StripeBytes is the file bytes one stripe holds.
func (l Layout) StripeBytes() uint64 { return uint64(l.K) * uint64(l.StripeUnit) }

// DefaultLayout is EC 4+2 with 1 MiB units.
var DefaultLayout = Layout{K: 4, M: 2, StripeUnit: 1 << 20}

// Inode is a file's attributes. Times are nanoseconds since the Unix epoch.
type Inode struct {
	Ino   Ino
	Mode  uint32 // type and permission bits
	Uid   uint32
	Gid   uint32
	Nlink uint32
	Rdev  uint32
	Size  uint64
	Atime int64
	Mtime int64
	Ctime int64
	// Gen is the Raft index that created the inode: an inode number
	// reused after a restore still differs in generation.
	Gen uint64
	// Parent is a directory's parent (the root's is itself): ".." and the
	// loop check of directory renames follow it.
	Parent Ino
	// Target is a symlink's target.
	Target string
	// Layout is a regular file's stripe layout.
	Layout Layout
}

// Entry is one directory entry.
type Entry struct {
	Name string
	Ino  Ino
	Mode uint32 // the type bits of the inode it names
	// Attr is the inode's attributes when the inode lives in the
	// directory's own shard (readdirplus and lookup answer them at once);
	// nil otherwise.
	Attr *Inode
}

// StripeVersion is the committed version of one stripe of a file.
type StripeVersion struct {
	Index   uint64
	Version uint64
}

// Status is a command's or query's outcome: 0, a Linux errno, or one of
// the protocol's own codes below.
type Status uint32

const (
	OK Status = 0
	// StatusBusy: a key the operation needs is held by a cross-shard
	// transaction that has not finished (Result.Busy says which). Retry
	// after it finishes, or resolve it if it is old.
	StatusBusy Status = 10001
	// StatusConflict: the state the client read before deciding changed
	// (an expected entry no longer names the expected inode). Start the
	// operation over.
	StatusConflict Status = 10002
	// StatusCrossShard: the operation needs an inode held by another
	// shard (Result.Ino names it); run it as a cross-shard transaction.
	StatusCrossShard Status = 10003
	// StatusAborted: the transaction was already decided aborted.
	StatusAborted Status = 10004
	// StatusBadRequest: the command could not be decoded or is invalid.
	StatusBadRequest Status = 10005
)

// Errno returns the Linux errno of s, or 0 when s is not one.
func (s Status) Errno() syscall.Errno {
	if s > 0 && s < 4096 {
		return syscall.Errno(s)
	}
	return 0
}

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case StatusBusy:
		return "busy (a cross-shard transaction holds a key)"
	case StatusConflict:
		return "conflict (state changed since it was read)"
	case StatusCrossShard:
		return "needs a cross-shard transaction"
	case StatusAborted:
		return "transaction aborted"
	case StatusBadRequest:
		return "bad request"
	}
	if e := s.Errno(); e != 0 {
		return e.Error()
	}
	return fmt.Sprintf("status %d", uint32(s))
}

func errno(e syscall.Errno) Status { return Status(e) }

// Busy names the transaction holding a key.
type Busy struct {
	Txid  uint64
	Coord uint32 // the shard that decides it
	Time  int64  // when it was prepared (the proposer's clock, ns)
}
