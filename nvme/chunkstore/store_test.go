package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testOpts are small-store options: 1 MiB segments so tests reach segment
// switches, cleaning and checkpoints quickly.
func testOpts(size int64) Options {
	return Options{CreateSize: size, Partitions: 2, SegmentSize: 1 << 20, QueueDepth: 128, Logf: func(string, ...any) {}}
}

func openTest(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return s
}

// pattern is deterministic chunk content for (id, version, n).
func pattern(id ID, version uint64, n int) []byte {
	r := rand.New(rand.NewPCG(id.Lo^id.Hi<<7, version))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func mustGet(t testing.TB, s *Store, id ID, want []byte, wantVer uint64) {
	t.Helper()
	buf := make([]byte, len(want)+100)
	n, v, err := s.Get(id, 0, buf)
	if err != nil {
		t.Fatalf("get %v: %v", id, err)
	}
	if v != wantVer || !bytes.Equal(buf[:n], want) {
		t.Fatalf("get %v: version %d len %d, want version %d len %d (equal=%v)", id, v, n, wantVer, len(want), bytes.Equal(buf[:n], want))
	}
}

func TestPutGetOverwriteDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	opts := testOpts(96 << 20)
	opts.SegmentSize = 8 << 20 // room for MaxChunkSize chunks
	s := openTest(t, path, opts)
	defer s.Close()
	sizes := []int{1, 100, 4095, 4096, 4097, 8192, 65536 + 3, 300000, MaxChunkSize}
	for i, n := range sizes {
		id := ID{Hi: 1, Lo: uint64(i)}
		if err := s.Put(id, 1, pattern(id, 1, n)); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
		mustGet(t, s, id, pattern(id, 1, n), 1)
		info, err := s.Stat(id)
		if err != nil || info.Length != n || info.Version != 1 {
			t.Fatalf("stat: %+v %v", info, err)
		}
	}
	id := ID{Hi: 1, Lo: 5}
	if err := s.Put(id, 3, pattern(id, 3, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(id, 2, pattern(id, 2, 10)); !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("stale put: got %v, want ErrStaleVersion", err)
	}
	mustGet(t, s, id, pattern(id, 3, 5000), 3)
	if err := s.Delete(id, 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(id, 0, make([]byte, 10)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := s.Delete(id, 4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of deleted: %v", err)
	}
	if err := s.Put(ID{}, 1, nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty put: %v", err)
	}
	if err := s.Put(ID{}, 1, make([]byte, MaxChunkSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large put: %v", err)
	}
}

func TestRangeGets(t *testing.T) {
	opts := testOpts(64 << 20)
	opts.SegmentSize = 4 << 20
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), opts)
	defer s.Close()
	id := ID{Lo: 42}
	data := pattern(id, 7, 1<<20+12345)
	if err := s.Put(id, 7, data); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		off := r.IntN(len(data) + 10)
		n := r.IntN(200000) + 1
		buf := make([]byte, n)
		got, v, err := s.Get(id, int64(off), buf)
		if err != nil || v != 7 {
			t.Fatalf("get [%d,+%d): %v v%d", off, n, err, v)
		}
		want := data[min(off, len(data)):min(off+n, len(data))]
		if got != len(want) || !bytes.Equal(buf[:got], want) {
			t.Fatalf("get [%d,+%d): %d bytes, want %d", off, n, got, len(want))
		}
	}
}

func TestListPaged(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(32<<20))
	defer s.Close()
	want := map[ID]bool{}
	for i := 0; i < 1000; i++ {
		id := ID{Hi: uint64(i % 7), Lo: uint64(i * 31)}
		want[id] = true
		if err := s.Put(id, 1, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	from := ID{}
	var prev *ID
	for {
		page, err := s.List(from, 97)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, in := range page {
			if prev != nil && !prev.less(in.ID) {
				t.Fatalf("list out of order: %v after %v", in.ID, *prev)
			}
			id := in.ID
			prev = &id
			if !want[in.ID] {
				t.Fatalf("list returned unknown %v", in.ID)
			}
			seen++
		}
		from, _ = page[len(page)-1].ID.Next()
	}
	if seen != len(want) {
		t.Fatalf("list saw %d chunks, want %d", seen, len(want))
	}
}

// TestReopen checks both recovery paths: from a checkpoint (clean close)
// and by replaying the log (no checkpoint written).
func TestReopen(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dev")
			opts := testOpts(48 << 20)
			s := openTest(t, path, opts)
			latest := map[ID]uint64{}
			sizes := map[ID]int{}
			r := rand.New(rand.NewPCG(3, 4))
			for i := 0; i < 3000; i++ {
				id := ID{Lo: uint64(r.IntN(300))}
				if r.IntN(10) == 0 && latest[id] > 0 {
					if err := s.Delete(id, latest[id]); err != nil {
						t.Fatal(err)
					}
					latest[id] = 0
					continue
				}
				v := uint64(i + 1)
				n := 1 + r.IntN(20000)
				if err := s.Put(id, v, pattern(id, v, n)); err != nil {
					t.Fatal(err)
				}
				latest[id], sizes[id] = v, n
			}
			if clean {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				s.crashForTest()
			}
			s = openTest(t, path, opts)
			defer s.Close()
			for i, rv := range s.recovery {
				if clean && (rv.replayed != 0 || rv.dropped != 0) {
					t.Errorf("partition %d after a clean close: %d appends replayed, %d dropped; the final checkpoint should cover everything", i, rv.replayed, rv.dropped)
				}
				if !clean && rv.replayed == 0 {
					t.Errorf("partition %d after a crash replayed nothing", i)
				}
			}
			for id, v := range latest {
				if v == 0 {
					if _, _, err := s.Get(id, 0, make([]byte, 1)); !errors.Is(err, ErrNotFound) {
						t.Fatalf("deleted %v: %v", id, err)
					}
					continue
				}
				mustGet(t, s, id, pattern(id, v, sizes[id]), v)
			}
			rep, err := s.Scrub()
			if err != nil || len(rep.Corrupt) != 0 || rep.Errors != 0 {
				t.Fatalf("scrub: %v %v", rep, err)
			}
		})
	}
}

func TestCorruptionDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	opts := testOpts(32 << 20)
	s := openTest(t, path, opts)
	small, big := ID{Lo: 1}, ID{Lo: 2}
	if err := s.Put(small, 1, pattern(small, 1, 3000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(big, 1, pattern(big, 1, 50000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Find the records by scanning the device for their bytes.
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id  ID
		n   int
		off int
	}{{small, 3000, 100}, {big, 50000, 40000}} {
		i := bytes.Index(img, pattern(c.id, 1, c.n)[:64])
		if i < 0 {
			t.Fatalf("record of %v not found on disk", c.id)
		}
		f, _ := os.OpenFile(path, os.O_RDWR, 0)
		f.WriteAt([]byte{img[i+c.off] ^ 0x40}, int64(i+c.off))
		f.Close()
	}
	s = openTest(t, path, opts)
	defer s.Close()
	for _, id := range []ID{small, big} {
		_, _, err := s.Get(id, 0, make([]byte, 60000))
		if !IsCorrupt(err) {
			t.Fatalf("get of corrupted %v: %v, want a corruption error", id, err)
		}
	}
	// A range that avoids the damaged block still reads.
	buf := make([]byte, 4096)
	if _, _, err := s.Get(big, 0, buf); err != nil || !bytes.Equal(buf, pattern(big, 1, 50000)[:4096]) {
		t.Fatalf("undamaged range: %v", err)
	}
	rep, err := s.Scrub()
	if err != nil || len(rep.Corrupt) != 2 {
		t.Fatalf("scrub: %v %v, want 2 corrupt", rep, err)
	}
}

func TestFullDeviceAndCleaning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	opts := testOpts(24 << 20)
	opts.Partitions = 1
	s := openTest(t, path, opts)
	// Fill with distinct chunks until the store says it is full.
	var stored []ID
	for i := 0; ; i++ {
		id := ID{Lo: uint64(i)}
		err := s.Put(id, 1, pattern(id, 1, 60000))
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, id)
		if i > 10000 {
			t.Fatal("store never filled up")
		}
	}
	for _, id := range stored {
		mustGet(t, s, id, pattern(id, 1, 60000), 1)
	}
	// Delete most, then overwrite the rest many times: cleaning must make
	// room without losing anything.
	keep := stored[:len(stored)/4]
	for _, id := range stored[len(stored)/4:] {
		if err := s.Delete(id, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Checkpoint(); err != nil { // lets the tombstones go
		t.Fatal(err)
	}
	ver := map[ID]uint64{}
	for round := 2; round < 12; round++ {
		for _, id := range keep {
			if err := s.Put(id, uint64(round), pattern(id, uint64(round), 60000)); err != nil {
				t.Fatalf("round %d put: %v", round, err)
			}
			ver[id] = uint64(round)
		}
	}
	st, _ := s.Stats()
	if st.SegmentsCleaned == 0 {
		t.Fatalf("no segment was cleaned: %+v", st)
	}
	for _, id := range keep {
		mustGet(t, s, id, pattern(id, ver[id], 60000), ver[id])
	}
	// Reopen after a crash (replay), then after a clean close made while
	// the cleaner may still be busy (nothing to replay).
	for _, clean := range []bool{false, true} {
		if clean {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			s.crashForTest()
		}
		s = openTest(t, path, opts)
		if clean && (s.recovery[0].replayed != 0 || s.recovery[0].dropped != 0) {
			t.Fatalf("after a clean close: %+v, want nothing replayed", s.recovery[0])
		}
		for _, id := range keep {
			mustGet(t, s, id, pattern(id, ver[id], 60000), ver[id])
		}
		for _, id := range stored[len(stored)/4:] {
			if _, _, err := s.Get(id, 0, make([]byte, 1)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("deleted %v came back: %v", id, err)
			}
		}
		// Keep the cleaner busy into the close.
		for _, id := range keep {
			ver[id]++
			if err := s.Put(id, ver[id], pattern(id, ver[id], 60000)); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.Close()
}

func TestConcurrentMixed(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(64<<20))
	defer s.Close()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 1; i <= 300; i++ {
				id := ID{Hi: uint64(w), Lo: uint64(r.IntN(20))}
				n := 1 + r.IntN(30000)
				if err := s.Put(id, uint64(i), pattern(id, uint64(i), n)); err != nil {
					t.Error(err)
					return
				}
				buf := make([]byte, n)
				got, v, err := s.Get(id, 0, buf)
				if err != nil || v != uint64(i) || got != n || !bytes.Equal(buf, pattern(id, uint64(i), n)) {
					t.Errorf("read-after-write %v: v%d n%d %v", id, v, got, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
}

// TestUseAfterClose: calls racing with and following Close get ErrClosed
// (or succeed), never hang or crash.
func TestUseAfterClose(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(32<<20))
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := 1; i < 400; i++ {
				id := ID{Hi: uint64(w), Lo: uint64(i % 5)}
				if err := s.Put(id, uint64(i), buf); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("put: %v", err)
					return
				}
				if _, _, err := s.Get(id, 0, buf); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotFound) {
					t.Errorf("get: %v", err)
					return
				}
			}
		}(w)
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := s.Put(ID{}, 1, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v, want ErrClosed", err)
	}
	if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("stats after close: %v, want ErrClosed", err)
	}
}

// TestGetRef: in-place reads return the right bytes over every range, and
// release their buffers (far more reads than the slab holds would hang
// otherwise).
func TestGetRef(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(32<<20))
	defer s.Close()
	id := ID{Lo: 9}
	data := pattern(id, 3, 300000)
	if err := s.Put(id, 3, data); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	var bufs [][]byte
	for i := 0; i < 3*readBufCount; i++ {
		off, n := r.IntN(len(data)+10), r.IntN(200000)
		ref, err := s.GetRef(id, int64(off), n)
		if err != nil {
			t.Fatalf("GetRef(%d, %d): %v", off, n, err)
		}
		want := data[min(off, len(data)):min(off+n, len(data))]
		bufs = ref.Buffers(bufs[:0])
		got := bytes.Join(bufs, nil)
		if ref.Len() != len(want) || !bytes.Equal(got, want) || ref.Version() != 3 {
			t.Fatalf("GetRef(%d, %d): %d bytes v%d, want %d", off, n, ref.Len(), ref.Version(), len(want))
		}
		ref.Release()
	}
	if _, err := s.GetRef(ID{Lo: 12345}, 0, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRef of a missing chunk: %v", err)
	}
}

