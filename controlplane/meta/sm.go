package meta

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"syscall"

	"github.com/claudefs/claudefs/controlplane/kvsm"
)

// ShardSM is the state machine of a metadata shard: metadata commands
// (EncodeCommand) and queries (EncodeQuery), and the KV commands and
// queries of kvsm on the keys outside the metadata's key space.
type ShardSM struct {
	// Shard is the shard's group id: the inode numbers it allocates carry it.
	Shard uint32
}

var _ kvsm.Applier = ShardSM{}

// reqTTL is how long an Exec's result is kept for a retry to find (ns).
const reqTTL = int64(5 * 60 * 1e9)

// Apply executes a committed command. See kvsm.Applier.
func (s ShardSM) Apply(w *kvsm.Writer, index uint64, cmd []byte) ([]byte, error) {
	if !IsCommand(cmd) {
		ops, err := kvsm.DecodeCommand(cmd)
		if err == nil {
			for _, op := range ops {
				if len(op.Key) > 0 && op.Key[0] == keySpace {
					return kvsm.EncodeRefused("keys starting with 0xF0 belong to the file-system metadata"), nil
				}
			}
		}
		return kvsm.KV{}.Apply(w, index, cmd)
	}
	c, err := DecodeCommand(cmd)
	if err != nil {
		return EncodeResult(&Result{Status: StatusBadRequest, Detail: err.Error()}), nil
	}
	if err := s.ensureRoot(w, index, c.Time); err != nil {
		return nil, err
	}
	res, err := s.apply(w, index, c)
	if err != nil {
		return nil, err
	}
	return EncodeResult(res), nil
}

// ensureRoot writes the root directory the first time shard 1 applies a
// metadata command.
func (s ShardSM) ensureRoot(w *kvsm.Writer, index uint64, now int64) error {
	if s.Shard != RootIno.Shard() {
		return nil
	}
	_, found, err := w.Get(inodeKey(RootIno))
	if err != nil || found {
		return err
	}
	root := rootInode(now, index)
	if err := w.Set(inodeKey(RootIno), encodeInode(&root)); err != nil {
		return err
	}
	if err := w.Set(key1('c'), u64b(uint64(RootIno)&(1<<SeqBits-1)+1)); err != nil {
		return err
	}
	return w.Set(key1('u'), u64b(1))
}

func rootInode(now int64, gen uint64) Inode {
	return Inode{Ino: RootIno, Mode: ModeDir | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now, Gen: gen, Parent: RootIno}
}

func (s ShardSM) apply(w *kvsm.Writer, index uint64, c *Command) (*Result, error) {
	switch c.Kind {
	case CmdExec:
		return s.exec(w, index, c)
	case CmdPrepare:
		return s.prepare(w, index, c)
	case CmdCommit:
		return s.commit(w, index, c)
	case CmdDecide:
		return s.decide(w, c)
	case CmdFinish:
		return s.finish(w, c)
	case CmdForget:
		return &Result{}, w.Delete(decideKey(c.Txid))
	case CmdSetLimits:
		if err := w.Set(key1('L'), u64b(c.Limit)); err != nil {
			return nil, err
		}
		return &Result{}, w.Set(key1('o'), u64b(c.Others))
	}
	return &Result{Status: StatusBadRequest, Detail: fmt.Sprintf("command kind %d", c.Kind)}, nil
}

