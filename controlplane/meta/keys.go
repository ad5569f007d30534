package meta

import "encoding/binary"

// Keys, relative to the shard's group (kvsm prefixes the group). Every
// metadata key starts with keySpace, which KV commands on the same shard
// may not use:
//
//	F0 'c'                  -> next inode sequence number (u64 BE)
//	F0 'u'                  -> inodes held (u64 BE)
//	F0 'L'                  -> inode limit (u64 BE; absent: DefaultInodeLimit)
//	F0 'o'                  -> inodes the other shards hold, as last told (u64 BE)
//	F0 'i' ino              -> Inode
//	F0 'd' dir name         -> entry: ino u64 BE | mode u32 BE
//	F0 'x' ino name         -> xattr value
//	F0 's' ino stripe       -> stripe version (u64 BE)
//	F0 'g' ino              -> freed inode's layout: its stripes await the data GC
//	F0 'l' key              -> lock on key: txid | coord | time
//	F0 't' txid             -> prepared intent (this shard's share of txid)
//	F0 'T' txid             -> decision (on the coordinator)
//	F0 'q' reqid            -> an Exec's stored result (retries answer it)
//	F0 'Q' time reqid       -> the same, by time, for expiry
//	F0 'k' name             -> shard-wide lock keys (RenameLock); never stored, only locked
const keySpace = 0xF0

// DefaultInodeLimit is the cluster's inode limit unless configured (the
// runbook's 64M).
const DefaultInodeLimit = 64 << 20

func key1(kind byte) []byte { return []byte{keySpace, kind} }

func keyIno(kind byte, ino Ino) []byte {
	return binary.BigEndian.AppendUint64([]byte{keySpace, kind}, uint64(ino))
}

func keyInoName(kind byte, ino Ino, name string) []byte {
	return append(keyIno(kind, ino), name...)
}

func inodeKey(ino Ino) []byte              { return keyIno('i', ino) }
func entryKey(dir Ino, name string) []byte { return keyInoName('d', dir, name) }
func entryPrefix(dir Ino) []byte           { return keyIno('d', dir) }
func xattrKey(ino Ino, name string) []byte { return keyInoName('x', ino, name) }
func xattrPrefix(ino Ino) []byte           { return keyIno('x', ino) }
func stripePrefix(ino Ino) []byte          { return keyIno('s', ino) }
func stripeKey(ino Ino, idx uint64) []byte {
	return binary.BigEndian.AppendUint64(stripePrefix(ino), idx)
}
func garbageKey(ino Ino) []byte { return keyIno('g', ino) }
func lockKey(k []byte) []byte   { return append([]byte{keySpace, 'l'}, k...) }

// lockPrefix starts every lock key, reqPrefix every request record's.
var (
	lockPrefix = []byte{keySpace, 'l'}
	reqPrefix  = []byte{keySpace, 'q'}
)

func intentKey(txid uint64) []byte    { return keyIno('t', Ino(txid)) }
func decideKey(txid uint64) []byte    { return keyIno('T', Ino(txid)) }
func reqKey(reqid uint64) []byte      { return keyIno('q', Ino(reqid)) }
func namedLockKey(name string) []byte { return append([]byte{keySpace, 'k'}, name...) }

func reqTimeKey(t int64, reqid uint64) []byte {
	b := []byte{keySpace, 'Q'}
	b = binary.BigEndian.AppendUint64(b, uint64(t)^1<<63) // signed order
	return binary.BigEndian.AppendUint64(b, reqid)
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func u64b(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

type entryVal struct {
	ino  Ino
	mode uint32
}

func encodeEntry(e entryVal) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(e.ino))
	return binary.BigEndian.AppendUint32(b, e.mode)
}

func decodeEntry(b []byte) (entryVal, error) {
	if len(b) != 12 {
		return entryVal{}, badf("entry record of %d bytes", len(b))
	}
	return entryVal{ino: Ino(binary.BigEndian.Uint64(b)), mode: binary.BigEndian.Uint32(b[8:])}, nil
}

func encodeLock(b Busy) []byte {
	var e enc
	e.busy(b)
	return e.b
}

func decodeLock(v []byte) (Busy, error) {
	d := dec{b: v}
	b := d.busy()
	return b, d.done()
}
