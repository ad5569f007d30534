package uring

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkNopBatch32 measures one round of 32 NOPs: prepare, one
// submit-and-wait, reap. ns/op is per batch; ns/nop per NOP.
func BenchmarkNopBatch32(b *testing.B) {
	r := newRing(b, 64, WithFlags(engineFlags), WithCQSize(256), WithRegisteredRing())
	cqes := make([]*CQE, 32)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range 32 {
			s := r.GetSQE()
			s.PrepNop()
			s.UserData = uint64(j)
		}
		if _, err := r.SubmitAndWait(32); err != nil {
			b.Fatal(err)
		}
		r.CQAdvance(r.PeekBatchCQE(cqes))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/32, "ns/nop")
}

// BenchmarkReadFixed4KODirect measures one 4 KiB READ_FIXED from a
// registered O_DIRECT file into a registered buffer, queue depth 1.
func BenchmarkReadFixed4KODirect(b *testing.B) {
	r := newRing(b, 8, WithFlags(engineFlags), WithCQSize(32), WithRegisteredRing())
	const size = 4 << 20
	fd := tempFile(b, unix.O_DIRECT, 0)
	buf := mmapBuf(b, size)
	fill(buf, 1)
	if _, err := unix.Pwrite(fd, buf, 0); err != nil {
		b.Fatal(err)
	}
	iov := []unix.Iovec{{Base: &buf[0]}}
	iov[0].SetLen(4096)
	if err := r.RegisterBuffers(iov); err != nil {
		b.Fatal(err)
	}
	if err := r.RegisterFiles([]int32{int32(fd)}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := r.GetSQE()
		s.PrepReadFixed(0, buf[:4096], int64(i%(size/4096))*4096, 0)
		s.Flags |= SQEFixedFile
		if _, err := r.SubmitAndWait(1); err != nil {
			b.Fatal(err)
		}
		if c := r.CQEAt(0); c.Res != 4096 {
			b.Fatalf("res %d", c.Res)
		}
		r.CQAdvance(1)
	}
}
