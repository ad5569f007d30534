package chunkstore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/nvme/ioengine"
)

// Write path. Puts and deletes are gathered into the open batch (the write
// combiner); one batch at a time is written with RWF_DSYNC, so it is durable
// when its single completion arrives, and then every request in it is
// acknowledged. Only the last batch of a partition can ever be torn by a
// crash, which is what recovery relies on.

// admitWrite adds a put or delete to the open batch, or queues it when the
// batch is full.
func (p *partition) admitWrite(r *request) {
	if p.roErr != nil {
		p.finish(r, p.roErr)
		return
	}
	e, ok := p.index[r.id]
	if ok && r.version < e.version {
		p.finish(r, &StaleVersionError{ID: r.id, Held: e.version, Asked: r.version})
		return
	}
	if r.kind == opDelete && (!ok || e.tomb) {
		p.finish(r, ErrNotFound)
		return
	}
	if !p.waitPut.empty() || !p.cur.fits(reqLen(r)) {
		p.waitPut.push(r)
		return
	}
	p.addRecord(r)
}

// addRecord copies r into the open batch. For opReloc the data is already in
// the read slab and the record keeps its original version and stamp.
func (p *partition) addRecord(r *request) {
	b := p.cur
	if len(b.recs) == 0 {
		b.firstAt = nanotime()
	}
	rec := record{ID: r.id, Version: r.version, Block: uint32(b.dataBlocks)}
	switch {
	case r.kind == opDelete || (r.kind == opReloc && r.ent.tomb):
		rec.Kind = recDelete
		if r.kind == opReloc {
			rec.Stamp = r.ent.stamp
		}
	default:
		n := reqLen(r)
		rec.Kind = recPut
		rec.Length = uint32(n)
		dst := b.buf[sumArea+b.dataBlocks*BlockSize:]
		nb := blocksFor(n)
		if r.kind == opReloc {
			rec.Stamp = r.ent.stamp
			p.copyFromSlab(r, dst[:n])
		} else {
			copy(dst, r.data)
		}
		clear(dst[n : nb*BlockSize])
		start := len(b.crcs)
		for i := 0; i < nb; i++ {
			b.crcs = append(b.crcs, crc32c(dst[i*BlockSize:min((i+1)*BlockSize, n)]))
		}
		rec.CRCs = b.crcs[start:len(b.crcs):len(b.crcs)]
		b.dataBlocks += nb
		b.dataBytes += n
	}
	if r.kind != opReloc {
		b.users++
	}
	if r.kind == opPut {
		b.puts++
	}
	b.recs = append(b.recs, rec)
	b.reqs = append(b.reqs, r)
}

// shouldFlush decides when the open batch is written: never while another is
// in flight; at once when it is full, has as many records as the last batch
// had (the writers that will come back), or holds CombineBytes; otherwise
// once its oldest record has waited CombineDelay.
func (p *partition) shouldFlush(now int64) bool {
	b := p.cur
	if len(p.fly) >= p.s.opts.AppendsInFlight || len(b.recs) == 0 {
		return false
	}
	return !p.waitPut.empty() || p.closing != nil || p.ckpt.want ||
		b.dataBytes >= p.s.opts.CombineBytes || len(b.recs) >= p.expect ||
		now-b.firstAt >= int64(p.s.opts.CombineDelay)
}