// TestLargeChunksConcurrently: chunks as large as a segment allows, written
// by several goroutines at once, never spill out of their segment (a batch
// that did overwrote its neighbours' data).
func TestLargeChunksConcurrently(t *testing.T) {
	for _, seg := range []int64{1 << 20, 8 << 20} {
		t.Run(fmt.Sprintf("segment=%dMiB", seg>>20), func(t *testing.T) {
			opts := testOpts(192 << 20)
			opts.SegmentSize = seg
			s := openTest(t, filepath.Join(t.TempDir(), "dev"), opts)
			defer s.Close()
			if seg == 1<<20 {
				if err := s.Put(ID{}, 1, make([]byte, s.MaxChunk()+1)); !errors.Is(err, ErrTooLarge) {
					t.Fatalf("a chunk larger than a segment holds: %v, want ErrTooLarge", err)
				}
			}
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 30; i++ {
						id := ID{Hi: uint64(w + 1), Lo: uint64(i)}
						n := 1 + (i*7919)%(64<<10)
						if i%10 == 0 {
							n = s.MaxChunk() - i
						}
						if err := s.Put(id, 1, pattern(id, 1, n)); err != nil {
							t.Error(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			for w := 0; w < 4; w++ {
				for i := 0; i < 30; i++ {
					id := ID{Hi: uint64(w + 1), Lo: uint64(i)}
					n := 1 + (i*7919)%(64<<10)
					if i%10 == 0 {
						n = s.MaxChunk() - i
					}
					mustGet(t, s, id, pattern(id, 1, n), 1)
				}
			}
		})
	}
}

// TestAsync: PutAsync, GetRefAsync and GetAsync answer through callbacks on the
// partition goroutine; Release from inside a callback works.
func TestAsync(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(32<<20))
	defer s.Close()
	const n = 500
	var wg sync.WaitGroup
	datas := make([][]byte, n)
	for i := 0; i < n; i++ {
		id := ID{Lo: uint64(i)}
		datas[i] = pattern(id, 2, 1+i*37)
		wg.Add(1)
		retryBusy(t, func() error {
			return s.PutAsync(id, 2, datas[i], func(err error) {
				if err != nil {
					t.Errorf("put %v: %v", id, err)
				}
				wg.Done()
			})
		})
	}
	wg.Wait()
	var bad atomic.Int32
	for i := 0; i < n; i++ {
		id := ID{Lo: uint64(i)}
		want := datas[i]
		wg.Add(1)
		retryBusy(t, func() error {
			return s.GetRefAsync(id, 0, len(want)+10, func(ref ReadRef, err error) {
				defer wg.Done()
				if err != nil {
					t.Errorf("get %v: %v", id, err)
					bad.Add(1)
					return
				}
				if got := bytes.Join(ref.Buffers(nil), nil); !bytes.Equal(got, want) || ref.Version() != 2 {
					bad.Add(1)
				}
				ref.Release()
			})
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d async reads returned wrong bytes", bad.Load())
	}
	// GetAsync copies into the caller's buffer, from any offset; a missing
	// chunk is an error through the callback.
	for i := 0; i < n; i++ {
		id := ID{Lo: uint64(i)}
		off := i % len(datas[i])
		want := datas[i][off:]
		buf := make([]byte, len(want)+10)
		wg.Add(1)
		retryBusy(t, func() error {
			return s.GetAsync(id, int64(off), buf, func(got int, version uint64, err error) {
				defer wg.Done()
				if err != nil || got != len(want) || !bytes.Equal(buf[:got], want) || version != 2 {
					t.Errorf("GetAsync %v at %d: %d bytes, version %d, %v", id, off, got, version, err)
				}
			})
		})
	}
	wg.Add(1)
	retryBusy(t, func() error {
		return s.GetAsync(ID{Lo: n + 1}, 0, make([]byte, 10), func(_ int, _ uint64, err error) {
			defer wg.Done()
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("GetAsync of a missing chunk: %v, want ErrNotFound", err)
			}
		})
	})
	wg.Wait()
	// The slab must be whole again: a full-size read still goes through.
	ref, err := s.GetRef(ID{Lo: n - 1}, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ref.Release()
}

// retryBusy calls start until it is not refused with ErrBusy.
func retryBusy(t *testing.T, start func() error) {
	t.Helper()
	for {
		err := start()
		if err == nil {
			return
		}
		if !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSubmitBatch: a burst of reads queued while the partition is busy
// reaches the engine in submits of at most Options.SubmitBatch operations,
// and every read still returns its chunk's bytes.
func TestSubmitBatch(t *testing.T) {
	for _, batch := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(batch), func(t *testing.T) {
			opts := testOpts(32 << 20)
			opts.Partitions, opts.SubmitBatch = 1, batch
			s := openTest(t, filepath.Join(t.TempDir(), "dev"), opts)
			defer s.Close()
			const n = 64
			for i := 0; i < n; i++ {
				id := ID{Lo: uint64(i)}
				if err := s.Put(id, 1, pattern(id, 1, 4096)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := maxSentForTest(s, ID{Lo: 1}); err != nil { // the puts are done
				t.Fatal(err)
			}
			resetMaxSentForTest(s)
			// Queue the burst behind a request that keeps the partition
			// busy until all of it is in the inbox, so one takeInbox sees
			// every read at once.
			hold, release := make(chan struct{}), make(chan struct{})
			if err := s.GetRefAsync(ID{Lo: 0}, 0, 4096, func(ref ReadRef, err error) {
				close(hold)
				<-release
				ref.Release()
			}); err != nil {
				t.Fatal(err)
			}
			<-hold
			var wg sync.WaitGroup
			var bad atomic.Int32
			for i := 0; i < n; i++ {
				id := ID{Lo: uint64(i)}
				wg.Add(1)
				if err := s.GetRefAsync(id, 0, 4096, func(ref ReadRef, err error) {
					defer wg.Done()
					if err != nil || !bytes.Equal(bytes.Join(ref.Buffers(nil), nil), pattern(id, 1, 4096)) {
						bad.Add(1)
					}
					ref.Release()
				}); err != nil {
					t.Fatal(err)
				}
			}
			close(release)
			wg.Wait()
			if bad.Load() != 0 {
				t.Fatalf("%d reads returned errors or wrong bytes", bad.Load())
			}
			got, err := maxSentForTest(s, ID{Lo: 1})
			if err != nil {
				t.Fatal(err)
			}
			if got < 1 || got > batch {
				t.Fatalf("largest submit started %d operations, want 1..%d", got, batch)
			}
		})
	}
}
