package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Wire protocol of the shard service. Each operation is one netio frame
// (netio owns the 28-byte frame header); this file defines the payloads.
// Every integer is little-endian. A chunk id is 16 bytes: ID.Hi (u64) then
// ID.Lo (u64).
//
// WriteShard (OpWriteShard) — store data as chunk id at version, durable
// before the reply:
//
//	offset size field
//	     0   16 chunk id
//	    16    8 version
//	    24    8 placement epoch of the writer
//	    32    n data, 1 <= n <= chunkstore.MaxChunkSize
//	reply: empty payload
//
// ReadShard (OpReadShard) — read up to length bytes of chunk id from offset:
//
//	     0   16 chunk id
//	    16    8 offset, < chunkstore.MaxChunkSize
//	    24    4 length, <= chunkstore.MaxChunkSize
//	request is exactly 28 bytes
//	reply:
//	     0    8 version of the chunk
//	     8    n data, n <= length (short at the end of the chunk)
//
// DeleteShard (OpDeleteShard) — remove chunk id durably:
//
//	     0   16 chunk id
//	    16    8 version (at least the stored one)
//	    24    8 placement epoch of the deleter
//	request is exactly 32 bytes; reply: empty payload
//
// StatShard (OpStatShard):
//
//	     0   16 chunk id
//	request is exactly 16 bytes
//	reply (exactly 12 bytes):
//	     0    8 version
//	     8    4 length in bytes
//
// ListShards (OpListShards) — one page of the walk over the stored chunks
// in id order, ids >= from:
//
//	     0   16 from chunk id
//	    16    4 limit, 1 <= limit <= MaxListLimit
//	request is exactly 20 bytes
//	reply:
//	     0    4 count (<= limit)
//	     4      count entries of 28 bytes: chunk id (16), version (8),
//	            length (4)
//
// Stats (OpStats) — the chunk store's counters:
//
//	request: empty payload
//	reply:
//	     0    2 field count n
//	     2  8*n u64 fields in the order of statsFields (Puts, Gets, Deletes,
//	            BytesWritten, BytesRead, Batches, BatchRecords, BatchBytes,
//	            Checkpoints, SegmentsCleaned, Relocated, CorruptReads,
//	            WriteErrors, LiveChunks, LiveBytes, Segments, FreeSegments,
//	            SegmentSize). A decoder ignores fields past the ones it knows
//	            and leaves missing ones zero, so fields can be appended.
//
// An operation that fails gets a netio error reply (code and message); the
// codes from netio.CodeFirstUser up are listed below.
const (
	OpWriteShard  = netio.OpFirstUser + iota // 16
	OpReadShard                              // 17
	OpDeleteShard                            // 18
	OpStatShard                              // 19
	OpListShards                             // 20
	OpStats                                  // 21
)

// Ops are the opcodes a Server registers.
var Ops = []netio.Opcode{OpWriteShard, OpReadShard, OpDeleteShard, OpStatShard, OpListShards, OpStats}

// Error codes of error replies.
const (
	CodeNotFound     = netio.CodeFirstUser + iota // 256 the chunk is not stored
	CodeStaleVersion                              // 257 the store holds a newer version
	CodeStaleEpoch                                // 258 the request's placement epoch is older than the dataplane's
	CodeNoSpace                                   // 259 the store is full
	CodeCorrupt                                   // 260 stored bytes failed their checksum
	CodeClosed                                    // 261 the store is closed
	CodeBadRequest                                // 262 malformed payload or out-of-range field
	CodeBusy                                      // 263 the worker queue is full; retry later
	CodeStoreError                                // 264 any other store failure (I/O error)
)

// MaxListLimit bounds one ListShards page (28 bytes an entry, so a page
// stays well under netio's default maximum payload).
const MaxListLimit = 10000

// Request sizes.
const (
	idSize        = 16
	writeHdrSize  = idSize + 8 + 8
	readReqSize   = idSize + 8 + 4
	deleteReqSize = idSize + 8 + 8
	statReqSize   = idSize
	statRespSize  = 8 + 4
	listReqSize   = idSize + 4
	listEntrySize = idSize + 8 + 4
	readHdrSize   = 8 // version before a read reply's data
)

