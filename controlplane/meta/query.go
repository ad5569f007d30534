package meta

import (
	"syscall"

	"github.com/claudefs/claudefs/controlplane/kvsm"
)

// QueryKind is the kind of a metadata query (a linearizable read on the
// shard's leader).
type QueryKind uint8

const (
	// QLookup answers the entry Parent/Name (Ino is the parent), with the
	// inode's attributes when this shard holds it.
	QLookup QueryKind = 1 + iota
	// QGetAttr answers inode Ino.
	QGetAttr
	// QReadDir answers the entries of directory Ino after the name After
	// (a stable cursor: names are kept in order), at most Limit.
	QReadDir
	// QGetXattr answers Ino's extended attribute Name.
	QGetXattr
	// QListXattr answers the names of Ino's extended attributes.
	QListXattr
	// QStatFS answers the shard's inode figures.
	QStatFS
	// QTxn answers transaction Txid's decision, if this shard holds one.
	// (In the other queries a non-zero Txid names a transaction whose
	// locks the reader passes through: its own.)
	QTxn
	// QIntents answers the transactions prepared here before Time, at most Limit.
	QIntents
	// QStripes answers Ino's stripe versions from index After (as a number), at most Limit.
	QStripes
	queryKindEnd
)

// Query is one metadata query.
type Query struct {
	Kind  QueryKind
	Ino   Ino
	Name  string
	After string
	Limit uint32
	Txid  uint64
	Time  int64
	From  uint64
}

const queryTag = 'm'

// EncodeQuery encodes q.
func EncodeQuery(q *Query) []byte {
	e := enc{b: make([]byte, 0, 32+len(q.Name)+len(q.After))}
	e.u8(queryTag)
	e.u8(uint8(q.Kind))
	e.u64(uint64(q.Ino))
	e.str(q.Name)
	e.str(q.After)
	e.u32(q.Limit)
	e.u64(q.Txid)
	e.i64(q.Time)
	e.u64(q.From)
	return e.b
}

// DecodeQuery decodes a query.
func DecodeQuery(b []byte) (*Query, error) {
	d := dec{b: b}
	if d.u8() != queryTag {
		d.fail("not a metadata query")
		return nil, d.err
	}
	q := &Query{Kind: QueryKind(d.u8()), Ino: Ino(d.u64()), Name: d.str(MaxNameBytes), After: d.str(MaxNameBytes),
		Limit: d.u32(), Txid: d.u64(), Time: d.i64(), From: d.u64()}
	if err := d.done(); err != nil {
		return nil, err
	}
	if q.Kind == 0 || q.Kind >= queryKindEnd {
		return nil, badf("query kind %d", q.Kind)
	}
	return q, nil
}

// StatFS is a shard's inode figures.
type StatFS struct {
	Used   uint64 // inodes held
	Limit  uint64 // the cluster's inode limit as this shard knows it
	Others uint64 // inodes the other shards hold, as last told
}

// Intent is a transaction prepared on a shard.
type Intent struct {
	Txid         uint64
	Coord        uint32
	Time         int64
	Participants []uint32
}

// Answer is a query's answer.
type Answer struct {
	Status  Status
	Busy    Busy
	Entry   Entry
	Inode   Inode
	Entries []Entry
	More    bool
	Value   []byte
	Names   []string
	Stat    StatFS
	// Decided and Committed answer QTxn.
	Decided      bool
	Committed    bool
	Participants []uint32
	Intents      []Intent
	Stripes      []StripeVersion
}

func (e *enc) entry(x *Entry) {
	e.str(x.Name)
	e.u64(uint64(x.Ino))
	e.u32(x.Mode)
	e.bool(x.Attr != nil)
	if x.Attr != nil {
		e.inode(x.Attr)
	}
}

func (d *dec) entry() Entry {
	x := Entry{Name: d.str(MaxNameBytes), Ino: Ino(d.u64()), Mode: d.u32()}
	if d.bool() {
		in := d.inode()
		x.Attr = &in
	}
	return x
}

// EncodeAnswer encodes a.
func EncodeAnswer(a *Answer) []byte {
	var e enc
	e.u32(uint32(a.Status))
	e.busy(a.Busy)
	e.entry(&a.Entry)
	e.inode(&a.Inode)
	e.u64(uint64(len(a.Entries)))
	for i := range a.Entries {
		e.entry(&a.Entries[i])
	}
	e.bool(a.More)
	e.bytes(a.Value)
	e.u64(uint64(len(a.Names)))
	for _, n := range a.Names {
		e.str(n)
	}
	e.u64(a.Stat.Used)
	e.u64(a.Stat.Limit)
	e.u64(a.Stat.Others)
	e.bool(a.Decided)
	e.bool(a.Committed)
	e.shards(a.Participants)
	e.u64(uint64(len(a.Intents)))
	for _, in := range a.Intents {
		e.u64(in.Txid)
		e.u32(in.Coord)
		e.i64(in.Time)
		e.shards(in.Participants)
	}
	e.stripes(a.Stripes)
	return e.b
}

