package chunkstore

import (
	"fmt"
	"slices"

	"github.com/claudefs/claudefs/nvme"
)

// Recovery rebuilds a partition's index before its goroutine starts:
//
//  1. load the valid checkpoint slot with the later position (if any);
//  2. find the partition's segments written at or after that position (the
//     first summary of each segment names its sequence number);
//  3. replay their batches in log order, stopping in each segment at the
//     first block that is not the next valid summary;
//  4. verify the data of the partition's last maxFlying batches, the only ones a
//     crash can have torn (one batch is in flight at a time), and drop it if
//     any block fails its checksum: it was never acknowledged.
//
// Every byte read is validated before use; nothing read from the device can
// make recovery allocate more than the layout bounds.

type recovered struct {
	maxSeq   uint64
	replayed int // batches replayed
	dropped  int // torn batches dropped
	loaded   int // entries loaded from the checkpoint
}

func (s *Store) recoverPartition(p *partition) (recovered, error) {
	var rv recovered
	sumBuf, err := nvme.AllocAligned(sumArea)
	if err != nil {
		return rv, err
	}
	defer nvme.FreeAligned(sumBuf)

	pos, err := s.loadCheckpoint(p, &rv)
	if err != nil {
		return rv, err
	}

	// Which segments hold batches at or after pos?
	type cand struct {
		seg int
		seq uint64
	}
	var cands []cand
	for i := range p.segs {
		h, _, err := s.readSummary(p, sumBuf, p.segBase(i), 0, 0)
		if err != nil {
			continue
		}
		rv.maxSeq = max(rv.maxSeq, h.SegSeq)
		p.segs[i].seq = h.SegSeq
		if h.SegSeq >= pos.seq {
			cands = append(cands, cand{i, h.SegSeq})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})

	// Replay, holding back the last maxFlying batches until their data is
	// verified: only those can have been in flight at the crash.
	var window []held
	segSize := int64(s.sb.SegmentSize)
	for _, c := range cands {
		off := int64(0)
		for idx := uint32(0); off+BlockSize <= segSize; idx++ {
			h, recs, err := s.readSummary(p, sumBuf, p.segBase(c.seg)+off, c.seq, idx)
			if err != nil {
				break
			}
			size := int64(h.SumBlocks+h.DataBlocks) * BlockSize
			if off+size > segSize {
				break
			}
			if !(ckptPos{c.seq, idx}).less(pos) {
				if len(window) == maxFlying {
					p.applyBatch(&window[0])
					rv.replayed++
					window = append(window[:0], window[1:]...)
				}
				window = append(window, held{seg: c.seg, seq: c.seq, off: off, h: h, recs: recs})
			}
			off += size
			p.open, p.openSeq, p.writeOff, p.batchIdx = c.seg, c.seq, off, idx+1
		}
	}
	for i := range window {
		b := &window[i]
		err := s.verifyBatch(p, b.seg, b.off, b.h, b.recs)
		if err == nil {
			p.applyBatch(b)
			rv.replayed++
			continue
		}
		// This batch and every later one were never acknowledged
		// (acknowledgements go in log order). Make their summaries
		// unreadable for good, so no later recovery, for which they are
		// no longer the newest, can take them for valid.
		s.opts.Logf("chunkstore: partition %d: dropping %d torn batch(es) from segment %d offset %d, never acknowledged: %v",
			p.idx, len(window)-i, b.seg, b.off, err)
		for _, d := range window[i:] {
			clear(sumBuf[:BlockSize])
			if err := s.dev.WriteAt(sumBuf[:BlockSize], p.segBase(d.seg)+d.off); err != nil {
				return rv, fmt.Errorf("erasing a torn batch: %w", err)
			}
			if d.off == 0 && d.seg != b.seg {
				p.segs[d.seg].seq = 0
			}
		}
		if err := s.dev.Sync(); err != nil {
			return rv, err
		}
		rv.dropped += len(window) - i
		p.open, p.openSeq, p.writeOff, p.batchIdx = b.seg, b.seq, b.off, b.h.BatchIdx
		break
	}

	// Segment states from what the index references.
	for i := range p.segs {
		sg := &p.segs[i]
		switch {
		case i == p.open:
			sg.state = segOpen
		case sg.live > 0:
			sg.state = segUsed
		default:
			sg.state = segFree
			p.free = append(p.free, i)
		}
	}
	return rv, nil
}

// readSummary reads and checks the summary at device offset at. With
// wantSeq != 0 it must belong to that segment sequence at batch index idx;
// with wantSeq == 0 it must be a segment's first batch.
func (s *Store) readSummary(p *partition, buf []byte, at int64, wantSeq uint64, idx uint32) (summaryHeader, []record, error) {
	if err := s.dev.ReadAt(buf[:BlockSize], at); err != nil {
		return summaryHeader{}, nil, err
	}
	h, err := peekSummary(buf)
	if err != nil {
		return h, nil, err
	}
	if int(h.Partition) != p.idx || h.BatchIdx != idx || (wantSeq != 0 && h.SegSeq != wantSeq) {
		return h, nil, corruptf("summary: not the next batch of this segment")
	}
	n := int64(h.SumBlocks) * BlockSize
	if at+n > s.dev.Size() {
		return h, nil, corruptf("summary: past the end of the device")
	}
	if h.SumBlocks > 1 {
		if err := s.dev.ReadAt(buf[BlockSize:n], at+BlockSize); err != nil {
			return h, nil, err
		}
	}
	recs, err := decodeSummary(buf[:n], s.salt, h, nil)
	if err != nil {
		return h, nil, err
	}
	// The records' CRC slices were copied by decodeSummary (crcSlice), so
	// buf may be reused.
	return h, recs, nil
}

