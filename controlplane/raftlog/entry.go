package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// Key prefixes. One byte, then the group id, then the rest.
const (
	prefixLog    byte = 0x01
	prefixStable byte = 0x02
)

const (
	logKeyLen   = 1 + 4 + 8
	groupPrefix = 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error reporting a stored entry that does
// not decode or whose checksum or index does not match.
var ErrCorrupt = errors.New("raftlog: corrupt entry")

func logKey(dst []byte, group uint32, index uint64) []byte {
	dst = append(dst, prefixLog)
	dst = binary.BigEndian.AppendUint32(dst, group)
	return binary.BigEndian.AppendUint64(dst, index)
}

// logBounds returns [lower, upper) covering every log key of group.
func logBounds(group uint32) (lower, upper []byte) {
	lower = logKey(nil, group, 0)
	if group == ^uint32(0) {
		upper = []byte{prefixLog + 1}
	} else {
		upper = logKey(nil, group+1, 0)
	}
	return lower, upper
}

func stableKey(group uint32, key []byte) []byte {
	k := make([]byte, 0, groupPrefix+len(key))
	k = append(k, prefixStable)
	k = binary.BigEndian.AppendUint32(k, group)
	return append(k, key...)
}

// Entry value layout (all integers unsigned varints unless said):
//
//	crc32c u32 LE   over everything after it
//	index           must equal the key's index
//	term
//	type            one byte (raft.LogType)
//	len(data), data
//	len(extensions), extensions
//	appendedAt      zig-zag varint of Unix nanoseconds; 0 means the zero time
const entryFixedMax = 4 + 3*binary.MaxVarintLen64 + 1 + 2*binary.MaxVarintLen64

// encodedEntrySize bounds the encoded size of l.
func encodedEntrySize(l *raft.Log) int {
	return entryFixedMax + len(l.Data) + len(l.Extensions)
}

// appendEntry appends l's value encoding to dst.
func appendEntry(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	var nanos int64
	if !l.AppendedAt.IsZero() {
		nanos = l.AppendedAt.UnixNano()
	}
	dst = binary.AppendVarint(dst, nanos)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// decodeEntry decodes v (the value stored under index) into l. Data and
// Extensions are copied: v may belong to Pebble.
func decodeEntry(v []byte, index uint64, l *raft.Log) error {
	if len(v) < 4 {
		return fmt.Errorf("%w: index %d: value of %d bytes is shorter than its checksum", ErrCorrupt, index, len(v))
	}
	if got, want := crc32.Checksum(v[4:], castagnoli), binary.LittleEndian.Uint32(v); got != want {
		return fmt.Errorf("%w: index %d: checksum %08x, stored %08x", ErrCorrupt, index, got, want)
	}
	d := decoder{b: v[4:]}
	stored := d.uvarint()
	term := d.uvarint()
	typ := d.byte()
	data := d.bytes()
	ext := d.bytes()
	nanos := d.varint()
	if d.err != nil {
		return fmt.Errorf("%w: index %d: %v", ErrCorrupt, index, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: index %d: %d trailing bytes", ErrCorrupt, index, len(d.b))
	}
	if stored != index {
		return fmt.Errorf("%w: key says index %d, value says %d", ErrCorrupt, index, stored)
	}
	l.Index = index
	l.Term = term
	l.Type = raft.LogType(typ)
	l.Data = cloneOrNil(data)
	l.Extensions = cloneOrNil(ext)
	if nanos == 0 {
		l.AppendedAt = time.Time{}
	} else {
		l.AppendedAt = time.Unix(0, nanos)
	}
	return nil
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// decoder reads varint-framed fields; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errors.New("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errors.New("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes, only %d left", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
