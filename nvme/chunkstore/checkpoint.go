package chunkstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/nvme"
	"github.com/claudefs/claudefs/nvme/ioengine"
)

// Checkpoints. Each partition has two checkpoint slots and writes them in
// turn: the body (every live index entry) first, durably, then the header
// block that makes the slot valid. Recovery loads the valid slot with the
// later log position and replays only the batches written after it.
//
// A checkpoint is the only thing that lets tombstones go: once one is
// durable, the deleted records before its position are never replayed, so
// the tombstones it did not save are dropped from the index then, and not a
// moment earlier (a segment freed by the drop could otherwise be reused
// while the previous checkpoint still needs the tombstone).

const (
	ckptMagic     = 0x54504b43_53464643 // "CFSCKPT"
	ckptHdrSize   = BlockSize
	ckptEntrySize = 56
)

// ckptPos is a position in a partition's log: the next batch to be written.
type ckptPos struct {
	seq uint64
	idx uint32
}

func (a ckptPos) less(b ckptPos) bool { return a.seq < b.seq || (a.seq == b.seq && a.idx < b.idx) }

type tombRef struct {
	id    ID
	stamp uint64
}

type ckptState struct {
	want    bool  // a checkpoint was asked for (close, opCheckpoint)
	final   bool  // the closing checkpoint has been started
	active  bool  // one is being written
	since   int64 // bytes appended since the last durable one
	slot    int   // slot of the last durable checkpoint
	buf     []byte
	pending int
	header  bool // the header write is in flight
	err     error
	drop    []tombRef
	waiters fifo
}

func (c *ckptState) release() {
	if c.buf != nil {
		nvme.FreeAligned(c.buf)
		c.buf = nil
	}
}

// background starts a checkpoint or cleaning work when due.
func (p *partition) background() {
	c := &p.ckpt
	if p.closing != nil && !p.abandon && !c.final && !c.active && len(p.fly) == 0 && len(p.cur.recs) == 0 &&
		p.waitPut.empty() && !p.clean.active {
		c.final, c.want = true, true
	}
	if !c.active && !p.abandon && (c.want || c.since >= p.s.opts.CheckpointEvery) {
		p.startCheckpoint()
	}
	p.cleanStep()
}

// position is where replay must start for the index as it is now: the
// oldest append in flight, or else where the next batch will be written.
func (p *partition) position() ckptPos {
	if len(p.fly) > 0 {
		return ckptPos{seq: p.fly[0].seq, idx: p.fly[0].idx}
	}
	if p.open < 0 {
		return ckptPos{seq: p.s.nextSeq.Load() + 1}
	}
	return ckptPos{seq: p.openSeq, idx: p.batchIdx}
}

func (p *partition) startCheckpoint() {
	c := &p.ckpt
	c.want = false
	c.err = nil
	live := 0
	c.drop = c.drop[:0]
	for id, e := range p.index {
		if e.tomb {
			c.drop = append(c.drop, tombRef{id, e.stamp})
		} else {
			live++
		}
	}
	capacity := (int(p.s.sb.CkptSlotSize) - ckptHdrSize) / ckptEntrySize
	if live > capacity {
		p.ckptFailed(fmt.Errorf("%d live chunks exceed the checkpoint slot's %d entries", live, capacity))
		return
	}
	body := live * ckptEntrySize
	size := ckptHdrSize + (body+BlockSize-1)/BlockSize*BlockSize
	buf, err := nvme.AllocAligned(size)
	if err != nil {
		p.ckptFailed(err)
		return
	}
	c.buf = buf
	o := ckptHdrSize
	for id, e := range p.index {
		if e.tomb {
			continue
		}
		putCkptEntry(buf[o:], id, &e)
		o += ckptEntrySize
	}
	pos := p.position()
	slot := 1 - c.slot
	h := buf[:ckptHdrSize]
	binary.LittleEndian.PutUint64(h[0:], ckptMagic)
	binary.LittleEndian.PutUint32(h[8:], uint32(p.idx))
	binary.LittleEndian.PutUint64(h[16:], pos.seq)
	binary.LittleEndian.PutUint32(h[24:], pos.idx)
	binary.LittleEndian.PutUint64(h[28:], uint64(live))
	binary.LittleEndian.PutUint32(h[36:], crc32c(buf[ckptHdrSize:ckptHdrSize+body]))
	binary.LittleEndian.PutUint64(h[40:], p.s.nextSeq.Load())
	binary.LittleEndian.PutUint32(h[48:], crc32.Update(p.s.salt, crcTable, h[:48]))
	c.active = true
	c.header = false
	if size == ckptHdrSize {
		p.writeCkptHeader()
		return
	}
	// The body goes in one write (the kernel splits it); one slot of the
	// queue is kept for it.
	c.pending = 1
	p.op = ioengine.Op{Opcode: ioengine.OpWrite, Flags: ioengine.FlagDatasync, BufIndex: -1,
		Buf: buf[ckptHdrSize:size], Off: ckptSlotOff(p.s.sb, p.idx, slot) + ckptHdrSize, UserData: udCkpt}
	if !p.prepare() {
		c.pending = 0
		p.ckptFailed(fmt.Errorf("could not queue the checkpoint write"))
	}
}

