package meta

// PartKind says what one part of a command does. A command's parts are
// applied in order, all or nothing, on one shard; a file-system operation
// is compiled by the client into parts grouped by the shard that holds
// each key they touch (see the package comment).
type PartKind uint8

const (
	// PartCreate allocates an inode in this shard and writes it: Mode,
	// Uid, Gid, Rdev, Target (symlinks), Layout (files), Parent (dirs).
	// Nlink is 1 (directories 2). ENOSPC past the inode limit.
	PartCreate PartKind = 1 + iota
	// PartAddEntry writes the entry Parent/Name naming Ino (or, with
	// FlagNewInode, the inode a PartCreate of the same command allocated)
	// of type Mode. With ExpectIno 0 the name must be absent (EEXIST);
	// otherwise it must name ExpectIno now, which it replaces (the caller
	// unlinks that inode in another part). Adding a directory entry
	// increments the parent's nlink; the parent's mtime and ctime become
	// the command's time.
	PartAddEntry
	// PartRemoveEntry removes Parent/Name. ExpectIno, if set, is the inode
	// it must name (else StatusConflict). FlagMustBeDir / FlagMustNotBeDir
	// check the entry's type (ENOTDIR / EISDIR). With FlagDropLink the
	// named inode's nlink is decremented too (a file) or, for a directory,
	// the directory is deleted (it must be empty: ENOTEMPTY); when that
	// inode is held by another shard the command answers
	// StatusCrossShard naming it.
	PartRemoveEntry
	// PartSetEntry makes Parent/Name, which must name ExpectIno, name Ino
	// of type Mode instead (RENAME_EXCHANGE).
	PartSetEntry
	// PartLink adds Delta to Ino's nlink (EPERM for a directory, whose
	// links only entries change). An inode whose nlink reaches 0 is
	// deleted.
	PartLink
	// PartDeleteDir deletes the directory Ino, which must be empty
	// (ENOTEMPTY).
	PartDeleteDir
	// PartSetParent sets directory Ino's parent to Parent.
	PartSetParent
	// PartSetAttr changes Ino's attributes as Attr.Mask says.
	PartSetAttr
	// PartCommitStripes records new versions of Ino's stripes and grows
	// its size to at least Size; the replaced versions are returned.
	PartCommitStripes
	// PartSetXattr sets Ino's extended attribute Name to Value
	// (FlagXattrCreate: EEXIST if present; FlagXattrReplace: ENODATA if
	// absent).
	PartSetXattr
	// PartRemoveXattr removes Ino's extended attribute Name (ENODATA).
	PartRemoveXattr
	// PartLockKey only locks the shard-wide key Name: the directory-rename
	// lock (RenameLock) is one.
	PartLockKey
	// PartCheckEntry writes nothing: Parent/Name must name ExpectIno
	// (else StatusConflict), and a prepare locks the entry until the
	// decision. Answers that rest on several entries at once (a rename
	// between two links of one inode) check them with it.
	PartCheckEntry
	partKindEnd
)

// Part flags.
const (
	FlagNewInode     = 1 << 0
	FlagMustBeDir    = 1 << 1
	FlagMustNotBeDir = 1 << 2
	FlagDropLink     = 1 << 3
	FlagXattrCreate  = 1 << 4
	FlagXattrReplace = 1 << 5
	flagsAll         = 1<<6 - 1
)

// RenameLock is the key a directory rename between two parents locks on
// the root's shard while it checks that the target is not inside the
// directory it moves: such renames are serialised, so the ancestry the
// check reads cannot change under it.
const RenameLock = "rename"

// SetAttr mask bits.
const (
	AttrMode = 1 << iota
	AttrUid
	AttrGid
	AttrSize
	AttrAtime
	AttrMtime
	AttrAtimeNow // atime = the command's time
	AttrMtimeNow // mtime = the command's time
	AttrCtime    // ctime = Attr.Ctime instead of the command's time
	attrAll      = 1<<9 - 1
)

// SetAttr is a setattr's new values, those selected by Mask.
type SetAttr struct {
	Mask         uint32
	Mode         uint32 // permission bits only; the type is kept
	Uid, Gid     uint32
	Size         uint64
	Atime, Mtime int64
	Ctime        int64
}

// Part is one step of a command.
type Part struct {
	Kind      PartKind
	Flags     uint32
	Parent    Ino
	Name      string
	Ino       Ino
	ExpectIno Ino
	Mode      uint32
	Uid, Gid  uint32
	Rdev      uint32
	Delta     int32
	Target    string
	Layout    Layout
	Value     []byte
	Attr      SetAttr
	Stripes   []StripeVersion
	Size      uint64
}

// CmdKind is the kind of a metadata command.
type CmdKind uint8

