package chunkstore

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of the store's hot paths with 32 requests in flight (32
// goroutines making synchronous calls), 4 KiB chunks. Run with -benchmem:
// allocs/op must be 0 (requests are pooled, buffers are the callers').

const benchChunks = 4096

func benchStore(b *testing.B) *Store {
	b.Helper()
	opts := Options{CreateSize: 256 << 20, Partitions: 1, Logf: func(string, ...any) {}}
	s, err := Open(filepath.Join(b.TempDir(), "dev"), opts)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4096)
	for i := 0; i < benchChunks; i++ {
		if err := s.Put(ID{Lo: uint64(i)}, 1, data); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func runParallel32(b *testing.B, fn func(seq uint64, buf []byte) error) {
	b.SetParallelism(32) // × GOMAXPROCS goroutines; the inbox bounds what is in flight
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			if err := fn(seq.Add(1), buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
}

func BenchmarkGet4K(b *testing.B) {
	s := benchStore(b)
	defer s.Close()
	runParallel32(b, func(seq uint64, buf []byte) error {
		_, _, err := s.Get(ID{Lo: (seq * 2654435761) % benchChunks}, 0, buf)
		return err
	})
}

func BenchmarkPut4K(b *testing.B) {
	s := benchStore(b)
	defer s.Close()
	runParallel32(b, func(seq uint64, buf []byte) error {
		return s.Put(ID{Lo: (seq * 2654435761) % benchChunks}, 2+seq, buf)
	})
}

func BenchmarkGetRef4K(b *testing.B) {
	s := benchStore(b)
	defer s.Close()
	runParallel32(b, func(seq uint64, buf []byte) error {
		ref, err := s.GetRef(ID{Lo: (seq * 2654435761) % benchChunks}, 0, 4096)
		if err != nil {
			return err
		}
		var bufs [2][]byte
		for _, p := range ref.Buffers(bufs[:0]) {
			buf = buf[:copy(buf[:cap(buf)], p)] // stands in for the socket write
		}
		ref.Release()
		return nil
	})
}

// BenchmarkGetAsync4K keeps 32 GetAsync chains in flight: each completion
// callback issues its chain's next get, as the bench store: target does.
func BenchmarkGetAsync4K(b *testing.B) {
	s := benchStore(b)
	defer s.Close()
	const depth = 32
	var issued, failed atomic.Int64
	ended := make(chan struct{}, depth)
	cbs := make([]func(int, uint64, error), depth)
	next := func(i int, buf []byte) {
		seq := issued.Add(1)
		if seq > int64(b.N) {
			ended <- struct{}{}
			return
		}
		for s.GetAsync(ID{Lo: (uint64(seq) * 2654435761) % benchChunks}, 0, buf, cbs[i]) != nil {
			failed.Add(1)
			ended <- struct{}{}
			return
		}
	}
	bufs := make([][]byte, depth)
	for i := range cbs {
		bufs[i] = make([]byte, 4096)
		cbs[i] = func(n int, _ uint64, err error) {
			if err != nil || n != 4096 {
				failed.Add(1)
			}
			next(i, bufs[i])
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range cbs {
		next(i, bufs[i])
	}
	for range depth {
		<-ended
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
	if failed.Load() > 0 {
		b.Fatalf("%d gets failed", failed.Load())
	}
}