// DecodeAnswer decodes a query's answer.
func DecodeAnswer(b []byte) (*Answer, error) {
	d := dec{b: b}
	a := &Answer{Status: Status(d.u32()), Busy: d.busy(), Entry: d.entry(), Inode: d.inode()}
	if n := d.count(MaxReadDir); n > 0 {
		a.Entries = make([]Entry, n)
		for i := range a.Entries {
			a.Entries[i] = d.entry()
		}
	}
	a.More = d.bool()
	a.Value = d.bytes(MaxXattrValueBytes)
	if n := d.count(MaxXattrsPerInode); n > 0 {
		a.Names = make([]string, n)
		for i := range a.Names {
			a.Names[i] = d.str(MaxXattrNameBytes)
		}
	}
	a.Stat = StatFS{Used: d.u64(), Limit: d.u64(), Others: d.u64()}
	a.Decided = d.bool()
	a.Committed = d.bool()
	a.Participants = d.shards()
	if n := d.count(maxIntents); n > 0 {
		a.Intents = make([]Intent, n)
		for i := range a.Intents {
			a.Intents[i] = Intent{Txid: d.u64(), Coord: d.u32(), Time: d.i64(), Participants: d.shards()}
		}
	}
	a.Stripes = d.stripes(MaxStripesPerCommit)
	return a, d.done()
}

const maxIntents = 256

// Query answers a metadata query, or a KV query. See kvsm.Applier.
func (s ShardSM) Query(r kvsm.Reader, qb []byte) ([]byte, error) {
	if len(qb) == 0 || qb[0] != queryTag {
		return kvsm.KV{}.Query(r, qb)
	}
	q, err := DecodeQuery(qb)
	if err != nil {
		return EncodeAnswer(&Answer{Status: StatusBadRequest}), nil
	}
	a, err := s.query(r, q)
	if err != nil {
		return nil, err
	}
	return EncodeAnswer(a), nil
}

// view reads a shard's metadata for queries, answering busy for locked keys.
type view struct {
	r     kvsm.Reader
	shard uint32
	a     *Answer
	// own is the transaction whose locks do not make a read busy (a
	// transaction's driver reading what it prepared); 0 for none.
	own uint64
}

func (v *view) locked(key []byte) (bool, error) {
	lv, found, err := v.r.Get(lockKey(key))
	if err != nil || !found {
		return false, err
	}
	b, err := decodeLock(lv)
	if err != nil || (v.own != 0 && b.Txid == v.own) {
		return false, err
	}
	v.a.Status, v.a.Busy = StatusBusy, b
	return true, nil
}

// inode reads a local inode; ok is false when the answer is already set
// (absent, busy, another shard's).
func (v *view) inode(ino Ino) (Inode, bool, error) {
	if ino.Shard() != v.shard {
		v.a.Status = StatusCrossShard
		return Inode{}, false, nil
	}
	k := inodeKey(ino)
	if busy, err := v.locked(k); err != nil || busy {
		return Inode{}, false, err
	}
	b, found, err := v.r.Get(k)
	if err != nil {
		return Inode{}, false, err
	}
	if !found {
		if ino == RootIno {
			return rootInode(0, 0), true, nil // not yet written by a first command
		}
		v.a.Status = errno(syscall.ENOENT)
		return Inode{}, false, nil
	}
	in, err := decodeInode(b)
	return in, err == nil, err
}

func (v *view) dir(ino Ino) (Inode, bool, error) {
	in, ok, err := v.inode(ino)
	if ok && !IsDir(in.Mode) {
		v.a.Status = errno(syscall.ENOTDIR)
		return in, false, nil
	}
	return in, ok, err
}

// localAttr returns an entry's inode when this shard holds it and it is
// not locked; nil otherwise.
func (v *view) localAttr(ino Ino) (*Inode, error) {
	if ino.Shard() != v.shard {
		return nil, nil
	}
	if _, found, err := v.r.Get(lockKey(inodeKey(ino))); err != nil || found {
		return nil, err
	}
	b, found, err := v.r.Get(inodeKey(ino))
	if err != nil || !found {
		return nil, err
	}
	in, err := decodeInode(b)
	return &in, err
}