func (s ShardSM) exec(w *kvsm.Writer, index uint64, c *Command) (*Result, error) {
	if c.ReqID != 0 {
		// A request id is almost never there (only a resend after an
		// unknown outcome finds it): the memo knows without a get.
		k := reqKey(c.ReqID)
		if may, err := w.MayHave(reqPrefix, k); err != nil {
			return nil, err
		} else if may {
			if v, found, err := w.Get(k); err != nil {
				return nil, err
			} else if found && len(v) > 8 {
				return DecodeResult(v[8:])
			}
		}
	}
	t := newTx(w, s.Shard, index, c, modeExec)
	res, err := t.run(c.Parts)
	if err != nil {
		return nil, err
	}
	if res.Status == OK {
		if err := t.flush(); err != nil {
			return nil, err
		}
		t.report(res)
	}
	if c.ReqID != 0 && res.Status != StatusBusy {
		if err := rememberRequest(w, index, c, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// expireEvery and expireBatch: every expireEvery-th Raft index an Exec
// also drops up to expireBatch expired request results (bounded work, and
// an iterator only now and then; the index and the commands' clock make it
// the same on every replica). Requests come at most once per index, so
// this keeps up with any rate.
const (
	expireEvery = 32
	expireBatch = 64
)

// rememberRequest stores an Exec's result for retries, and now and then
// expires old ones.
func rememberRequest(w *kvsm.Writer, index uint64, c *Command, res *Result) error {
	var expired [][]byte
	if index%expireEvery == 0 {
		start := []byte{keySpace, 'Q'}
		end := reqTimeKey(c.Time-reqTTL, 0)
		if err := w.Scan(start, end, func(k, _ []byte) bool {
			expired = append(expired, append([]byte(nil), k...))
			return len(expired) < expireBatch
		}); err != nil {
			return err
		}
	}
	for _, k := range expired {
		if err := w.Delete(k); err != nil {
			return err
		}
		if err := w.Delete(reqKey(u64(k[len(k)-8:]))); err != nil {
			return err
		}
	}
	v := append(u64b(uint64(c.Time)), EncodeResult(res)...)
	if err := w.Set(reqKey(c.ReqID), v); err != nil {
		return err
	}
	return w.Set(reqTimeKey(c.Time, c.ReqID), nil)
}

// intent is a shard's prepared share of a transaction.
type intent struct {
	coord        uint32
	time         int64
	participants []uint32
	// undo holds each locked key's value before the prepare (nil: absent).
	undo []undoRec
	// usedDelta is the change to the inode count the prepare made
	// (reverted by an abort; counters are never locked).
	usedDelta int64
	result    []byte
}

type undoRec struct {
	key     []byte
	present bool
	value   []byte
	// lockOnly keys were locked, not written.
	lockOnly bool
}

func encodeIntent(in *intent) []byte {
	var e enc
	e.u32(in.coord)
	e.i64(in.time)
	e.shards(in.participants)
	e.u64(uint64(len(in.undo)))
	for _, u := range in.undo {
		e.bytes(u.key)
		e.bool(u.present)
		e.bool(u.lockOnly)
		e.bytes(u.value)
	}
	e.i64(in.usedDelta)
	e.bytes(in.result)
	return e.b
}

func decodeIntent(b []byte) (*intent, error) {
	d := dec{b: b}
	in := &intent{coord: d.u32(), time: d.i64(), participants: d.shards()}
	n := d.count(maxResultItems)
	for i := 0; i < n; i++ {
		in.undo = append(in.undo, undoRec{key: d.bytes(kvsm.MaxKeyBytes), present: d.bool(), lockOnly: d.bool(), value: d.bytes(kvsm.MaxValueBytes)})
	}
	in.usedDelta = d.i64()
	in.result = d.bytes(kvsm.MaxValueBytes)
	return in, d.done()
}

func (s ShardSM) prepare(w *kvsm.Writer, index uint64, c *Command) (*Result, error) {
	if v, found, err := w.Get(intentKey(c.Txid)); err != nil {
		return nil, err
	} else if found {
		in, err := decodeIntent(v)
		if err != nil {
			return nil, err
		}
		return DecodeResult(in.result)
	}
	t := newTx(w, s.Shard, index, c, modePrepare)
	res, err := t.run(c.Parts)
	if err != nil || res.Status != OK {
		return res, err
	}
	undo, err := t.flushLocked(Busy{Txid: c.Txid, Coord: c.Coord, Time: c.Time})
	if err != nil {
		return nil, err
	}
	t.report(res)
	in := &intent{coord: c.Coord, time: c.Time, participants: c.Participants, undo: undo, usedDelta: t.usedDelta, result: EncodeResult(res)}
	return res, w.Set(intentKey(c.Txid), encodeIntent(in))
}

type decision struct {
	committed    bool
	time         int64
	participants []uint32
}

func encodeDecision(d decision) []byte {
	var e enc
	e.bool(d.committed)
	e.i64(d.time)
	e.shards(d.participants)
	return e.b
}

func decodeDecision(b []byte) (decision, error) {
	d := dec{b: b}
	out := decision{committed: d.bool(), time: d.i64(), participants: d.shards()}
	return out, d.done()
}

func readDecision(r interface {
	Get([]byte) ([]byte, bool, error)
}, txid uint64) (decision, bool, error) {
	v, found, err := r.Get(decideKey(txid))
	if err != nil || !found {
		return decision{}, false, err
	}
	d, err := decodeDecision(v)
	return d, true, err
}

func (s ShardSM) commit(w *kvsm.Writer, index uint64, c *Command) (*Result, error) {
	d, found, err := readDecision(w, c.Txid)
	if err != nil {
		return nil, err
	}
	if found {
		if d.committed {
			return &Result{Committed: true, Participants: d.participants}, nil
		}
		return &Result{Status: StatusAborted, Participants: d.participants}, nil
	}
	t := newTx(w, s.Shard, index, c, modeExec)
	res, err := t.run(c.Parts)
	if err != nil {
		return nil, err
	}
	if res.Status == StatusBusy {
		return res, nil // undecided: the client retries the commit
	}
	dec := decision{committed: res.Status == OK, time: c.Time, participants: c.Participants}
	if dec.committed {
		if err := t.flush(); err != nil {
			return nil, err
		}
		t.report(res)
		res.Committed = true
	}
	res.Participants = c.Participants
	return res, w.Set(decideKey(c.Txid), encodeDecision(dec))
}

func (s ShardSM) decide(w *kvsm.Writer, c *Command) (*Result, error) {
	d, found, err := readDecision(w, c.Txid)
	if err != nil {
		return nil, err
	}
	if found {
		return &Result{Committed: d.committed, Participants: d.participants}, nil
	}
	if !c.Abort {
		return &Result{Status: StatusBusy}, nil
	}
	d = decision{time: c.Time, participants: c.Participants}
	return &Result{Participants: c.Participants}, w.Set(decideKey(c.Txid), encodeDecision(d))
}

func (s ShardSM) finish(w *kvsm.Writer, c *Command) (*Result, error) {
	v, found, err := w.Get(intentKey(c.Txid))
	if err != nil || !found {
		return &Result{}, err
	}
	in, err := decodeIntent(v)
	if err != nil {
		return nil, err
	}
	for _, u := range in.undo {
		if c.Abort && !u.lockOnly {
			if u.present {
				err = w.Set(u.key, u.value)
			} else {
				err = w.Delete(u.key)
			}
			if err != nil {
				return nil, err
			}
		}
		if err := w.Delete(lockKey(u.key)); err != nil {
			return nil, err
		}
	}
	if c.Abort && in.usedDelta != 0 {
		if err := addCounter(w, 'u', -in.usedDelta); err != nil {
			return nil, err
		}
	}
	return &Result{Committed: !c.Abort}, w.Delete(intentKey(c.Txid))
}

func addCounter(w *kvsm.Writer, kind byte, delta int64) error {
	v, _, err := w.GetPinned(key1(kind))
	if err != nil {
		return err
	}
	n := int64(u64(v)) + delta
	if n < 0 {
		n = 0
	}
	return w.Set(key1(kind), u64b(uint64(n)))
}

// txMode says how a tx treats locks.
type txMode uint8

const (
	// modeExec: keys locked by any transaction are busy.
	modeExec txMode = iota
	// modePrepare: keys locked by other transactions are busy; the keys
	// written are locked by this one at flush.
	modePrepare
)

// tx applies one command's parts to an overlay over the Writer, so that a
// part that fails leaves nothing written (commands are all or nothing).
type tx struct {
	w     *kvsm.Writer
	shard uint32
	index uint64
	cmd   *Command
	mode  txMode

	ov       map[string]*ovVal
	order    []string
	lockOnly map[string]bool
	checked  map[string]bool // keys whose lock was checked

	newIno    Ino
	usedDelta int64
	touched   []Ino
	freed     []Freed
	old       []StripeVersion
	status    Status
	busy      Busy
	resIno    Ino
}

type ovVal struct {
	present bool
	value   []byte
}

// errStop ends a command's parts early; tx.status says why.
var errStop = errors.New("stop")

func newTx(w *kvsm.Writer, shard uint32, index uint64, c *Command, mode txMode) *tx {
	return &tx{w: w, shard: shard, index: index, cmd: c, mode: mode, ov: map[string]*ovVal{}, lockOnly: map[string]bool{}, checked: map[string]bool{}}
}

func (t *tx) fail(s Status) error {
	t.status = s
	return errStop
}

// checkLock answers errStop (busy) if key is locked by a transaction other
// than this prepare's.
func (t *tx) checkLock(key []byte) error {
	if t.checked[string(key)] {
		return nil
	}
	// While the shard holds no lock at all (no transaction between its
	// prepare and finish: the common case) there is nothing to look up.
	if held, err := t.w.AnyUnder(lockPrefix); err != nil {
		return err
	} else if !held {
		t.checked[string(key)] = true
		return nil
	}
	v, found, err := t.w.Get(lockKey(key))
	if err != nil {
		return err
	}
	if found {
		b, err := decodeLock(v)
		if err != nil {
			return err
		}
		if t.mode != modePrepare || b.Txid != t.cmd.Txid {
			t.busy = b
			return t.fail(StatusBusy)
		}
	}
	t.checked[string(key)] = true
	return nil
}

func (t *tx) get(key []byte) ([]byte, bool, error) {
	if o, ok := t.ov[string(key)]; ok {
		return o.value, o.present, nil
	}
	if err := t.checkLock(key); err != nil {
		return nil, false, err
	}
	return t.w.Get(key)
}

func (t *tx) put(key, value []byte, present bool) error {
	if err := t.checkLock(key); err != nil {
		return err
	}
	k := string(key)
	if _, ok := t.ov[k]; !ok {
		t.order = append(t.order, k)
	}
	t.ov[k] = &ovVal{present: present, value: value}
	return nil
}

func (t *tx) set(key, value []byte) error { return t.put(key, value, true) }
func (t *tx) del(key []byte) error        { return t.put(key, nil, false) }

// counter reads a shard counter; counters are never locked (a prepared
// create must not stop the shard's other creates).
func (t *tx) counter(kind byte) (uint64, error) {
	key := key1(kind)
	if o, ok := t.ov[string(key)]; ok {
		return u64(o.value), nil
	}
	v, _, err := t.w.GetPinned(key) // read by every create: kept in memory
	return u64(v), err
}

func (t *tx) setCounter(kind byte, v uint64) {
	k := string(key1(kind))
	if _, ok := t.ov[k]; !ok {
		t.order = append(t.order, k)
	}
	t.ov[k] = &ovVal{present: true, value: u64b(v)}
	t.checked[k] = true
}

func isCounter(k string) bool { return len(k) == 2 && k[0] == keySpace }

// flush writes the overlay to the Writer.
func (t *tx) flush() error {
	for _, k := range t.order {
		o := t.ov[k]
		var err error
		if o.present {
			err = t.w.Set([]byte(k), o.value)
		} else {
			err = t.w.Delete([]byte(k))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// flushLocked writes the overlay, locking every key it writes (counters
// excepted) and the lock-only keys, and returns their old values.
func (t *tx) flushLocked(lock Busy) ([]undoRec, error) {
	lv := encodeLock(lock)
	var undo []undoRec
	keys := append([]string(nil), t.order...)
	for k := range t.lockOnly {
		if _, written := t.ov[k]; !written {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys[len(t.order):]) // a deterministic undo log
	for _, k := range keys {
		if isCounter(k) {
			continue
		}
		_, written := t.ov[k]
		old, present, err := t.w.Get([]byte(k))
		if err != nil {
			return nil, err
		}
		undo = append(undo, undoRec{key: []byte(k), present: present, value: old, lockOnly: !written})
		if err := t.w.Set(lockKey([]byte(k)), lv); err != nil {
			return nil, err
		}
	}
	return undo, t.flush()
}

// report fills the result's inodes from the overlay.
func (t *tx) report(res *Result) {
	seen := map[Ino]bool{}
	for _, ino := range t.touched {
		if seen[ino] {
			continue
		}
		seen[ino] = true
		if o := t.ov[string(inodeKey(ino))]; o != nil && o.present {
			if in, err := decodeInode(o.value); err == nil {
				res.Inodes = append(res.Inodes, in)
			}
		}
	}
	res.Freed = t.freed
	res.OldStripes = t.old
}

func (t *tx) run(parts []Part) (*Result, error) {
	for i := range parts {
		err := t.part(&parts[i])
		if errors.Is(err, errStop) {
			return &Result{Status: t.status, Busy: t.busy, Ino: t.resIno}, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return &Result{Ino: t.resIno}, nil
}

// inode loads a local inode: ENOENT if absent, StatusCrossShard if
// another shard holds it.
func (t *tx) inode(ino Ino) (Inode, error) {
	if ino.Shard() != t.shard {
		t.resIno = ino
		return Inode{}, t.fail(StatusCrossShard)
	}
	v, found, err := t.get(inodeKey(ino))
	if err != nil {
		return Inode{}, err
	}
	if !found {
		return Inode{}, t.fail(errno(syscall.ENOENT))
	}
	return decodeInode(v)
}

func (t *tx) putInode(in *Inode) error {
	t.touched = append(t.touched, in.Ino)
	return t.set(inodeKey(in.Ino), encodeInode(in))
}

func (t *tx) dir(ino Ino) (Inode, error) {
	in, err := t.inode(ino)
	if err != nil {
		return in, err
	}
	if !IsDir(in.Mode) {
		return in, t.fail(errno(syscall.ENOTDIR))
	}
	return in, nil
}

func (t *tx) entry(dir Ino, name string) (entryVal, bool, error) {
	v, found, err := t.get(entryKey(dir, name))
	if err != nil || !found {
		return entryVal{}, false, err
	}
	e, err := decodeEntry(v)
	return e, true, err
}

// existingEntry loads p's parent directory and its entry p.Name, which
// must exist (ENOENT) and, when p.ExpectIno is set, name it (else
// StatusConflict).
func (t *tx) existingEntry(p *Part) (Inode, entryVal, error) {
	parent, err := t.dir(p.Parent)
	if err != nil {
		return parent, entryVal{}, err
	}
	cur, present, err := t.entry(p.Parent, p.Name)
	if err != nil {
		return parent, cur, err
	}
	if !present {
		return parent, cur, t.fail(errno(syscall.ENOENT))
	}
	if p.ExpectIno != 0 && cur.ino != p.ExpectIno {
		return parent, cur, t.fail(StatusConflict)
	}
	return parent, cur, nil
}

func checkName(name string) Status {
	switch {
	case name == "":
		return errno(syscall.ENOENT)
	case len(name) > MaxNameBytes:
		return errno(syscall.ENAMETOOLONG)
	case name == "." || name == ".." || bytes.IndexByte([]byte(name), '/') >= 0 || bytes.IndexByte([]byte(name), 0) >= 0:
		return errno(syscall.EINVAL)
	}
	return OK
}

func (t *tx) part(p *Part) error {
	now := t.cmd.Time
	switch p.Kind {
	case PartCreate:
		return t.create(p)

	case PartAddEntry:
		if s := checkName(p.Name); s != OK {
			return t.fail(s)
		}
		parent, err := t.dir(p.Parent)
		if err != nil {
			return err
		}
		ino := p.Ino
		if p.Flags&FlagNewInode != 0 {
			ino = t.newIno
		}
		if ino == 0 {
			return t.fail(StatusBadRequest)
		}
		cur, present, err := t.entry(p.Parent, p.Name)
		if err != nil {
			return err
		}
		if p.ExpectIno == 0 && present {
			return t.fail(errno(syscall.EEXIST))
		}
		if p.ExpectIno != 0 && (!present || cur.ino != p.ExpectIno) {
			return t.fail(StatusConflict)
		}
		adjustNlink(&parent, present && IsDir(cur.mode), IsDir(p.Mode))
		if err := t.set(entryKey(p.Parent, p.Name), encodeEntry(entryVal{ino: ino, mode: p.Mode & ModeType})); err != nil {
			return err
		}
		parent.Mtime, parent.Ctime = now, now
		return t.putInode(&parent)

	case PartRemoveEntry:
		parent, cur, err := t.existingEntry(p)
		if err != nil {
			return err
		}
		isDir := IsDir(cur.mode)
		if p.Flags&FlagMustBeDir != 0 && !isDir {
			return t.fail(errno(syscall.ENOTDIR))
		}
		if p.Flags&FlagMustNotBeDir != 0 && isDir {
			return t.fail(errno(syscall.EISDIR))
		}
		if p.Flags&FlagDropLink != 0 {
			if cur.ino.Shard() != t.shard {
				t.resIno = cur.ino
				return t.fail(StatusCrossShard)
			}
			if isDir {
				err = t.deleteDir(cur.ino)
			} else {
				err = t.link(cur.ino, -1)
			}
			if err != nil {
				return err
			}
		}
		t.resIno = cur.ino
		if err := t.del(entryKey(p.Parent, p.Name)); err != nil {
			return err
		}
		adjustNlink(&parent, isDir, false)
		parent.Mtime, parent.Ctime = now, now
		return t.putInode(&parent)

	case PartSetEntry:
		parent, cur, err := t.existingEntry(p)
		if err != nil {
			return err
		}
		if p.ExpectIno == 0 {
			return t.fail(StatusConflict) // an exchange must name what it replaces
		}
		adjustNlink(&parent, IsDir(cur.mode), IsDir(p.Mode))
		if err := t.set(entryKey(p.Parent, p.Name), encodeEntry(entryVal{ino: p.Ino, mode: p.Mode & ModeType})); err != nil {
			return err
		}
		parent.Mtime, parent.Ctime = now, now
		return t.putInode(&parent)

	case PartLink:
		return t.link(p.Ino, p.Delta)

	case PartDeleteDir:
		return t.deleteDir(p.Ino)

	case PartSetParent:
		in, err := t.dir(p.Ino)
		if err != nil {
			return err
		}
		if p.Ino == RootIno {
			return t.fail(errno(syscall.EBUSY))
		}
		in.Parent = p.Parent
		in.Ctime = now
		return t.putInode(&in)

	case PartSetAttr:
		return t.setattr(p)

	case PartCommitStripes:
		in, err := t.inode(p.Ino)
		if err != nil {
			return err
		}
		if in.Mode&ModeType != ModeRegular {
			return t.fail(errno(syscall.EISDIR))
		}
		for _, sv := range p.Stripes {
			k := stripeKey(p.Ino, sv.Index)
			if v, found, err := t.get(k); err != nil {
				return err
			} else if found {
				t.old = append(t.old, StripeVersion{Index: sv.Index, Version: u64(v)})
			}
			if err := t.set(k, u64b(sv.Version)); err != nil {
				return err
			}
		}
		in.Size = max(in.Size, p.Size)
		in.Mtime, in.Ctime = now, now
		return t.putInode(&in)

	case PartSetXattr:
		return t.setXattr(p)

	case PartRemoveXattr:
		in, err := t.inode(p.Ino)
		if err != nil {
			return err
		}
		k := xattrKey(p.Ino, p.Name)
		if _, found, err := t.get(k); err != nil {
			return err
		} else if !found {
			return t.fail(errno(syscall.ENODATA))
		}
		if err := t.del(k); err != nil {
			return err
		}
		in.Ctime = now
		return t.putInode(&in)

	case PartCheckEntry:
		if _, err := t.dir(p.Parent); err != nil {
			return err
		}
		k := entryKey(p.Parent, p.Name)
		cur, present, err := t.entry(p.Parent, p.Name)
		if err != nil {
			return err
		}
		if !present || cur.ino != p.ExpectIno {
			return t.fail(StatusConflict)
		}
		if t.mode == modePrepare {
			t.lockOnly[string(k)] = true
		}
		return nil

	case PartLockKey:
		if t.mode != modePrepare {
			return t.fail(StatusBadRequest)
		}
		k := namedLockKey(p.Name)
		if err := t.checkLock(k); err != nil {
			return err
		}
		t.lockOnly[string(k)] = true
		return nil
	}
	return t.fail(StatusBadRequest)
}

// adjustNlink keeps a directory's nlink at 2 + its subdirectories as an
// entry of it changes from (wasDir) to (isDir).
func adjustNlink(parent *Inode, wasDir, isDir bool) {
	switch {
	case wasDir && !isDir:
		parent.Nlink--
	case !wasDir && isDir:
		parent.Nlink++
	}
}

func (t *tx) create(p *Part) error {
	used, err := t.counter('u')
	if err != nil {
		return err
	}
	limit, err := t.counter('L')
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = DefaultInodeLimit
	}
	others, err := t.counter('o')
	if err != nil {
		return err
	}
	if used+others >= limit {
		return t.fail(errno(syscall.ENOSPC))
	}
	mode := p.Mode
	if mode&ModeType == 0 {
		mode |= ModeRegular
	}
	switch mode & ModeType {
	case ModeSymlink:
		if p.Target == "" {
			return t.fail(errno(syscall.ENOENT))
		}
		if len(p.Target) > MaxSymlinkBytes {
			return t.fail(errno(syscall.ENAMETOOLONG))
		}
	case ModeDir, ModeRegular, ModeFifo, ModeSocket, ModeChar, ModeBlock:
	default:
		return t.fail(errno(syscall.EINVAL))
	}
	seq, err := t.counter('c')
	if err != nil {
		return err
	}
	if seq == 0 {
		seq = 1
	}
	if seq >= 1<<SeqBits {
		return t.fail(errno(syscall.ENOSPC))
	}
	t.setCounter('c', seq+1)
	t.setCounter('u', used+1)
	t.usedDelta++
	now := t.cmd.Time
	in := Inode{Ino: MakeIno(t.shard, seq), Mode: mode, Uid: p.Uid, Gid: p.Gid, Nlink: 1, Rdev: p.Rdev,
		Atime: now, Mtime: now, Ctime: now, Gen: t.index, Target: p.Target}
	switch mode & ModeType {
	case ModeDir:
		in.Nlink = 2
		in.Parent = p.Parent
	case ModeRegular:
		in.Layout = p.Layout
		if in.Layout.K == 0 {
			in.Layout = DefaultLayout
		}
	case ModeSymlink:
		in.Size = uint64(len(p.Target))
	}
	t.newIno = in.Ino
	t.resIno = in.Ino
	return t.putInode(&in)
}

// link adds delta to a local inode's nlink, deleting it at 0.
func (t *tx) link(ino Ino, delta int32) error {
	in, err := t.inode(ino)
	if err != nil {
		return err
	}
	if IsDir(in.Mode) {
		// A directory's links are its entry and its subdirectories'
		// "..": entries keep them, never a link count change.
		return t.fail(errno(syscall.EPERM))
	}
	n := int64(in.Nlink) + int64(delta)
	if n > 65000 {
		return t.fail(errno(syscall.EMLINK))
	}
	if n <= 0 {
		return t.deleteInode(&in)
	}
	in.Nlink = uint32(n)
	in.Ctime = t.cmd.Time
	return t.putInode(&in)
}

func (t *tx) deleteDir(ino Ino) error {
	in, err := t.dir(ino)
	if err != nil {
		return err
	}
	if ino == RootIno {
		return t.fail(errno(syscall.EBUSY))
	}
	empty, err := t.emptyDir(ino)
	if err != nil {
		return err
	}
	if !empty {
		return t.fail(errno(syscall.ENOTEMPTY))
	}
	return t.deleteInode(&in)
}

// emptyDir reports whether a local directory has no entries; an entry
// locked by a transaction in flight makes it busy.
func (t *tx) emptyDir(ino Ino) (bool, error) {
	prefix := entryPrefix(ino)
	if b, locked, err := firstLock(t.w, prefix); err != nil {
		return false, err
	} else if locked && (t.mode != modePrepare || b.Txid != t.cmd.Txid) {
		t.busy = b
		return false, t.fail(StatusBusy)
	}
	for k, o := range t.ov {
		if o.present && bytes.HasPrefix([]byte(k), prefix) {
			return false, nil
		}
	}
	empty := true
	err := t.w.Scan(prefix, kvsm.PrefixEnd(prefix), func(k, _ []byte) bool {
		if o, ok := t.ov[string(k)]; ok && !o.present {
			return true // removed by this command
		}
		empty = false
		return false
	})
	return empty, err
}

// firstLock returns the first lock on a key starting with prefix.
func firstLock(r kvsm.Reader, prefix []byte) (Busy, bool, error) {
	lp := lockKey(prefix)
	var (
		b     Busy
		found bool
		derr  error
	)
	err := r.Scan(lp, kvsm.PrefixEnd(lp), func(_, v []byte) bool {
		b, derr = decodeLock(v)
		found = true
		return false
	})
	if err == nil {
		err = derr
	}
	return b, found, err
}

func (t *tx) deleteInode(in *Inode) error {
	if err := t.del(inodeKey(in.Ino)); err != nil {
		return err
	}
	var names [][]byte
	if err := t.w.Scan(xattrPrefix(in.Ino), kvsm.PrefixEnd(xattrPrefix(in.Ino)), func(k, _ []byte) bool {
		names = append(names, append([]byte(nil), k...))
		return true
	}); err != nil {
		return err
	}
	for k, o := range t.ov {
		if o.present && bytes.HasPrefix([]byte(k), xattrPrefix(in.Ino)) {
			names = append(names, []byte(k))
		}
	}
	// Map order must not reach the writes: replicas apply identically.
	sort.Slice(names, func(i, j int) bool { return bytes.Compare(names[i], names[j]) < 0 })
	for _, k := range names {
		if err := t.del(k); err != nil {
			return err
		}
	}
	if in.Mode&ModeType == ModeRegular {
		var e enc
		e.layout(in.Layout)
		if err := t.set(garbageKey(in.Ino), e.b); err != nil {
			return err
		}
		t.freed = append(t.freed, Freed{Ino: in.Ino, Layout: in.Layout})
	}
	used, err := t.counter('u')
	if err != nil {
		return err
	}
	if used > 0 {
		t.setCounter('u', used-1)
		t.usedDelta--
	}
	return nil
}

func (t *tx) setattr(p *Part) error {
	in, err := t.inode(p.Ino)
	if err != nil {
		return err
	}
	a := p.Attr
	now := t.cmd.Time
	if a.Mask&AttrSize != 0 {
		switch in.Mode & ModeType {
		case ModeDir:
			return t.fail(errno(syscall.EISDIR))
		case ModeRegular:
		default:
			return t.fail(errno(syscall.EINVAL))
		}
		if a.Size < in.Size && in.Layout.StripeBytes() > 0 {
			first := (a.Size + in.Layout.StripeBytes() - 1) / in.Layout.StripeBytes()
			var cut [][]byte
			if err := t.w.Scan(stripeKey(in.Ino, first), kvsm.PrefixEnd(stripePrefix(in.Ino)), func(k, v []byte) bool {
				cut = append(cut, append([]byte(nil), k...))
				t.old = append(t.old, StripeVersion{Index: u64(k[len(k)-8:]), Version: u64(v)})
				return true
			}); err != nil {
				return err
			}
			for _, k := range cut {
				if err := t.del(k); err != nil {
					return err
				}
			}
		}
		if a.Size != in.Size {
			in.Mtime = now
		}
		in.Size = a.Size
	}
	if a.Mask&AttrMode != 0 {
		in.Mode = in.Mode&ModeType | a.Mode&^uint32(ModeType)
	}
	if a.Mask&AttrUid != 0 {
		in.Uid = a.Uid
	}
	if a.Mask&AttrGid != 0 {
		in.Gid = a.Gid
	}
	switch {
	case a.Mask&AttrAtimeNow != 0:
		in.Atime = now
	case a.Mask&AttrAtime != 0:
		in.Atime = a.Atime
	}
	switch {
	case a.Mask&AttrMtimeNow != 0:
		in.Mtime = now
	case a.Mask&AttrMtime != 0:
		in.Mtime = a.Mtime
	}
	in.Ctime = now
	if a.Mask&AttrCtime != 0 {
		in.Ctime = a.Ctime
	}
	return t.putInode(&in)
}

func (t *tx) setXattr(p *Part) error {
	in, err := t.inode(p.Ino)
	if err != nil {
		return err
	}
	switch {
	case p.Name == "":
		return t.fail(errno(syscall.EINVAL))
	case len(p.Name) > MaxXattrNameBytes:
		return t.fail(errno(syscall.ERANGE))
	case len(p.Value) > MaxXattrValueBytes:
		return t.fail(errno(syscall.E2BIG))
	}
	k := xattrKey(p.Ino, p.Name)
	_, found, err := t.get(k)
	if err != nil {
		return err
	}
	if found && p.Flags&FlagXattrCreate != 0 {
		return t.fail(errno(syscall.EEXIST))
	}
	if !found && p.Flags&FlagXattrReplace != 0 {
		return t.fail(errno(syscall.ENODATA))
	}
	if !found {
		n := 0
		if err := t.w.Scan(xattrPrefix(p.Ino), kvsm.PrefixEnd(xattrPrefix(p.Ino)), func(_, _ []byte) bool {
			n++
			return n < MaxXattrsPerInode
		}); err != nil {
			return err
		}
		if n >= MaxXattrsPerInode {
			return t.fail(errno(syscall.ENOSPC))
		}
	}
	if err := t.set(k, append([]byte(nil), p.Value...)); err != nil {
		return err
	}
	in.Ctime = t.cmd.Time
	return t.putInode(&in)
}
