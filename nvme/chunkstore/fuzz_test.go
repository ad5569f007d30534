package chunkstore

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FuzzOpenCorrupted opens store images with corrupted bytes. Opening may
// fail, reads may fail, but nothing may panic or hang, and any bytes a Get
// returns must be exactly a version that was written: a block whose CRC did
// not verify is never returned.
//
// The input is a list of mutations, 5 bytes each: a 4-byte position (taken
// modulo the image size, and biased towards the metadata at the front of the
// image and of each segment) and the byte to XOR in.

const fuzzImage = 5 << 20

var (
	fuzzOnce    sync.Once
	fuzzBase    []byte
	fuzzWritten map[ID]map[uint64]int // id -> version -> length
	fuzzErr     error
)

func fuzzOpts() Options {
	return Options{Partitions: 1, SegmentSize: 1 << 20, QueueDepth: 128, Logf: func(string, ...any) {}}
}

// fuzzSetup builds the pristine image once: puts, overwrites and deletes,
// part of it checkpointed and part only in the log.
func fuzzSetup(dir string) {
	path := filepath.Join(dir, "base")
	opts := fuzzOpts()
	opts.CreateSize = fuzzImage
	s, err := Open(path, opts)
	if err != nil {
		fuzzErr = err
		return
	}
	fuzzWritten = map[ID]map[uint64]int{}
	put := func(i int, v uint64, n int) {
		id := ID{Lo: uint64(i)}
		if err := s.Put(id, v, pattern(id, v, n)); err != nil {
			fuzzErr = err
			return
		}
		if fuzzWritten[id] == nil {
			fuzzWritten[id] = map[uint64]int{}
		}
		fuzzWritten[id][v] = n
	}
	for i := 0; i < 40; i++ {
		put(i, 1, 1+i*977)
	}
	s.Checkpoint()
	for i := 0; i < 40; i += 3 {
		put(i, 2, 5000+i)
	}
	s.Delete(ID{Lo: 7}, 2)
	s.crashForTest()
	fuzzBase, fuzzErr = os.ReadFile(path)
}

func FuzzOpenCorrupted(f *testing.F) {
	f.Add([]byte{})
	f.Add(binary.LittleEndian.AppendUint32(nil, 5)[:4:4])                  // superblock
	f.Add(append(binary.LittleEndian.AppendUint32(nil, 4096+40), 0x01))    // checkpoint header
	f.Add(append(binary.LittleEndian.AppendUint32(nil, 4096*3+100), 0x80)) // checkpoint body
	f.Add(append(binary.LittleEndian.AppendUint32(nil, 1<<31|20), 0xff))   // first summary
	f.Add(append(binary.LittleEndian.AppendUint32(nil, 1<<31|4096*2+7), 0x10))
	f.Add(append(binary.LittleEndian.AppendUint32(nil, 1<<31|1<<30|64), 0x04))
	f.Fuzz(func(t *testing.T, muts []byte) {
		dir := t.TempDir()
		fuzzOnce.Do(func() { fuzzSetup(os.TempDir()) })
		if fuzzErr != nil {
			t.Fatalf("building the base image: %v", fuzzErr)
		}
		img := bytes.Clone(fuzzBase)
		sb, err := decodeSuperblock(img, int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+5 <= len(muts) && i < 5*64; i += 5 {
			pos := binary.LittleEndian.Uint32(muts[i:])
			var at uint64
			switch {
			case pos&(1<<31) == 0: // anywhere before the segments
				at = uint64(pos) % sb.DataOff
			case pos&(1<<30) == 0: // the front of a segment (summaries)
				seg := uint64(pos>>20) % sb.SegmentCount
				at = sb.DataOff + seg*sb.SegmentSize + uint64(pos&0xffff)
			default:
				at = uint64(pos&0x3fffffff) % uint64(len(img))
			}
			img[at] ^= muts[i+4]
		}
		path := filepath.Join(dir, "img")
		if err := os.WriteFile(path, img, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s, err := Open(path, fuzzOpts())
			if err != nil {
				return
			}
			defer s.Close()
			buf := make([]byte, 64<<10)
			for id := range fuzzWritten {
				n, v, err := s.Get(id, 0, buf)
				if err != nil {
					continue
				}
				ln, ok := fuzzWritten[id][v]
				if !ok || n != ln || !bytes.Equal(buf[:n], pattern(id, v, ln)) {
					t.Errorf("chunk %v: Get returned %d bytes at version %d that were never written so", id, n, v)
				}
			}
			if page, err := s.List(ID{}, 1000); err == nil {
				for _, in := range page {
					if _, ok := fuzzWritten[in.ID]; !ok {
						t.Errorf("List returned unknown chunk %v", in.ID)
					}
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("open/read of a corrupted image hung for 20s")
		}
	})
}
