package chunkstore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/nvme/ioengine"
)

// Read path. A Get reads the blocks covering its range into registered slab
// buffers, plus the record's checksums unless the range is block 0 alone
// (whose checksum the index keeps), verifies every block, and only then
// copies the bytes out. The segment being read cannot be reused until the
// read completes (segment.readers).

const crcPiece = 0xff // piece number of the checksum read

// reqLen is the data size a write request adds to a batch.
func reqLen(r *request) int {
	if r.kind == opReloc {
		if r.ent.tomb {
			return 0
		}
		return int(r.ent.length)
	}
	return len(r.data)
}

// startGet starts the read for an opGet or opReloc, or queues it until slab
// buffers free up.
func (p *partition) startGet(r *request) {
	if r.kind == opGet {
		e, ok := p.index[r.id]
		if !ok || e.tomb {
			p.finish(r, ErrNotFound)
			return
		}
		r.ent = e
		r.info.Version = e.version
		if r.off >= int64(e.length) || reqWant(r) == 0 {
			r.n = 0
			p.finish(r, nil)
			return
		}
	}
	if !p.waitGet.empty() || !p.issueRead(r) {
		p.waitGet.push(r)
	}
}

// readSpan is the byte range of the chunk a read covers.
func readSpan(r *request) (off, n int) {
	if r.kind == opReloc {
		return 0, int(r.ent.length)
	}
	return int(r.off), min(reqWant(r), int(r.ent.length)-int(r.off))
}

// reqWant is the bytes a Get asks for.
func reqWant(r *request) int {
	if r.ref {
		return r.want
	}
	return len(r.data)
}

// issueRead prepares the reads for r; false when buffers or queue slots are
// short (nothing is taken then).
func (p *partition) issueRead(r *request) bool {
	off, n := readSpan(r)
	r.b0 = off / BlockSize
	r.b1 = (off + n + BlockSize - 1) / BlockSize
	needCRC := r.b0 != 0 || r.b1 != 1
	span := (r.b1 - r.b0) * BlockSize
	pieces := (span + readBufSize - 1) / readBufSize
	need := pieces
	if needCRC {
		need++
	}
	// Reads may fill the queue but for the slots kept for the appends and
	// the checkpoint write.
	if len(p.freeS) == 0 || p.slab.Free() < need || p.readOps+need > p.eng.Depth()-maxFlying-1 {
		return false
	}
	slot := p.freeS[len(p.freeS)-1]
	p.freeS = p.freeS[:len(p.freeS)-1]
	p.slots[slot] = r
	r.slot = slot
	r.pending = need
	p.readOps += need
	r.nbufs = pieces
	r.crcBuf = -1
	r.err = nil
	p.segs[p.segOf(r.ent.crcLoc)].readers++
	base := r.ent.dataLoc + int64(r.b0)*BlockSize
	var failed [maxGetBufs]uint64
	nfailed := 0
	for j := 0; j < pieces; j++ {
		idx, buf, _ := p.slab.Get()
		r.bufs[j] = idx
		ln := min(readBufSize, span-j*readBufSize)
		p.op = ioengine.Op{Opcode: ioengine.OpRead, BufIndex: p.bufIndex(p.slabIdx), Buf: buf[:ln],
			Off: base + int64(j)*readBufSize, UserData: udRead | uint64(j)<<32 | uint64(slot)}
		if !p.prepare() {
			failed[nfailed] = p.op.UserData
			nfailed++
		}
	}
	if needCRC {
		lo := r.ent.crcLoc + int64(r.b0)*4
		hi := r.ent.crcLoc + int64(r.b1)*4
		alo := lo &^ (BlockSize - 1)
		ahi := (hi + BlockSize - 1) &^ (BlockSize - 1)
		idx, buf, _ := p.slab.Get()
		r.crcBuf = idx
		r.crcSkip = int(lo - alo)
		p.op = ioengine.Op{Opcode: ioengine.OpRead, BufIndex: p.bufIndex(p.slabIdx), Buf: buf[:ahi-alo],
			Off: alo, UserData: udRead | crcPiece<<32 | uint64(slot)}
		if !p.prepare() {
			failed[nfailed] = p.op.UserData
			nfailed++
		}
	}
	// A read the engine refused completes as an I/O error (prepare has
	// logged why), once every piece has been accounted for.
	for i := 0; i < nfailed; i++ {
		p.readDone(ioengine.Completion{UserData: failed[i], Res: -int32(unix.EIO)})
	}
	return true
}

