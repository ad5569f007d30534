package kvsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Snapshot stream format (one group):
//
//	magic    "CFSKVSN1"
//	applied  uvarint: the group's applied index the data reflects
//	records  { 0x01, uvarint len(key), key, uvarint len(value), value }*
//	end      0x00, uvarint record count, u32 LE CRC32C of all bytes before it
//
// Keys are relative to the group, so a snapshot restores into any group id.
const snapMagic = "CFSKVSN1"

// Limits on what a snapshot stream may contain, checked before allocating.
const (
	MaxSnapshotKeyBytes   = 64 << 10
	MaxSnapshotValueBytes = 64 << 20
	// restoreBatchBytes bounds one Pebble batch while restoring.
	restoreBatchBytes = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot is wrapped by every error about a malformed snapshot stream.
var ErrBadSnapshot = errors.New("kvsm: bad snapshot stream")

// Snapshot captures the group's state (a Pebble snapshot, cheap) on the
// FSM goroutine; Persist streams it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Err(); err != nil {
		return nil, err
	}
	var snap *fsmSnapshot
	err := f.st.use(func(db *pebble.DB) error {
		ps := db.NewSnapshot()
		applied, _, err := readApplied(ps, f.group)
		if err != nil {
			ps.Close()
			return err
		}
		snap = &fsmSnapshot{st: f.st, ps: ps, group: f.group, applied: applied}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kvsm: group %d: snapshot: %w", f.group, err)
	}
	return snap, nil
}

type fsmSnapshot struct {
	st      *State
	ps      *pebble.Snapshot
	group   uint32
	applied uint64
}

// Persist syncs the state WAL (so the stored applied index is durable
// before raft compacts its log on the strength of this snapshot), then
// streams the group's keys to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := s.st.use(func(db *pebble.DB) error {
		if err := db.LogData(nil, pebble.Sync); err != nil {
			return fmt.Errorf("sync state: %w", err)
		}
		return writeSnapshot(sink, pebbleReader{s.ps, s.group}, s.applied)
	})
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("kvsm: group %d: persist snapshot: %w", s.group, err)
	}
	return sink.Close()
}

// Release frees the Pebble snapshot.
func (s *fsmSnapshot) Release() { s.ps.Close() }

// crcWriter checksums what goes through it.
type crcWriter struct {
	w *bufio.Writer
	h hash.Hash32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	c.h.Write(p)
	return c.w.Write(p)
}