// flush writes the open batch.
func (p *partition) flush() {
	b := p.cur
	if p.roErr != nil {
		p.failBatch(b, p.roErr)
		return
	}
	sumBlocks := blocksFor(summaryBytes(len(b.recs), b.dataBlocks))
	total := int64(sumBlocks+b.dataBlocks) * BlockSize
	if p.open < 0 || p.writeOff+total > int64(p.s.sb.SegmentSize) {
		// Callers' puts may not take the cleaner's reserve, unless the
		// batch also carries relocations; deletes always may: both are
		// how space comes back.
		if !p.openSegment(b.puts > 0 && b.users == len(b.recs)) {
			p.failBatch(b, fmt.Errorf("%w: partition %d has no free segment (%d live bytes in %d segments): delete chunks or add capacity",
				ErrNoSpace, p.idx, p.liveBytes(), len(p.segs)))
			return
		}
	}
	for i := range b.recs {
		if b.reqs[i].kind != opReloc {
			b.recs[i].Stamp = p.openSeq<<32 | uint64(p.batchIdx)<<10 | uint64(i)
		}
	}
	h := summaryHeader{SegSeq: p.openSeq, BatchIdx: p.batchIdx, Records: uint32(len(b.recs)),
		SumBlocks: uint32(sumBlocks), DataBlocks: uint32(b.dataBlocks), Partition: uint32(p.idx)}
	start := sumArea - sumBlocks*BlockSize
	encodeSummary(b.buf[start:sumArea], p.s.salt, &h, b.recs)
	b.seg, b.off, b.sumBlocks, b.total = p.open, p.writeOff, sumBlocks, int(total)
	p.op = ioengine.Op{Opcode: ioengine.OpWrite, Flags: ioengine.FlagDatasync, File: 0,
		BufIndex: p.bufIndex(b.bufIdx), Buf: b.buf[start : start+int(total)],
		Off: p.segBase(p.open) + p.writeOff, UserData: udBatch | uint64(b.bufIdx)}
	if !p.prepare() {
		p.failBatch(b, fmt.Errorf("chunkstore: partition %d: the I/O engine refused the append", p.idx))
		return
	}
	b.seq, b.idx, b.done = p.openSeq, p.batchIdx, false
	p.segs[p.open].writers++
	p.writeOff += total
	p.batchIdx++
	p.fly = append(p.fly, b)
	p.cur = p.spare[len(p.spare)-1]
	p.spare = p.spare[:len(p.spare)-1]
	p.cur.reset()
	for !p.waitPut.empty() && p.cur.fits(reqLen(p.waitPut.head)) {
		p.addRecord(p.waitPut.pop())
	}
}

// prepare queues p.op, submitting first when the queue is full. The callers
// keep within the engine's depth, so a refusal is a bug, logged loudly.
// (p.op is a field, not a local, so passing it to the engine through an
// interface does not allocate.)
func (p *partition) prepare() bool {
	for try := 0; ; try++ {
		err := p.eng.Prepare(&p.op)
		if err == nil {
			p.opsLive++
			p.unsent++
			return true
		}
		if err != ioengine.ErrQueueFull || try == 1 {
			p.logf("chunkstore: partition %d: BUG: the I/O engine refused an operation (%d in flight): %v", p.idx, p.opsLive, err)
			return false
		}
		p.submit()
	}
}

func (p *partition) failBatch(b *batch, err error) {
	for i, r := range b.reqs {
		if r.kind == opReloc {
			p.relocDone(r, false)
		} else {
			p.finish(r, err)
		}
		b.reqs[i] = nil
	}
	b.reset()
}

// batchDone acknowledges the batch in flight once its write completed.
// batchDone records the completion of the append in buffer bi and
// acknowledges every append, oldest first, whose write has completed:
// an append is acknowledged only after all earlier ones, so recovery can
// cut the log at the first torn append.
func (p *partition) batchDone(bi int, res int32) {
	b := &p.bufs[bi]
	b.done, b.res = true, res
	p.segs[b.seg].writers--
	for len(p.fly) > 0 && p.fly[0].done {
		head := p.fly[0]
		copy(p.fly, p.fly[1:])
		p.fly = p.fly[:len(p.fly)-1]
		p.ackBatch(head)
		p.spare = append(p.spare, head)
		p.maybeFree(head.seg)
	}
}