func (p *partition) readDone(c ioengine.Completion) {
	slot := int(c.UserData & 0xffffffff)
	piece := int(c.UserData>>32) & 0xff
	r := p.slots[slot]
	p.readOps--
	want := BlockSize * 2
	if piece != crcPiece {
		span := (r.b1 - r.b0) * BlockSize
		want = min(readBufSize, span-piece*readBufSize)
	}
	if c.Res < 0 {
		r.err = fmt.Errorf("chunkstore: read chunk %v: %w", r.id, unix.Errno(-c.Res))
	} else if piece != crcPiece && int(c.Res) != want {
		r.err = fmt.Errorf("chunkstore: read chunk %v: short read %d of %d bytes", r.id, c.Res, want)
	}
	r.pending--
	if r.pending > 0 {
		return
	}
	p.slots[slot] = nil
	p.freeS = append(p.freeS, slot)
	if r.err == nil {
		r.err = p.verify(r)
	}
	if r.err != nil && IsCorrupt(r.err) {
		p.stats.CorruptReads++
	}
	switch {
	case r.kind == opReloc:
		p.relocRead(r)
	case r.ref && r.err == nil:
		// GetRef: the caller reads the slab buffers and sends them back
		// with opRelease.
		_, r.n = readSpan(r)
		p.stats.Gets++
		p.stats.BytesRead += uint64(r.n)
		p.finish(r, nil)
	default:
		if r.err == nil {
			r.n = p.copyOut(r, r.data)
			p.stats.Gets++
			p.stats.BytesRead += uint64(r.n)
		}
		p.releaseRead(r)
		p.finish(r, r.err)
	}
	p.drainGets()
}

// releaseRead returns r's buffers and its hold on the segment.
func (p *partition) releaseRead(r *request) {
	for j := 0; j < r.nbufs; j++ {
		p.slab.Put(r.bufs[j])
	}
	r.nbufs = 0
	if r.crcBuf >= 0 {
		p.slab.Put(r.crcBuf)
		r.crcBuf = -1
	}
	i := p.segOf(r.ent.crcLoc)
	p.segs[i].readers--
	p.maybeFree(i)
}

func (p *partition) drainGets() {
	for !p.waitGet.empty() {
		if !p.issueRead(p.waitGet.head) {
			return
		}
		p.waitGet.pop()
	}
}

// verify checks every block read against its checksum.
func (p *partition) verify(r *request) error {
	var crcs []byte
	if r.crcBuf >= 0 {
		crcs = p.slab.Buf(r.crcBuf)[r.crcSkip:]
	}
	for blk := r.b0; blk < r.b1; blk++ {
		rel := (blk - r.b0) * BlockSize
		valid := min(BlockSize, int(r.ent.length)-blk*BlockSize)
		data := p.slab.Buf(r.bufs[rel/readBufSize])[rel%readBufSize:]
		want := r.ent.crc0
		if crcs != nil {
			want = binary.LittleEndian.Uint32(crcs[(blk-r.b0)*4:])
		}
		if got := crc32c(data[:valid]); got != want {
			return fmt.Errorf("chunkstore: chunk %v version %d: %w", r.id, r.ent.version,
				corruptf("block %d: checksum %08x, recorded %08x", blk, got, want))
		}
	}
	return nil
}

// copyOut copies the requested range from the slab buffers into dst.
func (p *partition) copyOut(r *request, dst []byte) int {
	off, n := readSpan(r)
	rel := off - r.b0*BlockSize
	done := 0
	for done < n {
		piece := (rel + done) / readBufSize
		po := (rel + done) % readBufSize
		done += copy(dst[done:n], p.slab.Buf(r.bufs[piece])[po:])
	}
	return n
}