// writeSnapshot writes r's keys in the stream format.
func writeSnapshot(w io.Writer, r Reader, applied uint64) error {
	cw := &crcWriter{w: bufio.NewWriterSize(w, 256<<10), h: crc32.New(castagnoli)}
	var hdr []byte
	hdr = append(hdr, snapMagic...)
	hdr = binary.AppendUvarint(hdr, applied)
	if _, err := cw.Write(hdr); err != nil {
		return err
	}
	var count uint64
	var werr error
	var buf []byte
	err := r.Scan(nil, nil, func(k, v []byte) bool {
		buf = append(buf[:0], 0x01)
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		if _, werr = cw.Write(buf); werr != nil {
			return false
		}
		if _, werr = cw.Write(v); werr != nil {
			return false
		}
		count++
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	buf = append(buf[:0], 0x00)
	buf = binary.AppendUvarint(buf, count)
	if _, err := cw.Write(buf); err != nil {
		return err
	}
	if _, err := cw.w.Write(binary.LittleEndian.AppendUint32(nil, cw.h.Sum32())); err != nil {
		return err
	}
	return cw.w.Flush()
}

// snapshotReader decodes the stream format incrementally, checking every
// length against its limit before allocating.
type snapshotReader struct {
	r       *bufio.Reader
	h       hash.Hash32
	applied uint64
	count   uint64
	done    bool
	key     []byte
	val     []byte
}

func newSnapshotReader(r io.Reader) (*snapshotReader, error) {
	sr := &snapshotReader{r: bufio.NewReaderSize(r, 256<<10), h: crc32.New(castagnoli)}
	magic := make([]byte, len(snapMagic))
	if err := sr.full(magic); err != nil {
		return nil, err
	}
	if string(magic) != snapMagic {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrBadSnapshot, magic, snapMagic)
	}
	applied, err := sr.uvarint()
	if err != nil {
		return nil, err
	}
	sr.applied = applied
	return sr, nil
}

func (sr *snapshotReader) full(p []byte) error {
	if _, err := io.ReadFull(sr.r, p); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	sr.h.Write(p)
	return nil
}

func (sr *snapshotReader) uvarint() (uint64, error) {
	var v uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c, err := sr.r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		sr.h.Write([]byte{c})
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: overlong varint", ErrBadSnapshot)
}

// next reads the next record into sr.key/sr.val (valid until the next
// call). It returns false at the end, after checking count and checksum.
func (sr *snapshotReader) next() (bool, error) {
	if sr.done {
		return false, nil
	}
	tag, err := sr.r.ReadByte()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	sr.h.Write([]byte{tag})
	switch tag {
	case 0x01:
	case 0x00:
		count, err := sr.uvarint()
		if err != nil {
			return false, err
		}
		want := sr.h.Sum32()
		var crc [4]byte
		if _, err := io.ReadFull(sr.r, crc[:]); err != nil {
			return false, fmt.Errorf("%w: checksum: %v", ErrBadSnapshot, err)
		}
		if got := binary.LittleEndian.Uint32(crc[:]); got != want {
			return false, fmt.Errorf("%w: checksum %08x, computed %08x", ErrBadSnapshot, got, want)
		}
		if count != sr.count {
			return false, fmt.Errorf("%w: trailer says %d records, read %d", ErrBadSnapshot, count, sr.count)
		}
		if _, err := sr.r.ReadByte(); err != io.EOF {
			return false, fmt.Errorf("%w: bytes after the trailer", ErrBadSnapshot)
		}
		sr.done = true
		return false, nil
	default:
		return false, fmt.Errorf("%w: record tag %#x", ErrBadSnapshot, tag)
	}
	klen, err := sr.uvarint()
	if err != nil {
		return false, err
	}
	if klen > MaxSnapshotKeyBytes {
		return false, fmt.Errorf("%w: key of %d bytes, limit %d", ErrBadSnapshot, klen, MaxSnapshotKeyBytes)
	}
	sr.key = grow(sr.key, int(klen))
	if err := sr.full(sr.key); err != nil {
		return false, err
	}
	vlen, err := sr.uvarint()
	if err != nil {
		return false, err
	}
	if vlen > MaxSnapshotValueBytes {
		return false, fmt.Errorf("%w: value of %d bytes, limit %d", ErrBadSnapshot, vlen, MaxSnapshotValueBytes)
	}
	sr.val = grow(sr.val, int(vlen))
	if err := sr.full(sr.val); err != nil {
		return false, err
	}
	sr.count++
	return true, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// Restore replaces the group's state with the snapshot in rc. Raft calls
// it with no Apply running. A marker key is synced first and removed with
// the final batch, so a crash in between is detected by NewFSM. A stream
// that turns out malformed leaves the FSM stopped (its keys are partly
// replaced) until a later Restore succeeds.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.m.reset() // whatever the outcome, the group's keys are not what the memo saw
	touched := false
	err := f.st.use(func(db *pebble.DB) error {
		sr, err := newSnapshotReader(rc)
		if err != nil {
			return err
		}
		touched = true
		if err := db.Set(metaKey(f.group, metaRestoring), nil, pebble.Sync); err != nil {
			return err
		}
		b := db.NewBatch()
		lower, upper := dataBounds(f.group)
		_ = b.DeleteRange(lower, upper, nil)
		for {
			more, err := sr.next()
			if err != nil {
				b.Close()
				return err
			}
			if !more {
				break
			}
			_ = b.Set(groupKey(prefixData, f.group, sr.key), sr.val, nil)
			if b.Len() >= restoreBatchBytes {
				if err := b.Commit(pebble.NoSync); err != nil {
					b.Close()
					return err
				}
				b.Close()
				b = db.NewBatch()
			}
		}
		_ = b.Set(metaKey(f.group, metaApplied), binary.BigEndian.AppendUint64(nil, sr.applied), nil)
		_ = b.Delete(metaKey(f.group, metaRestoring), nil)
		err = b.Commit(pebble.Sync)
		b.Close()
		if err != nil {
			return err
		}
		f.applied.Store(sr.applied)
		return nil
	})
	f.failMu.Lock()
	defer f.failMu.Unlock()
	if err != nil && !touched {
		return fmt.Errorf("kvsm: group %d: restore refused, state unchanged: %w", f.group, err)
	}
	if err != nil {
		f.fail = fmt.Errorf("kvsm: group %d: restore failed, state machine stopped until a restore succeeds: %w", f.group, err)
		return f.fail
	}
	f.fail = nil
	return nil
}