const (
	// CmdExec applies Parts at once (a single-shard operation). ReqID
	// makes a retried command answer its first result.
	CmdExec CmdKind = 1 + iota
	// CmdPrepare applies Parts as transaction Txid's share of this shard:
	// their effects are written, every key they touch is locked by Txid
	// and the old values kept, until CmdFinish. Coord is the deciding
	// shard. Repeating a prepare answers its first result.
	CmdPrepare
	// CmdCommit is the deciding step, on the coordinator: unless Txid was
	// decided aborted it applies Parts (the coordinator's share) and
	// records Txid committed with its Participants, in one command. A
	// share that fails records Txid aborted.
	CmdCommit
	// CmdDecide answers Txid's decision; with Abort an undecided Txid is
	// decided aborted (a resolver's step: a late CmdCommit then fails).
	CmdDecide
	// CmdFinish ends Txid's share here: keep its effects (Abort false) or
	// restore the old values (Abort true), and unlock.
	CmdFinish
	// CmdForget drops Txid's decision once every participant finished.
	CmdForget
	// CmdSetLimits sets the inode limit (Limit) and the inodes the other
	// shards hold (Others) that this shard's creates count against it.
	CmdSetLimits
	cmdKindEnd
)

// Command is one metadata command. Time (the proposer's clock, ns since
// the epoch) is the time every attribute it changes takes, so replicas
// apply it identically.
type Command struct {
	Kind         CmdKind
	ReqID        uint64
	Txid         uint64
	Coord        uint32
	Participants []uint32
	Time         int64
	Abort        bool
	Limit        uint64
	Others       uint64
	Parts        []Part
}

// cmdTag starts every metadata command, telling it from the KV commands
// the same shards take (kvsm's start with its version byte, 1).
const (
	cmdTag     = 'M'
	cmdVersion = 1
)

// EncodeCommand encodes c.
func EncodeCommand(c *Command) []byte {
	e := enc{b: make([]byte, 0, 64+len(c.Parts)*48)}
	e.u8(cmdTag)
	e.u8(cmdVersion)
	e.u8(uint8(c.Kind))
	e.u64(c.ReqID)
	e.u64(c.Txid)
	e.u32(c.Coord)
	e.shards(c.Participants)
	e.i64(c.Time)
	e.bool(c.Abort)
	e.u64(c.Limit)
	e.u64(c.Others)
	e.u64(uint64(len(c.Parts)))
	for i := range c.Parts {
		e.part(&c.Parts[i])
	}
	return e.b
}

// IsCommand reports whether b is a metadata command (rather than a KV one).
func IsCommand(b []byte) bool { return len(b) > 0 && b[0] == cmdTag }