// ackBatch applies and acknowledges one completed append, or fails it.
func (p *partition) ackBatch(b *batch) {
	res := b.res
	if int(res) != b.total || p.roErr != nil {
		var err error
		switch {
		case p.roErr != nil:
			err = p.roErr
		case res < 0:
			err = fmt.Errorf("chunkstore: partition %d: append of %d bytes at segment %d offset %d: %w", p.idx, b.total, b.seg, b.off, unix.Errno(-res))
		default:
			err = fmt.Errorf("chunkstore: partition %d: short append %d of %d bytes at segment %d offset %d", p.idx, res, b.total, b.seg, b.off)
		}
		// The device failed a write: what is on it past the last
		// acknowledged append is unknown, so this partition takes no
		// more writes; reopening the store recovers it (recovery cuts the
		// log at the first torn append). Reads go on.
		if p.roErr == nil {
			p.roErr = fmt.Errorf("%w; partition %d refuses writes until the store is reopened", err, p.idx)
			p.logf("chunkstore: %v", p.roErr)
		}
		p.stats.WriteErrors++
		p.failBatch(b, err)
		return
	}
	cur := newEntryCursor(p.segBase(b.seg)+b.off, b.sumBlocks)
	for i := range b.recs {
		rec := &b.recs[i]
		r := b.reqs[i]
		applied := p.apply(r.id, cur.next(rec), r.kind == opReloc)
		switch r.kind {
		case opReloc:
			p.relocDone(r, applied)
		case opPut:
			p.stats.Puts++
			p.stats.BytesWritten += uint64(rec.Length)
			p.finish(r, nil)
		case opDelete:
			p.stats.Deletes++
			p.finish(r, nil)
		}
		b.reqs[i] = nil
	}
	p.stats.Batches++
	p.stats.BatchRecords += uint64(len(b.recs))
	p.stats.BatchBytes += uint64(b.total)
	p.ckpt.since += int64(b.total)
	if b.users > 0 {
		p.expect = min(max(b.users, 1), maxBatchRecords)
	}
	b.reset()
}

// entryCursor turns the records of a batch written at device offset base
// (its summary first, sumBlocks blocks, then the data), taken in order, into
// index entries. The write path and recovery both use it.
type entryCursor struct {
	base, dataLoc, crcOff int64
}

func newEntryCursor(base int64, sumBlocks int) entryCursor {
	return entryCursor{base: base, dataLoc: base + int64(sumBlocks)*BlockSize, crcOff: summaryHdrSize}
}

// next is the entry of rec, the record after the previous one.
func (c *entryCursor) next(rec *record) entry {
	e := entry{version: rec.Version, stamp: rec.Stamp, length: rec.Length, crcLoc: c.base + c.crcOff + recordFixed}
	c.crcOff += recordFixed + int64(len(rec.CRCs))*4
	if rec.Kind == recDelete {
		e.tomb, e.dataLoc = true, -1
	} else {
		e.dataLoc = c.dataLoc + int64(rec.Block)*BlockSize
		e.crc0 = rec.CRCs[0]
	}
	return e
}

// apply installs ne for id when it supersedes what the index holds (the
// same rule replay uses: higher version, or same version written later).
// A relocation only applies when the index still points at the very record
// it copied. It reports whether ne was installed.
func (p *partition) apply(id ID, ne entry, reloc bool) bool {
	old, ok := p.index[id]
	if reloc {
		if !ok || old.tomb != ne.tomb || old.version != ne.version || old.stamp != ne.stamp {
			return false
		}
	} else if ok && !old.olderThan(ne.version, ne.stamp) {
		return false
	}
	if ok {
		p.unref(old)
	}
	p.index[id] = ne
	p.ref(ne)
	return true
}

func (p *partition) ref(e entry) {
	s := &p.segs[p.segOf(e.crcLoc)]
	s.live++
	s.liveBytes += int64(e.length)
}

func (p *partition) unref(e entry) {
	i := p.segOf(e.crcLoc)
	s := &p.segs[i]
	s.live--
	s.liveBytes -= int64(e.length)
	p.maybeFree(i)
}

// maybeFree returns segment i to the free list once nothing refers to it.
func (p *partition) maybeFree(i int) {
	s := &p.segs[i]
	if s.state == segUsed && s.live == 0 && s.readers == 0 && s.writers == 0 && !p.clean.holds(i) {
		s.state = segFree
		p.free = append(p.free, i)
	}
}

// reserveSegments are kept back from callers' writes so the cleaner always
// has somewhere to move live data.
const reserveSegments = 1

// openSegment seals the open segment and opens a free one. Callers' batches
// may not take the reserve; the cleaner's may.
func (p *partition) openSegment(user bool) bool {
	if len(p.free) == 0 || (user && len(p.free) <= reserveSegments) {
		return false
	}
	if p.open >= 0 {
		p.segs[p.open].state = segUsed
		old := p.open
		p.open = -1
		p.maybeFree(old)
	}
	i := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.open = i
	p.openSeq = p.s.nextSeq.Add(1)
	p.segs[i] = segment{seq: p.openSeq, state: segOpen}
	p.writeOff = 0
	p.batchIdx = 0
	return true
}

func (p *partition) liveBytes() int64 {
	var n int64
	for i := range p.segs {
		n += p.segs[i].liveBytes
	}
	return n
}
