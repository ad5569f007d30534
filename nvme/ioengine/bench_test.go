package ioengine

import (
	"testing"

	"golang.org/x/sys/unix"
)

// benchRead measures 4 KiB O_DIRECT reads into a registered buffer with qd
// reads in flight; ns/op is per read.
func benchRead(b *testing.B, qd int) {
	for _, kind := range kinds {
		b.Run(string(kind), func(b *testing.B) {
			withEngine(b, kind, qd, func(e Engine) {
				const fileSize = 8 << 20
				fd := openFile(b, b.TempDir(), "data", unix.O_RDWR|unix.O_DIRECT)
				buf := mmapBuf(b, qd*4096)
				src := mmapBuf(b, fileSize)
				pattern(src, 1)
				if _, err := unix.Pwrite(fd, src, 0); err != nil {
					b.Fatal(err)
				}
				if err := e.RegisterFiles([]int{fd}); err != nil {
					b.Fatal(err)
				}
				if err := e.RegisterBuffers([][]byte{buf}); err != nil {
					b.Fatal(err)
				}
				op := &Op{Opcode: OpRead, BufIndex: 0}
				out := make([]Completion, qd)
				prep := func(slot, i int) {
					op.Buf = buf[slot*4096 : (slot+1)*4096]
					op.Off = int64(i*4096) % fileSize
					op.UserData = uint64(slot)
					if err := e.Prepare(op); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(4096)
				b.ReportAllocs()
				b.ResetTimer()
				issued, done := 0, 0
				for ; issued < min(qd, b.N); issued++ {
					prep(issued, issued)
				}
				for done < b.N {
					if _, err := e.Submit(1, 0); err != nil {
						b.Fatal(err)
					}
					n := e.Reap(out)
					for _, c := range out[:n] {
						if c.Res != 4096 {
							b.Fatalf("res %d", c.Res)
						}
						done++
						if issued < b.N {
							prep(int(c.UserData), issued)
							issued++
						}
					}
				}
			})
		})
	}
}

func BenchmarkRead4KODirectQD1(b *testing.B)  { benchRead(b, 1) }
func BenchmarkRead4KODirectQD16(b *testing.B) { benchRead(b, 16) }
