package chunkstore

import (
	"bytes"
	"testing"
)

// FuzzDecodeSummary feeds arbitrary bytes to the summary decoder: it must
// never panic, never allocate beyond the bounded record count, and anything
// it accepts must re-encode to the same bytes.
func FuzzDecodeSummary(f *testing.F) {
	const salt = 0x1234abcd
	valid := make([]byte, 2*BlockSize)
	h := summaryHeader{SegSeq: 7, BatchIdx: 3, Records: 2, SumBlocks: 1, DataBlocks: 3, Partition: 1}
	recs := []record{
		{ID: ID{1, 2}, Version: 5, Stamp: 9, Length: 5000, Kind: recPut, Block: 0, CRCs: []uint32{1, 2}},
		{ID: ID{3, 4}, Version: 6, Stamp: 10, Length: 10, Kind: recPut, Block: 2, CRCs: []uint32{3}},
	}
	encodeSummary(valid, salt, &h, recs)
	f.Add(valid[:BlockSize])
	f.Add(make([]byte, BlockSize))
	f.Add(valid[:100])
	torn := bytes.Clone(valid[:BlockSize])
	torn[200] ^= 1
	f.Add(torn)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < BlockSize {
			b = append(b, make([]byte, BlockSize-len(b))...)
		}
		h, err := peekSummary(b)
		if err != nil {
			return
		}
		if int(h.SumBlocks)*BlockSize > len(b) {
			return
		}
		got, err := decodeSummary(b, salt, h, nil)
		if err != nil {
			return
		}
		if len(got) != int(h.Records) || len(got) > maxBatchRecords {
			t.Fatalf("decoded %d records, header says %d", len(got), h.Records)
		}
		again := make([]byte, int(h.SumBlocks)*BlockSize)
		encodeSummary(again, salt, &h, got)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("accepted summary does not re-encode to the same bytes")
		}
	})
}

// FuzzSuperblock: the superblock decoder never panics and accepts only
// layouts that fit the device.
func FuzzSuperblock(f *testing.F) {
	sb, err := planLayout(64<<20, 2, 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	b := make([]byte, BlockSize)
	sb.encode(b)
	f.Add(b[:superSize], int64(64<<20))
	f.Add(b[:superSize], int64(1<<20))
	f.Fuzz(func(t *testing.T, raw []byte, devSize int64) {
		if devSize <= 0 {
			return
		}
		s, err := decodeSuperblock(raw, devSize)
		if err != nil {
			return
		}
		end := s.DataOff + s.SegmentCount*s.SegmentSize
		if end > uint64(devSize) || s.Partitions == 0 || s.SegmentSize%BlockSize != 0 {
			t.Fatalf("accepted a layout that does not fit: %+v on %d bytes", s, devSize)
		}
	})
}