func (s ShardSM) query(r kvsm.Reader, q *Query) (*Answer, error) {
	a := &Answer{}
	v := &view{r: r, shard: s.Shard, a: a, own: q.Txid}
	switch q.Kind {
	case QLookup:
		if _, ok, err := v.dir(q.Ino); err != nil || !ok {
			return a, err
		}
		k := entryKey(q.Ino, q.Name)
		if busy, err := v.locked(k); err != nil || busy {
			return a, err
		}
		b, found, err := r.Get(k)
		if err != nil {
			return nil, err
		}
		if !found {
			a.Status = errno(syscall.ENOENT)
			return a, nil
		}
		e, err := decodeEntry(b)
		if err != nil {
			return nil, err
		}
		a.Entry = Entry{Name: q.Name, Ino: e.ino, Mode: e.mode}
		if a.Entry.Attr, err = v.localAttr(e.ino); err != nil {
			return nil, err
		}
	case QGetAttr:
		in, ok, err := v.inode(q.Ino)
		if err != nil || !ok {
			return a, err
		}
		a.Inode = in
	case QReadDir:
		if _, ok, err := v.dir(q.Ino); err != nil || !ok {
			return a, err
		}
		prefix := entryPrefix(q.Ino)
		if b, locked, err := firstLock(r, prefix); err != nil {
			return nil, err
		} else if locked {
			a.Status, a.Busy = StatusBusy, b
			return a, nil
		}
		limit := int(q.Limit)
		if limit <= 0 || limit > MaxReadDir {
			limit = MaxReadDir
		}
		start := prefix
		if q.After != "" {
			start = append(entryKey(q.Ino, q.After), 0)
		}
		var derr error
		err := r.Scan(start, kvsm.PrefixEnd(prefix), func(k, val []byte) bool {
			if len(a.Entries) == limit {
				a.More = true
				return false
			}
			e, err := decodeEntry(val)
			if err != nil {
				derr = err
				return false
			}
			a.Entries = append(a.Entries, Entry{Name: string(k[len(prefix):]), Ino: e.ino, Mode: e.mode})
			return true
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return nil, err
		}
		for i := range a.Entries {
			if a.Entries[i].Attr, err = v.localAttr(a.Entries[i].Ino); err != nil {
				return nil, err
			}
		}
	case QGetXattr:
		if _, ok, err := v.inode(q.Ino); err != nil || !ok {
			return a, err
		}
		b, found, err := r.Get(xattrKey(q.Ino, q.Name))
		if err != nil {
			return nil, err
		}
		if !found {
			a.Status = errno(syscall.ENODATA)
			return a, nil
		}
		a.Value = b
	case QListXattr:
		if _, ok, err := v.inode(q.Ino); err != nil || !ok {
			return a, err
		}
		p := xattrPrefix(q.Ino)
		if err := r.Scan(p, kvsm.PrefixEnd(p), func(k, _ []byte) bool {
			a.Names = append(a.Names, string(k[len(p):]))
			return len(a.Names) < MaxXattrsPerInode
		}); err != nil {
			return nil, err
		}
	case QStatFS:
		for _, c := range []struct {
			kind byte
			to   *uint64
		}{{'u', &a.Stat.Used}, {'L', &a.Stat.Limit}, {'o', &a.Stat.Others}} {
			b, _, err := r.Get(key1(c.kind))
			if err != nil {
				return nil, err
			}
			*c.to = u64(b)
		}
		if a.Stat.Limit == 0 {
			a.Stat.Limit = DefaultInodeLimit
		}
		if s.Shard == RootIno.Shard() && a.Stat.Used == 0 {
			a.Stat.Used = 1 // the root, not yet written
		}
	case QTxn:
		d, found, err := readDecision(r, q.Txid)
		if err != nil {
			return nil, err
		}
		a.Decided, a.Committed, a.Participants = found, d.committed, d.participants
	case QIntents:
		limit := int(q.Limit)
		if limit <= 0 || limit > maxIntents {
			limit = maxIntents
		}
		p := []byte{keySpace, 't'}
		var derr error
		if err := r.Scan(p, kvsm.PrefixEnd(p), func(k, val []byte) bool {
			in, err := decodeIntent(val)
			if err != nil {
				derr = err
				return false
			}
			if in.time < q.Time {
				a.Intents = append(a.Intents, Intent{Txid: u64(k[2:]), Coord: in.coord, Time: in.time, Participants: in.participants})
			}
			return len(a.Intents) < limit
		}); err != nil {
			return nil, err
		}
		if derr != nil {
			return nil, derr
		}
	case QStripes:
		if _, ok, err := v.inode(q.Ino); err != nil || !ok {
			return a, err
		}
		limit := int(q.Limit)
		if limit <= 0 || limit > MaxStripesPerCommit {
			limit = MaxStripesPerCommit
		}
		p := stripePrefix(q.Ino)
		if err := r.Scan(stripeKey(q.Ino, q.From), kvsm.PrefixEnd(p), func(k, val []byte) bool {
			if len(a.Stripes) == limit {
				a.More = true
				return false
			}
			a.Stripes = append(a.Stripes, StripeVersion{Index: u64(k[len(k)-8:]), Version: u64(val)})
			return true
		}); err != nil {
			return nil, err
		}
	}
	return a, nil
}
