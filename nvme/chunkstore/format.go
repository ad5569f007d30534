package chunkstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk format. All integers are little-endian. The unit of layout and of
// checksumming is a 4 KiB block (BlockSize); the device's logical block size
// must divide it.
//
//	[superblock: block 0][checkpoint area][segment 0][segment 1]...
//
// A segment belongs to partition (index % partitions) and is written
// sequentially by that partition in batches. A batch is
//
//	[summary blocks][data blocks]
//
// The summary names every record of the batch (chunk id, version, stamp,
// length, kind, first data block) with one CRC32C per 4 KiB data block, and
// carries its own CRC. Each record's data starts on a block boundary.
// Recovery walks a segment from its start, batch after batch, and stops at
// the first block that is not a valid summary of this segment's sequence
// number with the next batch index.

// BlockSize is the store's unit of layout and checksumming.
const BlockSize = 4096

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// ErrCorrupt marks bytes that failed validation: a bad magic, checksum or
// impossible field. IsCorrupt reports it through wrapping.
var ErrCorrupt = errors.New("corrupt")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// IsCorrupt reports whether err is a corruption error.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

// ---- superblock ----

const (
	superMagic   = 0x4b4e4843_53464643 // "CFSFCHNK" little-endian
	formatVer    = 1
	superSize    = 80
	maxPartition = 256
)

type superblock struct {
	BlockSize    uint32 // always BlockSize
	Partitions   uint32
	SegmentSize  uint64 // bytes, multiple of BlockSize
	SegmentCount uint64
	CkptOff      uint64 // byte offset of the checkpoint area
	CkptSlotSize uint64 // bytes per checkpoint slot; 2 slots per partition
	DataOff      uint64 // byte offset of segment 0
	DeviceSize   uint64 // bytes of the device the store was formatted on
	UUID         [8]byte
}

func (s *superblock) encode(b []byte) {
	clear(b[:BlockSize])
	binary.LittleEndian.PutUint64(b[0:], superMagic)
	binary.LittleEndian.PutUint32(b[8:], formatVer)
	binary.LittleEndian.PutUint32(b[12:], s.BlockSize)
	binary.LittleEndian.PutUint32(b[16:], s.Partitions)
	binary.LittleEndian.PutUint64(b[20:], s.SegmentSize)
	binary.LittleEndian.PutUint64(b[28:], s.SegmentCount)
	binary.LittleEndian.PutUint64(b[36:], s.CkptOff)
	binary.LittleEndian.PutUint64(b[44:], s.CkptSlotSize)
	binary.LittleEndian.PutUint64(b[52:], s.DataOff)
	binary.LittleEndian.PutUint64(b[60:], s.DeviceSize)
	copy(b[68:76], s.UUID[:])
	binary.LittleEndian.PutUint32(b[76:], crc32c(b[:76]))
}

