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
	e, ok := p.index[r.id]
	if ok && r.version < e.version {
		p.finish(r, fmt.Errorf("%w: chunk %v is at version %d, request has %d", ErrStaleVersion, r.id, e.version, r.version))
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
	if p.flying != nil || len(b.recs) == 0 {
		return false
	}
	return !p.waitPut.empty() || p.closing != nil || p.ckpt.want ||
		b.dataBytes >= p.s.opts.CombineBytes || len(b.recs) >= p.expect ||
		now-b.firstAt >= int64(p.s.opts.CombineDelay)
}

// flush writes the open batch.
func (p *partition) flush() {
	b := p.cur
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
	op := ioengine.Op{Opcode: ioengine.OpWrite, Flags: ioengine.FlagDatasync, File: 0,
		BufIndex: p.bufIndex(b.bufIdx), Buf: b.buf[start : start+int(total)],
		Off: p.segBase(p.open) + p.writeOff, UserData: udBatch}
	if !p.prepare(&op) {
		return // cannot happen: a batch is the only write in flight
	}
	p.writeOff += total
	p.batchIdx++
	p.flying = b
	if b == &p.bufs[0] {
		p.cur = &p.bufs[1]
	} else {
		p.cur = &p.bufs[0]
	}
	p.cur.reset()
	for !p.waitPut.empty() && p.cur.fits(reqLen(p.waitPut.head)) {
		p.addRecord(p.waitPut.pop())
	}
}

// prepare queues op, submitting first when the queue is full.
func (p *partition) prepare(op *ioengine.Op) bool {
	for try := 0; try < 2; try++ {
		if err := p.eng.Prepare(op); err == nil {
			p.opsLive++
			return true
		}
		if _, err := p.eng.Submit(0, 0); err != nil {
			p.logf("chunkstore: partition %d: submit: %v", p.idx, err)
		}
	}
	p.logf("chunkstore: partition %d: submission queue stuck full", p.idx)
	return false
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
func (p *partition) batchDone(res int32) {
	b := p.flying
	p.flying = nil
	if int(res) != b.total {
		var err error
		if res < 0 {
			err = fmt.Errorf("chunkstore: partition %d: write of %d bytes at segment %d offset %d: %w", p.idx, b.total, b.seg, b.off, unix.Errno(-res))
		} else {
			err = fmt.Errorf("chunkstore: partition %d: short write %d of %d bytes at segment %d offset %d", p.idx, res, b.total, b.seg, b.off)
		}
		// Nothing of the batch is acknowledged; the next batch is
		// written over the same place.
		if p.open == b.seg {
			p.writeOff = b.off
			p.batchIdx--
		}
		p.stats.WriteErrors++
		p.failBatch(b, err)
		return
	}
	base := p.segBase(b.seg) + b.off
	sumLoc := base
	dataLoc := base + int64(b.sumBlocks)*BlockSize
	crcOff := int64(summaryHdrSize)
	for i := range b.recs {
		rec := &b.recs[i]
		r := b.reqs[i]
		ne := entry{version: rec.Version, stamp: rec.Stamp, length: rec.Length, crcLoc: sumLoc + crcOff + recordFixed}
		crcOff += recordFixed + int64(len(rec.CRCs))*4
		if rec.Kind == recDelete {
			ne.tomb = true
			ne.dataLoc = -1
		} else {
			ne.dataLoc = dataLoc + int64(rec.Block)*BlockSize
			ne.crc0 = rec.CRCs[0]
		}
		applied := p.apply(r.id, ne, r.kind == opReloc)
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
	if s.state == segUsed && s.live == 0 && s.readers == 0 && !p.clean.holds(i) {
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