func (p *partition) writeCkptHeader() {
	c := &p.ckpt
	c.header = true
	c.pending = 1
	p.op = ioengine.Op{Opcode: ioengine.OpWrite, Flags: ioengine.FlagDatasync, BufIndex: -1,
		Buf: c.buf[:ckptHdrSize], Off: ckptSlotOff(p.s.sb, p.idx, 1-c.slot), UserData: udCkpt}
	if !p.prepare() {
		c.pending = 0
		p.ckptFailed(fmt.Errorf("could not queue the checkpoint header write"))
	}
}

func (p *partition) ckptDone(cq ioengine.Completion) {
	c := &p.ckpt
	c.pending--
	if cq.Res < 0 && c.err == nil {
		c.err = fmt.Errorf("checkpoint write: %w", unix.Errno(-cq.Res))
	}
	if c.pending > 0 {
		return
	}
	if c.err != nil {
		p.ckptFailed(c.err)
		return
	}
	if !c.header {
		p.writeCkptHeader()
		return
	}
	c.slot = 1 - c.slot
	c.active = false
	c.since = 0
	c.release()
	for _, t := range c.drop {
		if e, ok := p.index[t.id]; ok && e.tomb && e.stamp == t.stamp {
			delete(p.index, t.id)
			p.unref(e)
		}
	}
	c.drop = c.drop[:0]
	p.stats.Checkpoints++
	for r := c.waiters.pop(); r != nil; r = c.waiters.pop() {
		p.finish(r, nil)
	}
}

func (p *partition) ckptFailed(err error) {
	c := &p.ckpt
	c.err = err
	c.active = false
	c.release()
	c.drop = c.drop[:0]
	p.logf("chunkstore: partition %d: checkpoint failed: %v", p.idx, err)
	for r := c.waiters.pop(); r != nil; r = c.waiters.pop() {
		p.finish(r, err)
	}
}

func putCkptEntry(b []byte, id ID, e *entry) {
	binary.LittleEndian.PutUint64(b[0:], id.Hi)
	binary.LittleEndian.PutUint64(b[8:], id.Lo)
	binary.LittleEndian.PutUint64(b[16:], e.version)
	binary.LittleEndian.PutUint64(b[24:], e.stamp)
	binary.LittleEndian.PutUint64(b[32:], uint64(e.dataLoc))
	binary.LittleEndian.PutUint64(b[40:], uint64(e.crcLoc))
	binary.LittleEndian.PutUint32(b[48:], e.length)
	binary.LittleEndian.PutUint32(b[52:], e.crc0)
}

func getCkptEntry(b []byte) (ID, entry) {
	id := ID{Hi: binary.LittleEndian.Uint64(b[0:]), Lo: binary.LittleEndian.Uint64(b[8:])}
	return id, entry{
		version: binary.LittleEndian.Uint64(b[16:]),
		stamp:   binary.LittleEndian.Uint64(b[24:]),
		dataLoc: int64(binary.LittleEndian.Uint64(b[32:])),
		crcLoc:  int64(binary.LittleEndian.Uint64(b[40:])),
		length:  binary.LittleEndian.Uint32(b[48:]),
		crc0:    binary.LittleEndian.Uint32(b[52:]),
	}
}

// ckptHeader is a decoded, checked checkpoint header.
type ckptHeader struct {
	pos    ckptPos
	count  uint64
	crc    uint32
	maxSeq uint64
}

func decodeCkptHeader(h []byte, salt uint32, part int) (ckptHeader, error) {
	var ch ckptHeader
	if binary.LittleEndian.Uint64(h[0:]) != ckptMagic {
		return ch, corruptf("checkpoint: bad magic")
	}
	if got, want := binary.LittleEndian.Uint32(h[48:]), crc32.Update(salt, crcTable, h[:48]); got != want {
		return ch, corruptf("checkpoint: header checksum %08x, computed %08x", got, want)
	}
	if p := binary.LittleEndian.Uint32(h[8:]); int(p) != part {
		return ch, corruptf("checkpoint: partition %d in slot of partition %d", p, part)
	}
	ch.pos = ckptPos{seq: binary.LittleEndian.Uint64(h[16:]), idx: binary.LittleEndian.Uint32(h[24:])}
	ch.count = binary.LittleEndian.Uint64(h[28:])
	ch.crc = binary.LittleEndian.Uint32(h[36:])
	ch.maxSeq = binary.LittleEndian.Uint64(h[40:])
	return ch, nil
}
