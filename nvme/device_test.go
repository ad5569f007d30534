package nvme

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenLayoutAndAlignment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Open(path, OpenOptions{CreateSize: 3<<20 + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 4<<20 || d.BlockSize() != 4096 {
		t.Fatalf("size %d block %d, want 4 MiB and 4096", d.Size(), d.BlockSize())
	}
	buf, err := AllocAligned(8192)
	if err != nil {
		t.Fatal(err)
	}
	defer FreeAligned(buf)
	for _, c := range []struct {
		off int64
		n   int
		buf []byte
		why string
	}{
		{1, 4096, buf, "offset"},
		{0, 100, buf, "length"},
		{0, 4096, buf[1:4097], "address"},
		{4<<20 - 4096, 8192, buf, "past the end"},
	} {
		err := d.CheckIO(c.off, c.buf[:c.n])
		var me *MisalignedError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), "offset") {
			t.Fatalf("CheckIO(%d, %d): %v, want a MisalignedError about %s", c.off, c.n, err, c.why)
		}
		if err := d.ReadAt(c.buf[:c.n], c.off); err == nil {
			t.Fatalf("ReadAt(%d, %d) accepted a misaligned I/O", c.off, c.n)
		}
	}
	copy(buf, "hello")
	if err := d.WriteAt(buf[:4096], 8192); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	if err := d.ReadAt(buf[:4096], 8192); err != nil || string(buf[:5]) != "hello" {
		t.Fatalf("read back %q %v", buf[:5], err)
	}
}

func TestOpenIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Open(path, OpenOptions{CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(path, OpenOptions{LockWait: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "in use") || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("second open: %v after %v, want an in-use error after waiting", err, time.Since(start))
	}
	go func() { time.Sleep(30 * time.Millisecond); d.Close() }()
	d2, err := Open(path, OpenOptions{LockWait: 5 * time.Second})
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	d2.Close()
}

func TestOpenMissingAndSlab(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "nope"), OpenOptions{}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("open of a missing device: %v", err)
	}
	s, err := NewSlab(4, 8192)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := map[int32]bool{}
	for i := 0; i < 4; i++ {
		idx, b, ok := s.Get()
		if !ok || len(b) != 8192 || seen[idx] {
			t.Fatalf("slab get %d: idx %d len %d ok %v", i, idx, len(b), ok)
		}
		seen[idx] = true
	}
	if _, _, ok := s.Get(); ok {
		t.Fatal("slab handed out more buffers than it has")
	}
	s.Put(2)
	if idx, _, ok := s.Get(); !ok || idx != 2 {
		t.Fatalf("slab reuse: %d %v", idx, ok)
	}
}
