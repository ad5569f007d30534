package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadEncoding is wrapped by every decoding error: a command, query,
// result or stored record that is truncated, oversized or malformed.
var ErrBadEncoding = errors.New("meta: bad encoding")

// enc appends the encodings: integers as uvarints (zig-zag for signed),
// byte strings as uvarint length + bytes.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) u32(v uint32) { e.u64(uint64(v)) }
func (e *enc) i64(v int64)  { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *enc) bytes(v []byte) { e.u64(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) str(v string)   { e.u64(uint64(len(v))); e.b = append(e.b, v...) }

// dec reads enc's encodings; the first error sticks and every later read
// returns zero values. No read allocates more than the bytes it was given.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadEncoding}, args...)...)
	}
}

func (d *dec) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) bool() bool {
	switch v := d.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("boolean byte %#x", v)
		return false
	}
}

func (d *dec) u64() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u32() uint32 {
	v := d.u64()
	if v > 1<<32-1 {
		d.fail("value %d over 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (d *dec) i64() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks it against limit and against the bytes
// left (each counted item takes at least one byte), so a hostile count
// never sizes an allocation.
func (d *dec) count(limit int) int {
	n := d.u64()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.fail("count %d over the limit %d", n, limit)
		return 0
	}
	if n > uint64(len(d.b)) {
		d.fail("count %d with %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *dec) bytes(limit int) []byte {
	n := d.u64()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("field of %d bytes, limit %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("field of %d bytes, %d left", n, len(d.b))
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *dec) str(limit int) string { return string(d.bytes(limit)) }

func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

func (e *enc) inode(in *Inode) {
	e.u64(uint64(in.Ino))
	e.u32(in.Mode)
	e.u32(in.Uid)
	e.u32(in.Gid)
	e.u32(in.Nlink)
	e.u32(in.Rdev)
	e.u64(in.Size)
	e.i64(in.Atime)
	e.i64(in.Mtime)
	e.i64(in.Ctime)
	e.u64(in.Gen)
	e.u64(uint64(in.Parent))
	e.str(in.Target)
	e.layout(in.Layout)
}

func (d *dec) inode() Inode {
	var in Inode
	in.Ino = Ino(d.u64())
	in.Mode = d.u32()
	in.Uid = d.u32()
	in.Gid = d.u32()
	in.Nlink = d.u32()
	in.Rdev = d.u32()
	in.Size = d.u64()
	in.Atime = d.i64()
	in.Mtime = d.i64()
	in.Ctime = d.i64()
	in.Gen = d.u64()
	in.Parent = Ino(d.u64())
	in.Target = d.str(MaxSymlinkBytes)
	in.Layout = d.layout()
	return in
}

func (e *enc) layout(l Layout) {
	e.u8(l.K)
	e.u8(l.M)
	e.u32(l.StripeUnit)
}

func (d *dec) layout() Layout {
	return Layout{K: d.u8(), M: d.u8(), StripeUnit: d.u32()}
}

func (e *enc) busy(b Busy) {
	e.u64(b.Txid)
	e.u32(b.Coord)
	e.i64(b.Time)
}

func (d *dec) busy() Busy { return Busy{Txid: d.u64(), Coord: d.u32(), Time: d.i64()} }

func (e *enc) shards(s []uint32) {
	e.u64(uint64(len(s)))
	for _, v := range s {
		e.u32(v)
	}
}

func (d *dec) shards() []uint32 {
	n := d.count(MaxParts + 1)
	if n == 0 {
		return nil
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = d.u32()
	}
	return out
}

func (e *enc) stripes(s []StripeVersion) {
	e.u64(uint64(len(s)))
	for _, v := range s {
		e.u64(v.Index)
		e.u64(v.Version)
	}
}

func (d *dec) stripes(limit int) []StripeVersion {
	n := d.count(limit)
	if n == 0 {
		return nil
	}
	out := make([]StripeVersion, n)
	for i := range out {
		out[i] = StripeVersion{Index: d.u64(), Version: d.u64()}
	}
	return out
}

func encodeInode(in *Inode) []byte {
	var e enc
	e.inode(in)
	return e.b
}

func decodeInode(b []byte) (Inode, error) {
	d := dec{b: b}
	in := d.inode()
	return in, d.done()
}