func decodeSuperblock(b []byte, deviceSize int64) (*superblock, error) {
	if len(b) < superSize {
		return nil, corruptf("superblock: %d bytes, need %d", len(b), superSize)
	}
	if binary.LittleEndian.Uint64(b[0:]) != superMagic {
		return nil, corruptf("superblock: bad magic (not a ClaudeFS chunk store)")
	}
	if got, want := binary.LittleEndian.Uint32(b[76:]), crc32c(b[:76]); got != want {
		return nil, corruptf("superblock: checksum %08x, computed %08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatVer {
		return nil, fmt.Errorf("superblock: format version %d, this build reads %d", v, formatVer)
	}
	s := &superblock{
		BlockSize:    binary.LittleEndian.Uint32(b[12:]),
		Partitions:   binary.LittleEndian.Uint32(b[16:]),
		SegmentSize:  binary.LittleEndian.Uint64(b[20:]),
		SegmentCount: binary.LittleEndian.Uint64(b[28:]),
		CkptOff:      binary.LittleEndian.Uint64(b[36:]),
		CkptSlotSize: binary.LittleEndian.Uint64(b[44:]),
		DataOff:      binary.LittleEndian.Uint64(b[52:]),
		DeviceSize:   binary.LittleEndian.Uint64(b[60:]),
	}
	copy(s.UUID[:], b[68:76])
	ds := uint64(deviceSize)
	switch {
	case s.BlockSize != BlockSize:
		return nil, corruptf("superblock: block size %d", s.BlockSize)
	case s.Partitions == 0 || s.Partitions > maxPartition:
		return nil, corruptf("superblock: %d partitions", s.Partitions)
	case s.SegmentSize < minSegmentSize || s.SegmentSize > maxSegmentSize || s.SegmentSize%BlockSize != 0:
		return nil, corruptf("superblock: segment size %d", s.SegmentSize)
	case s.SegmentCount == 0 || s.SegmentCount > ds/s.SegmentSize:
		return nil, corruptf("superblock: %d segments", s.SegmentCount)
	case s.CkptOff != BlockSize || s.CkptSlotSize%BlockSize != 0 || s.CkptSlotSize == 0 || s.CkptSlotSize > ds:
		return nil, corruptf("superblock: checkpoint area at %d slot %d", s.CkptOff, s.CkptSlotSize)
	case s.DataOff != s.CkptOff+2*uint64(s.Partitions)*s.CkptSlotSize:
		return nil, corruptf("superblock: data offset %d", s.DataOff)
	case s.DataOff+s.SegmentCount*s.SegmentSize > ds || s.DeviceSize > ds:
		return nil, fmt.Errorf("superblock: store was formatted for %d bytes, device has %d: wrong device?", s.DeviceSize, ds)
	}
	return s, nil
}

// ---- batch summary ----

const (
	summaryMagic   = 0x42534643 // "CFSB"
	summaryHdrSize = 40
	recordFixed    = 44 // bytes per record before its CRC array
	recPut         = 1
	recDelete      = 2
	// maxBatchRecords bounds the records of one batch, so a summary can
	// never ask the decoder for more than maxSummaryBlocks blocks.
	maxBatchRecords  = 1024
	maxSummaryBlocks = 64
)

// record is one entry of a batch summary.
type record struct {
	ID      ID
	Version uint64
	Stamp   uint64 // log position of the original write; ties on Version break by Stamp
	Length  uint32 // bytes of data (0 for deletes)
	Kind    uint8
	Block   uint32 // first data block, relative to the batch's first data block
	CRCs    []uint32
}

// summaryHeader is the fixed part of a summary.
type summaryHeader struct {
	SegSeq     uint64
	BatchIdx   uint32
	Records    uint32
	SumBlocks  uint32
	DataBlocks uint32
	Partition  uint32
}

func blocksFor(n int) int { return (n + BlockSize - 1) / BlockSize }

// summaryBytes is the encoded size of a summary holding records whose data
// blocks add up to dataBlocks.
func summaryBytes(records, dataBlocks int) int {
	return summaryHdrSize + records*recordFixed + dataBlocks*4
}

// encodeSummary writes h and recs into b, which must hold h.SumBlocks
// blocks. The checksum covers the whole summary except its own field and is
// seeded with the store's salt (derived from its UUID), so user data that
// happens to look like a summary can never pass for one during recovery.
func encodeSummary(b []byte, salt uint32, h *summaryHeader, recs []record) {
	n := int(h.SumBlocks) * BlockSize
	clear(b[:n])
	binary.LittleEndian.PutUint32(b[0:], summaryMagic)
	binary.LittleEndian.PutUint64(b[8:], h.SegSeq)
	binary.LittleEndian.PutUint32(b[16:], h.BatchIdx)
	binary.LittleEndian.PutUint32(b[20:], h.Records)
	binary.LittleEndian.PutUint32(b[24:], h.SumBlocks)
	binary.LittleEndian.PutUint32(b[28:], h.DataBlocks)
	binary.LittleEndian.PutUint32(b[32:], h.Partition)
	p := summaryHdrSize
	for i := range recs {
		r := &recs[i]
		binary.LittleEndian.PutUint64(b[p:], r.ID.Hi)
		binary.LittleEndian.PutUint64(b[p+8:], r.ID.Lo)
		binary.LittleEndian.PutUint64(b[p+16:], r.Version)
		binary.LittleEndian.PutUint64(b[p+24:], r.Stamp)
		binary.LittleEndian.PutUint32(b[p+32:], r.Length)
		binary.LittleEndian.PutUint32(b[p+36:], r.Block)
		b[p+40] = r.Kind
		p += recordFixed
		for _, c := range r.CRCs {
			binary.LittleEndian.PutUint32(b[p:], c)
			p += 4
		}
	}
	binary.LittleEndian.PutUint32(b[4:], crc32.Update(salt, crcTable, b[8:n]))
}

// peekSummary validates the first block of a summary and returns its
// header; the caller then reads SumBlocks blocks and calls decodeSummary.
func peekSummary(b []byte) (summaryHeader, error) {
	var h summaryHeader
	if len(b) < BlockSize {
		return h, corruptf("summary: short block")
	}
	if binary.LittleEndian.Uint32(b[0:]) != summaryMagic {
		return h, corruptf("summary: bad magic")
	}
	h.SegSeq = binary.LittleEndian.Uint64(b[8:])
	h.BatchIdx = binary.LittleEndian.Uint32(b[16:])
	h.Records = binary.LittleEndian.Uint32(b[20:])
	h.SumBlocks = binary.LittleEndian.Uint32(b[24:])
	h.DataBlocks = binary.LittleEndian.Uint32(b[28:])
	h.Partition = binary.LittleEndian.Uint32(b[32:])
	if h.Records == 0 || h.Records > maxBatchRecords {
		return h, corruptf("summary: %d records", h.Records)
	}
	if h.SumBlocks == 0 || h.SumBlocks > maxSummaryBlocks {
		return h, corruptf("summary: %d summary blocks", h.SumBlocks)
	}
	if h.DataBlocks > maxBatchBytes/BlockSize {
		return h, corruptf("summary: %d data blocks", h.DataBlocks)
	}
	if summaryBytes(int(h.Records), int(h.DataBlocks)) > int(h.SumBlocks)*BlockSize {
		return h, corruptf("summary: %d records and %d data blocks do not fit %d blocks", h.Records, h.DataBlocks, h.SumBlocks)
	}
	return h, nil
}

// decodeSummary checks the whole summary in b (h.SumBlocks blocks) and
// appends its records to recs. CRC slices alias b.
func decodeSummary(b []byte, salt uint32, h summaryHeader, recs []record) ([]record, error) {
	n := int(h.SumBlocks) * BlockSize
	if len(b) < n {
		return recs, corruptf("summary: %d bytes, need %d", len(b), n)
	}
	if got, want := binary.LittleEndian.Uint32(b[4:]), crc32.Update(salt, crcTable, b[8:n]); got != want {
		return recs, corruptf("summary: checksum %08x, computed %08x", got, want)
	}
	p := summaryHdrSize
	next := uint32(0) // data blocks must be laid out in order without overlap
	for i := uint32(0); i < h.Records; i++ {
		if p+recordFixed > n {
			return recs, corruptf("summary: record %d past the end", i)
		}
		r := record{
			ID:      ID{Hi: binary.LittleEndian.Uint64(b[p:]), Lo: binary.LittleEndian.Uint64(b[p+8:])},
			Version: binary.LittleEndian.Uint64(b[p+16:]),
			Stamp:   binary.LittleEndian.Uint64(b[p+24:]),
			Length:  binary.LittleEndian.Uint32(b[p+32:]),
			Block:   binary.LittleEndian.Uint32(b[p+36:]),
			Kind:    b[p+40],
		}
		p += recordFixed
		nb := uint32(blocksFor(int(r.Length)))
		switch {
		case r.Kind != recPut && r.Kind != recDelete:
			return recs, corruptf("summary: record %d kind %d", i, r.Kind)
		case r.Kind == recDelete && r.Length != 0:
			return recs, corruptf("summary: delete record %d with length %d", i, r.Length)
		case r.Length > MaxChunkSize:
			return recs, corruptf("summary: record %d length %d", i, r.Length)
		case r.Block != next || r.Block+nb > h.DataBlocks:
			return recs, corruptf("summary: record %d blocks [%d,+%d) out of order or past %d", i, r.Block, nb, h.DataBlocks)
		case p+int(nb)*4 > n:
			return recs, corruptf("summary: record %d checksums past the end", i)
		}
		next += nb
		r.CRCs = crcSlice(b[p : p+int(nb)*4])
		p += int(nb) * 4
		recs = append(recs, r)
	}
	if next != h.DataBlocks {
		return recs, corruptf("summary: records cover %d data blocks, header says %d", next, h.DataBlocks)
	}
	return recs, nil
}

// crcSlice decodes little-endian uint32s.
func crcSlice(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

// verifyBlocks checks data (whole blocks, the last possibly partial) against
// crcs, one per 4 KiB block. The checksum covers the record's bytes only, so
// a partial last block is checked over its valid length.
func verifyBlocks(data []byte, length int, crcs []uint32) error {
	for i, want := range crcs {
		lo := i * BlockSize
		hi := min(lo+BlockSize, length)
		if got := crc32c(data[lo:hi]); got != want {
			return corruptf("data block %d: checksum %08x, recorded %08x", i, got, want)
		}
	}
	return nil
}
