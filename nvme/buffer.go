package nvme

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// AllocAligned returns size bytes (rounded up to a page) of zeroed,
// page-aligned anonymous memory outside the Go heap: the garbage collector
// neither moves nor frees it, so the kernel may read and write it while an
// asynchronous I/O is in flight, and it can be registered with a ring.
// Release it with FreeAligned.
func AllocAligned(size int) ([]byte, error) {
	if size <= 0 {
		return nil, fmt.Errorf("nvme: aligned buffer of %d bytes: size must be positive", size)
	}
	page := unix.Getpagesize()
	size = (size + page - 1) / page * page
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("nvme: mmap %d bytes for I/O buffers: %w", size, err)
	}
	return b, nil
}

// FreeAligned releases memory from AllocAligned. The buffer must not be in
// use by any I/O.
func FreeAligned(b []byte) error {
	if b == nil {
		return nil
	}
	return unix.Munmap(b[:cap(b)])
}

// Slab is a fixed number of equal, aligned buffers carved from one
// AllocAligned region, meant to be registered with a ring as one fixed
// buffer. A Slab has one owner (a core's goroutine); it is not safe for
// concurrent use.
type Slab struct {
	mem     []byte
	bufSize int
	free    []int32 // stack of free buffer indexes
}

// NewSlab allocates count buffers of bufSize bytes each; bufSize must be a
// multiple of the page size.
func NewSlab(count, bufSize int) (*Slab, error) {
	page := unix.Getpagesize()
	if count <= 0 || bufSize <= 0 || bufSize%page != 0 {
		return nil, fmt.Errorf("nvme: slab of %d × %d bytes: count must be positive and size a multiple of %d", count, bufSize, page)
	}
	mem, err := AllocAligned(count * bufSize)
	if err != nil {
		return nil, err
	}
	s := &Slab{mem: mem, bufSize: bufSize, free: make([]int32, count)}
	for i := range s.free {
		s.free[i] = int32(count - 1 - i)
	}
	return s, nil
}

// Memory is the whole region, for registration.
func (s *Slab) Memory() []byte { return s.mem }

// BufSize is the size of each buffer in bytes.
func (s *Slab) BufSize() int { return s.bufSize }

// Get takes a free buffer; ok is false when none is left.
func (s *Slab) Get() (idx int32, buf []byte, ok bool) {
	n := len(s.free)
	if n == 0 {
		return -1, nil, false
	}
	idx = s.free[n-1]
	s.free = s.free[:n-1]
	return idx, s.Buf(idx), true
}

// Buf is buffer idx.
func (s *Slab) Buf(idx int32) []byte {
	off := int(idx) * s.bufSize
	return s.mem[off : off+s.bufSize : off+s.bufSize]
}

// Put returns buffer idx to the free list.
func (s *Slab) Put(idx int32) { s.free = append(s.free, idx) }

// Free is the number of free buffers.
func (s *Slab) Free() int { return len(s.free) }

// Close releases the memory; no buffer may be in use.
func (s *Slab) Close() error {
	err := FreeAligned(s.mem)
	s.mem = nil
	return err
}