var le = binary.LittleEndian

// errBadRequest marks a payload that does not decode.
var errBadRequest = errors.New("bad request")

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
}

func putID(b []byte, id chunkstore.ID) {
	le.PutUint64(b, id.Hi)
	le.PutUint64(b[8:], id.Lo)
}

func getID(b []byte) chunkstore.ID { return chunkstore.ID{Hi: le.Uint64(b), Lo: le.Uint64(b[8:])} }

// writeReq is a decoded WriteShard request; Data aliases the payload.
type writeReq struct {
	ID      chunkstore.ID
	Version uint64
	Epoch   uint64
	Data    []byte
}

func appendWriteReq(dst []byte, r writeReq) []byte {
	var h [writeHdrSize]byte
	putID(h[:], r.ID)
	le.PutUint64(h[16:], r.Version)
	le.PutUint64(h[24:], r.Epoch)
	return append(append(dst, h[:]...), r.Data...)
}

func decodeWriteReq(p []byte) (writeReq, error) {
	if len(p) < writeHdrSize {
		return writeReq{}, badf("write: payload of %d bytes, want at least %d", len(p), writeHdrSize+1)
	}
	r := writeReq{ID: getID(p), Version: le.Uint64(p[16:]), Epoch: le.Uint64(p[24:]), Data: p[writeHdrSize:]}
	switch {
	case len(r.Data) == 0:
		return writeReq{}, badf("write of shard %v: no data (a shard holds at least one byte)", r.ID)
	case len(r.Data) > chunkstore.MaxChunkSize:
		return writeReq{}, badf("write of shard %v: %d bytes of data, at most %d", r.ID, len(r.Data), chunkstore.MaxChunkSize)
	}
	return r, nil
}

type readReq struct {
	ID     chunkstore.ID
	Offset uint64
	Length uint32
}

func appendReadReq(dst []byte, r readReq) []byte {
	var b [readReqSize]byte
	putID(b[:], r.ID)
	le.PutUint64(b[16:], r.Offset)
	le.PutUint32(b[24:], r.Length)
	return append(dst, b[:]...)
}

func decodeReadReq(p []byte) (readReq, error) {
	if len(p) != readReqSize {
		return readReq{}, badf("read: payload of %d bytes, want %d", len(p), readReqSize)
	}
	r := readReq{ID: getID(p), Offset: le.Uint64(p[16:]), Length: le.Uint32(p[24:])}
	switch {
	case r.Offset >= chunkstore.MaxChunkSize:
		return readReq{}, badf("read of shard %v: offset %d out of range [0, %d)", r.ID, r.Offset, chunkstore.MaxChunkSize)
	case r.Length > chunkstore.MaxChunkSize:
		return readReq{}, badf("read of shard %v: length %d over the maximum of %d", r.ID, r.Length, chunkstore.MaxChunkSize)
	}
	return r, nil
}

type deleteReq struct {
	ID      chunkstore.ID
	Version uint64
	Epoch   uint64
}

func appendDeleteReq(dst []byte, r deleteReq) []byte {
	var b [deleteReqSize]byte
	putID(b[:], r.ID)
	le.PutUint64(b[16:], r.Version)
	le.PutUint64(b[24:], r.Epoch)
	return append(dst, b[:]...)
}

func decodeDeleteReq(p []byte) (deleteReq, error) {
	if len(p) != deleteReqSize {
		return deleteReq{}, badf("delete: payload of %d bytes, want %d", len(p), deleteReqSize)
	}
	return deleteReq{ID: getID(p), Version: le.Uint64(p[16:]), Epoch: le.Uint64(p[24:])}, nil
}

func decodeStatReq(p []byte) (chunkstore.ID, error) {
	if len(p) != statReqSize {
		return chunkstore.ID{}, badf("stat: payload of %d bytes, want %d", len(p), statReqSize)
	}
	return getID(p), nil
}

func appendStatResp(dst []byte, info chunkstore.Info) []byte {
	dst = le.AppendUint64(dst, info.Version)
	return le.AppendUint32(dst, uint32(info.Length))
}