// copyFromSlab copies a relocation's verified data into the batch.
func (p *partition) copyFromSlab(r *request, dst []byte) {
	p.copyOut(r, dst)
	p.releaseRead(r)
}

// ReadRef is a verified read whose bytes are still in the store's
// registered read buffers, so they can go to a socket (writev) without a
// copy. Release must be called exactly once when the bytes are no longer
// needed; until then the buffers and the segment they came from stay held.
// A ReadRef is a small value: copying it is fine, releasing twice is not.
type ReadRef struct {
	p *partition
	r *request
}

// GetRef reads up to n bytes of chunk id from off, verifies every block's
// checksum, and returns the bytes in place. A read past the end of the chunk
// is short (Len may be 0).
func (s *Store) GetRef(id ID, off int64, n int) (ReadRef, error) {
	if err := checkRange(id, off, n); err != nil {
		return ReadRef{}, err
	}
	r := getReq(opGet, id)
	r.ref, r.want, r.off = true, min(n, MaxChunkSize), off
	p := s.part(id)
	if err := p.call(r); err != nil {
		putReq(r)
		return ReadRef{}, err
	}
	return p.refOf(r), nil
}

// GetRefAsync is GetRef that does not wait: done runs on the partition's
// goroutine with the result and must not block (hand the bytes to a socket
// writer and Release them when written). It fails at once, without calling
// done, with ErrBusy when the partition's inbox is full or ErrClosed.
func (s *Store) GetRefAsync(id ID, off int64, n int, done func(ReadRef, error)) error {
	if err := checkRange(id, off, n); err != nil {
		return err
	}
	r := getReq(opGet, id)
	r.ref, r.want, r.off, r.onRef = true, min(n, MaxChunkSize), off, done
	if err := s.part(id).send(r, false); err != nil {
		putReq(r)
		return err
	}
	return nil
}

func checkRange(id ID, off int64, n int) error {
	if off < 0 || off >= MaxChunkSize || n < 0 {
		return fmt.Errorf("chunkstore: get %v: offset %d length %d out of range", id, off, n)
	}
	return nil
}

// refOf wraps a completed GetRef request.
func (p *partition) refOf(r *request) ReadRef {
	if r.nbufs == 0 { // nothing was read (empty range): nothing to hold
		return ReadRef{r: r}
	}
	return ReadRef{p: p, r: r}
}

// Len is the number of bytes read.
func (ref ReadRef) Len() int { return ref.r.n }

// Version is the chunk's version.
func (ref ReadRef) Version() uint64 { return ref.r.info.Version }

// Buffers appends to dst the slices holding the bytes, in order. They are
// valid until Release.
func (ref ReadRef) Buffers(dst [][]byte) [][]byte {
	r := ref.r
	if r.n == 0 || ref.p == nil {
		return dst
	}
	off, n := readSpan(r)
	rel := off - r.b0*BlockSize
	for done := 0; done < n; {
		piece, po := (rel+done)/readBufSize, (rel+done)%readBufSize
		b := ref.p.slab.Buf(r.bufs[piece])[po:]
		b = b[:min(len(b), n-done)]
		dst = append(dst, b)
		done += len(b)
	}
	return dst
}

// Release hands the buffers back to the store. It may be called from any
// goroutine, including from a GetRefAsync callback; it does not wait.
func (ref ReadRef) Release() {
	r := ref.r
	if r == nil {
		return
	}
	if ref.p == nil {
		putReq(r)
		return
	}
	r.kind, r.onRef, r.onPut = opRelease, nil, releaseDone
	if err := ref.p.send(r, false); err != nil {
		// Inbox full or closing: the partition frees its slab at close
		// anyway; a full inbox is retried by a goroutine so the caller
		// never blocks.
		if err == ErrBusy {
			go func() {
				if ref.p.send(r, true) != nil {
					putReq(r)
				}
			}()
			return
		}
		putReq(r)
	}
}

// releaseDone ends an opRelease sent by Release.
func releaseDone(error) {}
