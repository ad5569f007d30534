package data

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Chunk ids and stripe versions.
//
// A stripe version is 64 bits: the low ZeroMaskBits are the stripe's
// zero mask (bit i set: shard i is all zeros and not stored), the high
// 48 bits are random, drawn by the writer (crypto/rand). Random rather than
// a counter so that writers on different clients never need to agree on
// the next number: two writers of the same stripe pick different versions
// with probability 1 - 2^-48, and the chunk store's own version check
// (a Put of a lower version than the stored one is refused) catches the
// id collision that remains (below), which the writer answers by drawing
// again.
//
// A shard's chunk id is unique per (inode, stripe, shard index, version):
// Hi is the inode number, Lo packs the stripe index (StripeIndexBits), the
// shard index (6 bits, k+m ≤ 64) and the low 34 bits of the version's
// random part. The chunk is stored at the full 64-bit version, and a read
// checks that the version the store answers is the committed one, so two
// versions sharing the 34 id bits are told apart (the other one reads as
// a missing shard, never as data).
const (
	ZeroMaskBits    = 16
	StripeIndexBits = 24
	// MaxStripes is the number of stripes a file can have: 2^24 stripes of
	// 4 MiB (EC 4+2, 1 MiB units) are 64 TiB.
	MaxStripes    = 1 << StripeIndexBits
	shardIdxBits  = 6
	versionIDBits = 64 - StripeIndexBits - shardIdxBits
)

// newVersion draws a stripe version carrying zero mask zm.
func newVersion(zm uint16) uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		r := binary.LittleEndian.Uint64(b[:]) >> ZeroMaskBits
		if r != 0 {
			return r<<ZeroMaskBits | uint64(zm)
		}
	}
}

// zeroMask returns the zero mask of version v.
func zeroMask(v uint64) uint16 { return uint16(v) }

// chunkID is the chunk id of shard idx of stripe s of ino at version v.
func chunkID(ino meta.Ino, s uint64, idx int, v uint64) chunkstore.ID {
	r := v >> ZeroMaskBits & (1<<versionIDBits - 1)
	return chunkstore.ID{Hi: uint64(ino), Lo: s<<(64-StripeIndexBits) | uint64(idx)<<versionIDBits | r}
}