// DecodeCommand decodes and validates a command.
func DecodeCommand(b []byte) (*Command, error) {
	d := dec{b: b}
	if d.u8() != cmdTag || d.u8() != cmdVersion {
		d.fail("not a version %d metadata command", cmdVersion)
		return nil, d.err
	}
	c := &Command{}
	c.Kind = CmdKind(d.u8())
	c.ReqID = d.u64()
	c.Txid = d.u64()
	c.Coord = d.u32()
	c.Participants = d.shards()
	c.Time = d.i64()
	c.Abort = d.bool()
	c.Limit = d.u64()
	c.Others = d.u64()
	n := d.count(MaxParts)
	if n > 0 {
		c.Parts = make([]Part, n)
		for i := range c.Parts {
			c.Parts[i] = d.part()
		}
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	if c.Kind == 0 || c.Kind >= cmdKindEnd {
		return nil, badf("command kind %d", c.Kind)
	}
	for i := range c.Parts {
		if err := c.Parts[i].validate(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func badf(format string, args ...any) error {
	d := dec{}
	d.fail(format, args...)
	return d.err
}

func (p *Part) validate() error {
	switch {
	case p.Kind == 0 || p.Kind >= partKindEnd:
		return badf("part kind %d", p.Kind)
	case p.Flags&^flagsAll != 0:
		return badf("part flags %#x", p.Flags)
	case p.Attr.Mask&^attrAll != 0:
		return badf("setattr mask %#x", p.Attr.Mask)
	case len(p.Name) > MaxNameBytes:
		return badf("name of %d bytes", len(p.Name))
	}
	return nil
}

func (e *enc) part(p *Part) {
	e.u8(uint8(p.Kind))
	e.u32(p.Flags)
	e.u64(uint64(p.Parent))
	e.str(p.Name)
	e.u64(uint64(p.Ino))
	e.u64(uint64(p.ExpectIno))
	e.u32(p.Mode)
	e.u32(p.Uid)
	e.u32(p.Gid)
	e.u32(p.Rdev)
	e.i64(int64(p.Delta))
	e.str(p.Target)
	e.layout(p.Layout)
	e.bytes(p.Value)
	e.u32(p.Attr.Mask)
	e.u32(p.Attr.Mode)
	e.u32(p.Attr.Uid)
	e.u32(p.Attr.Gid)
	e.u64(p.Attr.Size)
	e.i64(p.Attr.Atime)
	e.i64(p.Attr.Mtime)
	e.i64(p.Attr.Ctime)
	e.stripes(p.Stripes)
	e.u64(p.Size)
}

func (d *dec) part() Part {
	var p Part
	p.Kind = PartKind(d.u8())
	p.Flags = d.u32()
	p.Parent = Ino(d.u64())
	p.Name = d.str(MaxNameBytes)
	p.Ino = Ino(d.u64())
	p.ExpectIno = Ino(d.u64())
	p.Mode = d.u32()
	p.Uid = d.u32()
	p.Gid = d.u32()
	p.Rdev = d.u32()
	delta := d.i64()
	if delta < -1<<31 || delta > 1<<31-1 {
		d.fail("delta %d", delta)
	}
	p.Delta = int32(delta)
	p.Target = d.str(MaxSymlinkBytes)
	p.Layout = d.layout()
	p.Value = d.bytes(MaxXattrValueBytes)
	p.Attr.Mask = d.u32()
	p.Attr.Mode = d.u32()
	p.Attr.Uid = d.u32()
	p.Attr.Gid = d.u32()
	p.Attr.Size = d.u64()
	p.Attr.Atime = d.i64()
	p.Attr.Mtime = d.i64()
	p.Attr.Ctime = d.i64()
	p.Stripes = d.stripes(MaxStripesPerCommit)
	p.Size = d.u64()
	return p
}

// Freed is an inode a command deleted, with what its data used: the
// client (or the scrubber) frees those stripes.
type Freed struct {
	Ino     Ino
	Layout  Layout
	Stripes []StripeVersion
}

// Result is a command's answer.
type Result struct {
	Status Status
	// Busy names the transaction holding a key (StatusBusy).
	Busy Busy
	// Ino is the inode a PartCreate allocated, or the inode another
	// shard holds (StatusCrossShard).
	Ino Ino
	// Committed answers CmdDecide and CmdCommit: the transaction's decision.
	Committed bool
	// Participants of the transaction (CmdDecide).
	Participants []uint32
	// Inodes are the inodes the command wrote, as they are now.
	Inodes []Inode
	// Freed are the inodes the command deleted.
	Freed []Freed
	// OldStripes are stripe versions the command replaced or cut off.
	OldStripes []StripeVersion
	// Detail is a human-readable reason for StatusBadRequest.
	Detail string
}

// Inode returns the result's inode numbered ino, if the command wrote it.
func (r *Result) Inode(ino Ino) (Inode, bool) {
	for _, in := range r.Inodes {
		if in.Ino == ino {
			return in, true
		}
	}
	return Inode{}, false
}

// EncodeResult encodes r.
func EncodeResult(r *Result) []byte {
	var e enc
	e.u32(uint32(r.Status))
	e.busy(r.Busy)
	e.u64(uint64(r.Ino))
	e.bool(r.Committed)
	e.shards(r.Participants)
	e.u64(uint64(len(r.Inodes)))
	for i := range r.Inodes {
		e.inode(&r.Inodes[i])
	}
	e.u64(uint64(len(r.Freed)))
	for _, f := range r.Freed {
		e.u64(uint64(f.Ino))
		e.layout(f.Layout)
		e.stripes(f.Stripes)
	}
	e.stripes(r.OldStripes)
	e.str(r.Detail)
	return e.b
}

// maxResultItems bounds the inodes, freed inodes and stripes of a result.
const maxResultItems = 1 << 20

// DecodeResult decodes a command's result.
func DecodeResult(b []byte) (*Result, error) {
	d := dec{b: b}
	r := &Result{}
	r.Status = Status(d.u32())
	r.Busy = d.busy()
	r.Ino = Ino(d.u64())
	r.Committed = d.bool()
	r.Participants = d.shards()
	if n := d.count(maxResultItems); n > 0 {
		r.Inodes = make([]Inode, n)
		for i := range r.Inodes {
			r.Inodes[i] = d.inode()
		}
	}
	if n := d.count(maxResultItems); n > 0 {
		r.Freed = make([]Freed, n)
		for i := range r.Freed {
			r.Freed[i] = Freed{Ino: Ino(d.u64()), Layout: d.layout(), Stripes: d.stripes(maxResultItems)}
		}
	}
	r.OldStripes = d.stripes(maxResultItems)
	r.Detail = d.str(4096)
	return r, d.done()
}

// CreatesFile reports whether cmd is a command that creates a non-directory
// inode (a file create, for the create_file_latency metric).
func CreatesFile(cmd []byte) bool {
	if !IsCommand(cmd) {
		return false
	}
	c, err := DecodeCommand(cmd)
	if err != nil || c.Kind != CmdExec {
		return false
	}
	for i := range c.Parts {
		if c.Parts[i].Kind == PartCreate && !IsDir(c.Parts[i].Mode) {
			return true
		}
	}
	return false
}