func decodeStatResp(id chunkstore.ID, p []byte) (chunkstore.Info, error) {
	if len(p) != statRespSize {
		return chunkstore.Info{}, fmt.Errorf("dataplane: stat reply of %d bytes, want %d", len(p), statRespSize)
	}
	return chunkstore.Info{ID: id, Version: le.Uint64(p), Length: int(le.Uint32(p[8:]))}, nil
}

type listReq struct {
	From  chunkstore.ID
	Limit uint32
}

func appendListReq(dst []byte, r listReq) []byte {
	var b [listReqSize]byte
	putID(b[:], r.From)
	le.PutUint32(b[16:], r.Limit)
	return append(dst, b[:]...)
}

func decodeListReq(p []byte) (listReq, error) {
	if len(p) != listReqSize {
		return listReq{}, badf("list: payload of %d bytes, want %d", len(p), listReqSize)
	}
	r := listReq{From: getID(p), Limit: le.Uint32(p[16:])}
	if r.Limit < 1 || r.Limit > MaxListLimit {
		return listReq{}, badf("list: limit %d out of range [1, %d]", r.Limit, MaxListLimit)
	}
	return r, nil
}

func listRespSize(n int) int { return 4 + n*listEntrySize }

func appendListResp(dst []byte, page []chunkstore.Info) []byte {
	dst = le.AppendUint32(dst, uint32(len(page)))
	var e [listEntrySize]byte
	for _, in := range page {
		putID(e[:], in.ID)
		le.PutUint64(e[16:], in.Version)
		le.PutUint32(e[24:], uint32(in.Length))
		dst = append(dst, e[:]...)
	}
	return dst
}

func decodeListResp(p []byte, limit int) ([]chunkstore.Info, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("dataplane: list reply of %d bytes, want at least 4", len(p))
	}
	n := le.Uint32(p)
	if uint64(n) > uint64(limit) || len(p) != listRespSize(int(n)) {
		return nil, fmt.Errorf("dataplane: list reply of %d bytes with %d entries (limit %d)", len(p), n, limit)
	}
	page := make([]chunkstore.Info, n)
	for i := range page {
		e := p[4+i*listEntrySize:]
		page[i] = chunkstore.Info{ID: getID(e), Version: le.Uint64(e[16:]), Length: int(le.Uint32(e[24:]))}
	}
	return page, nil
}

// Stats is the Stats reply: the chunk store's counters and the dataplane's placement
// epoch (writers that are not told the epoch by a cluster map, such as the benchmark,
// learn it here).
type Stats struct {
	chunkstore.Stats
	Epoch uint64
}

// statsFields lists the Stats reply's fields in wire order. Append only: a reply with
// fewer fields (an older dataplane) leaves the missing ones zero.
func statsFields(s *Stats) []*uint64 {
	return []*uint64{&s.Puts, &s.Gets, &s.Deletes, &s.BytesWritten, &s.BytesRead, &s.Batches,
		&s.BatchRecords, &s.BatchBytes, &s.Checkpoints, &s.SegmentsCleaned, &s.Relocated,
		&s.CorruptReads, &s.WriteErrors, &s.LiveChunks, &s.LiveBytes, &s.Segments,
		&s.FreeSegments, &s.SegmentSize, &s.Epoch}
}

func appendStatsResp(dst []byte, st Stats) []byte {
	f := statsFields(&st)
	dst = le.AppendUint16(dst, uint16(len(f)))
	for _, v := range f {
		dst = le.AppendUint64(dst, *v)
	}
	return dst
}

func decodeStatsResp(p []byte) (Stats, error) {
	var st Stats
	if len(p) < 2 {
		return st, fmt.Errorf("dataplane: stats reply of %d bytes, want at least 2", len(p))
	}
	n := int(le.Uint16(p))
	if len(p) != 2+8*n {
		return st, fmt.Errorf("dataplane: stats reply of %d bytes for %d fields", len(p), n)
	}
	for i, v := range statsFields(&st) {
		if i < n {
			*v = le.Uint64(p[2+8*i:])
		}
	}
	return st, nil
}