// Shard chunk format: a 16-byte header, then the shard's bytes up to its
// last non-zero byte (the rest of the stripe unit is implicit zeros, so a
// small file costs its data plus parity, no padding):
//
//	magic  uint32 "CFS1"
//	unit   uint32 the stripe unit (the shard's full length)
//	length uint32 the stored bytes after the header
//	crc    uint32 CRC32C of the stored bytes
//
// The CRC is computed by the writing client and checked by the reading
// client: end to end, on top of the store's own per-4-KiB checks.
const (
	shardMagic = 0x31534643 // "CFS1" little endian
	headerSize = 16
	// MaxStripeUnit bounds a layout's stripe unit: a shard and its header
	// fit in one chunk.
	MaxStripeUnit = 2 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// trimmedLen is the length of b up to its last non-zero byte.
func trimmedLen(b []byte) int {
	n := len(b)
	for n >= 8 && binary.LittleEndian.Uint64(b[n-8:n]) == 0 {
		n -= 8
	}
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return n
}

// encodeShard appends the chunk of shard bytes b (already trimmed) to dst.
func encodeShard(dst []byte, unit uint32, b []byte) []byte {
	var h [headerSize]byte
	putShardHeader(h[:], unit, uint32(len(b)), crc32.Checksum(b, castagnoli))
	return append(append(dst, h[:]...), b...)
}

// putShardHeader encodes the header of a shard of n stored bytes whose
// CRC32C is crc into h (headerSize bytes).
func putShardHeader(h []byte, unit, n, crc uint32) {
	binary.LittleEndian.PutUint32(h[0:], shardMagic)
	binary.LittleEndian.PutUint32(h[4:], unit)
	binary.LittleEndian.PutUint32(h[8:], n)
	binary.LittleEndian.PutUint32(h[12:], crc)
}

// errBadShard means a shard's bytes failed a check; it is treated as missing.
var errBadShard = errors.New("bad shard")

// decodeShard checks chunk (as read, header first) against unit and copies
// its bytes into out (len unit), zeroing the rest.
func decodeShard(chunk []byte, unit uint32, out []byte) error {
	if err := checkShard(chunk, unit); err != nil {
		return err
	}
	body := chunk[headerSize:]
	copy(out, body)
	clear(out[len(body):])
	return nil
}

// checkShard checks chunk (as read, header first) against unit.
func checkShard(chunk []byte, unit uint32) error {
	if err := checkHeader(chunk, unit); err != nil {
		return err
	}
	return checkBody(chunk, crc32.Checksum(chunk[headerSize:], castagnoli))
}

// checkHeader checks chunk's header (magic, unit, length) against unit
// and the chunk's length.
func checkHeader(chunk []byte, unit uint32) error {
	if len(chunk) < headerSize {
		return fmt.Errorf("%w: %d bytes, shorter than its header", errBadShard, len(chunk))
	}
	if m := binary.LittleEndian.Uint32(chunk[0:]); m != shardMagic {
		return fmt.Errorf("%w: magic %#x", errBadShard, m)
	}
	if u := binary.LittleEndian.Uint32(chunk[4:]); u != unit {
		return fmt.Errorf("%w: stripe unit %d, the layout says %d", errBadShard, u, unit)
	}
	n := binary.LittleEndian.Uint32(chunk[8:])
	body := chunk[headerSize:]
	if uint64(n) != uint64(len(body)) || n > unit {
		return fmt.Errorf("%w: header says %d bytes, chunk holds %d", errBadShard, n, len(body))
	}
	return nil
}

// checkBody checks bodyCRC, the CRC32C of the bytes after chunk's header
// (checked by checkHeader), against the header's.
func checkBody(chunk []byte, bodyCRC uint32) error {
	if bodyCRC != binary.LittleEndian.Uint32(chunk[12:]) {
		return fmt.Errorf("%w: CRC32C mismatch", errBadShard)
	}
	return nil
}

// stripeData is a stripe's data, read-only once made: its k shards of
// unit bytes, shard i at b[i*stride+off:]. Stripes read from dataplanes
// keep each shard where it was read, after the read reply's header and
// the shard's (stride slotHead + unit), so no copy is made; stripes just
// written are contiguous and may be short: a small file's stripe buffer
// holds only the bytes written, and what lies past the end of b reads as
// zeros.
type stripeData struct {
	b                    []byte
	stride, off, unit, k int // k: the shards (data bytes k*unit)
}

// flatStripe is the contiguous stripe of k shards of unit bytes in b,
// which may be short (zeros past its end).
func flatStripe(b []byte, unit, k int) stripeData {
	return stripeData{b: b, stride: unit, unit: unit, k: k}
}

// copyAt fills dst with the stripe's bytes from offset off (bytes past
// the end of b are zeros) and returns how many it filled (fewer only at
// the stripe's end).
func (d stripeData) copyAt(dst []byte, off int) int {
	n := 0
	for n < len(dst) && off+n < d.k*d.unit {
		i, w := (off+n)/d.unit, (off+n)%d.unit
		start, end := i*d.stride+d.off+w, i*d.stride+d.off+d.unit
		m := min(len(dst)-n, end-start)
		got := 0
		if start < len(d.b) {
			got = copy(dst[n:n+m], d.b[start:min(end, len(d.b))])
		}
		clear(dst[n+got : n+m])
		n += m
	}
	return n
}

// view returns the stripe's n bytes from offset off in place, if they lie
// in one shard and in b.
func (d stripeData) view(off, n int) ([]byte, bool) {
	i, w := off/d.unit, off%d.unit
	if w+n > d.unit || i >= d.k || i*d.stride+d.off+w+n > len(d.b) {
		return nil, false
	}
	start := i*d.stride + d.off + w
	return d.b[start : start+n : start+n], true
}

// cost is the memory the stripe holds.
func (d stripeData) cost() int64 { return int64(cap(d.b)) }