// verifyBatch reads a batch's data and checks every block.
func (s *Store) verifyBatch(p *partition, seg int, off int64, h summaryHeader, recs []record) error {
	if h.DataBlocks == 0 {
		return nil
	}
	data, err := nvme.AllocAligned(int(h.DataBlocks) * BlockSize)
	if err != nil {
		return err
	}
	defer nvme.FreeAligned(data)
	at := p.segBase(seg) + off + int64(h.SumBlocks)*BlockSize
	if err := s.dev.ReadAt(data[:int(h.DataBlocks)*BlockSize], at); err != nil {
		return err
	}
	for i := range recs {
		r := &recs[i]
		if r.Kind != recPut {
			continue
		}
		lo := int(r.Block) * BlockSize
		if err := verifyBlocks(data[lo:], int(r.Length), r.CRCs); err != nil {
			return fmt.Errorf("record %d (chunk %v): %w", i, r.ID, err)
		}
	}
	return nil
}

// loadCheckpoint loads the better of the partition's two checkpoint slots
// into its index and returns the log position replay starts from.
func (s *Store) loadCheckpoint(p *partition, rv *recovered) (ckptPos, error) {
	hdr, err := nvme.AllocAligned(BlockSize)
	if err != nil {
		return ckptPos{}, err
	}
	defer nvme.FreeAligned(hdr)
	capacity := (s.sb.CkptSlotSize - ckptHdrSize) / ckptEntrySize
	best, bestSlot := ckptHeader{}, -1
	for slot := 0; slot < 2; slot++ {
		if err := s.dev.ReadAt(hdr, ckptSlotOff(s.sb, p.idx, slot)); err != nil {
			return ckptPos{}, err
		}
		h, err := decodeCkptHeader(hdr, s.salt, p.idx)
		if err != nil || h.count > capacity {
			continue
		}
		if bestSlot < 0 || best.pos.less(h.pos) {
			best, bestSlot = h, slot
		}
	}
	for tries := 0; tries < 2 && bestSlot >= 0; tries++ {
		err := s.loadCkptBody(p, bestSlot, best)
		if err == nil {
			p.ckpt.slot = bestSlot
			rv.loaded = int(best.count)
			rv.maxSeq = max(rv.maxSeq, best.maxSeq)
			return best.pos, nil
		}
		s.opts.Logf("chunkstore: partition %d: checkpoint slot %d unusable (%v); trying the other", p.idx, bestSlot, err)
		clear(p.index)
		for i := range p.segs {
			p.segs[i] = segment{}
		}
		other := 1 - bestSlot
		if err := s.dev.ReadAt(hdr, ckptSlotOff(s.sb, p.idx, other)); err != nil {
			return ckptPos{}, err
		}
		h, err := decodeCkptHeader(hdr, s.salt, p.idx)
		if err != nil || h.count > capacity {
			break
		}
		best, bestSlot = h, other
	}
	// No usable checkpoint: replay the whole log.
	p.ckpt.slot = 1
	return ckptPos{}, nil
}

func (s *Store) loadCkptBody(p *partition, slot int, h ckptHeader) error {
	body := int(h.count) * ckptEntrySize
	if body == 0 {
		if h.crc != crc32c(nil) {
			return corruptf("checkpoint: empty body checksum")
		}
		return nil
	}
	size := (body + BlockSize - 1) / BlockSize * BlockSize
	buf, err := nvme.AllocAligned(size)
	if err != nil {
		return err
	}
	defer nvme.FreeAligned(buf)
	if err := s.dev.ReadAt(buf[:size], ckptSlotOff(s.sb, p.idx, slot)+ckptHdrSize); err != nil {
		return err
	}
	if got := crc32c(buf[:body]); got != h.crc {
		return corruptf("checkpoint: body checksum %08x, header says %08x", got, h.crc)
	}
	for o := 0; o < body; o += ckptEntrySize {
		id, e := getCkptEntry(buf[o:])
		if err := p.checkEntry(e); err != nil {
			return fmt.Errorf("checkpoint entry for chunk %v: %w", id, err)
		}
		p.apply(id, e, false)
	}
	return nil
}

// checkEntry validates an index entry read from disk: its data and
// checksums must lie in one of this partition's segments.
func (p *partition) checkEntry(e entry) error {
	data, seg := int64(p.s.sb.DataOff), int64(p.s.sb.SegmentSize)
	end := data + int64(p.s.sb.SegmentCount)*seg
	switch {
	case e.length == 0 || e.length > MaxChunkSize:
		return corruptf("length %d", e.length)
	case e.crcLoc < data || e.crcLoc >= end || e.dataLoc < data || e.dataLoc%BlockSize != 0:
		return corruptf("location %d/%d outside the segments", e.dataLoc, e.crcLoc)
	case ((e.crcLoc-data)/seg)%int64(p.s.sb.Partitions) != int64(p.idx):
		return corruptf("location %d in another partition's segment", e.crcLoc)
	case (e.crcLoc-data)/seg != (e.dataLoc-data)/seg || e.dataLoc+int64(e.length) > data+((e.dataLoc-data)/seg+1)*seg:
		return corruptf("record spans segments")
	}
	return nil
}

// held is a replayed batch not yet applied.
type held struct {
	seg  int
	seq  uint64
	off  int64
	h    summaryHeader
	recs []record
}

// applyBatch installs a replayed batch's records in the index.
func (p *partition) applyBatch(b *held) {
	cur := newEntryCursor(p.segBase(b.seg)+b.off, int(b.h.SumBlocks))
	for i := range b.recs {
		p.apply(b.recs[i].ID, cur.next(&b.recs[i]), false)
	}
}
