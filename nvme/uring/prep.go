package uring

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxRW is the kernel's MAX_RW_COUNT (INT_MAX rounded down to a page): the
// largest byte count one read or write transfers. Longer buffers are clamped
// to it, so the operation completes short instead of wrapping the length.
const maxRW = 0x7ffff000

func rwLen(n int) uint32 { return uint32(min(n, maxRW)) }

// addrOf returns the address of a slice's first element (0 for a nil slice),
// never the address of the slice header.
func addrOf[T any](s []T) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(s)))) }

func (s *SQE) prepRW(op uint8, fd int, addr uint64, n uint32, off int64) {
	s.Opcode = op
	s.Fd = int32(fd)
	s.Addr = addr
	s.Len = n
	s.Off = uint64(off)
}

// Memory rule for every helper below: the kernel reads or writes the data
// behind buf/iovs asynchronously, until the CQE. That memory must not be
// collected or reused before then: use mmap'd memory (outside the Go heap)
// or keep a reference and pin it with runtime.Pinner.

// PrepNop prepares a no-op that completes with Res 0.
func (s *SQE) PrepNop() { s.Opcode = OpNop; s.Fd = -1 }

// PrepRead prepares a read of len(buf) bytes at byte offset off (-1: the
// file position). fd is a registered-file index when SQEFixedFile is set.
func (s *SQE) PrepRead(fd int, buf []byte, off int64) {
	s.prepRW(OpRead, fd, addrOf(buf), rwLen(len(buf)), off)
}

// PrepWrite prepares a write of buf at byte offset off (-1: file position).
func (s *SQE) PrepWrite(fd int, buf []byte, off int64) {
	s.prepRW(OpWrite, fd, addrOf(buf), rwLen(len(buf)), off)
}

// PrepReadFixed prepares a read into buf, which must lie entirely inside
// registered buffer bufIndex (else the CQE carries -EFAULT).
func (s *SQE) PrepReadFixed(fd int, buf []byte, off int64, bufIndex uint16) {
	s.prepRW(OpReadFixed, fd, addrOf(buf), rwLen(len(buf)), off)
	s.BufIndex = bufIndex
}

// PrepWriteFixed prepares a write from buf inside registered buffer bufIndex.
func (s *SQE) PrepWriteFixed(fd int, buf []byte, off int64, bufIndex uint16) {
	s.prepRW(OpWriteFixed, fd, addrOf(buf), rwLen(len(buf)), off)
	s.BufIndex = bufIndex
}

// PrepReadv prepares a vectored read. The iovec array itself must stay valid
// until the SQE is submitted (the kernel copies it then: FeatSubmitStable);
// the buffers it points to until the CQE.
func (s *SQE) PrepReadv(fd int, iovs []unix.Iovec, off int64) {
	s.prepRW(OpReadv, fd, addrOf(iovs), uint32(len(iovs)), off)
}

// PrepWritev prepares a vectored write; lifetimes as for PrepReadv.
func (s *SQE) PrepWritev(fd int, iovs []unix.Iovec, off int64) {
	s.prepRW(OpWritev, fd, addrOf(iovs), uint32(len(iovs)), off)
}

// PrepFsync prepares an fsync, or an fdatasync with flags = FsyncDatasync.
func (s *SQE) PrepFsync(fd int, flags uint32) {
	s.prepRW(OpFsync, fd, 0, 0, 0)
	s.OpFlags = flags
}

// sqeIndex returns s's slot in the SQE array; it panics if s is not an SQE
// of this ring, which would make the timespec slot meaningless.
func (r *Ring) sqeIndex(s *SQE) uint32 {
	base := unsafe.Pointer(unsafe.SliceData(r.sqes))
	off := uintptr(unsafe.Pointer(s)) - uintptr(base)
	i := off / unsafe.Sizeof(SQE{})
	if i >= uintptr(len(r.sqes)) || off%unsafe.Sizeof(SQE{}) != 0 {
		panic("uring: SQE does not belong to this Ring (use the Ring that handed it out)")
	}
	return uint32(i)
}

func (r *Ring) timespecFor(s *SQE, d time.Duration) uint64 {
	ts := &r.timeouts[r.sqeIndex(s)]
	d = max(d, 0)
	*ts = Timespec{Sec: int64(d / time.Second), Nsec: int64(d % time.Second)}
	return uint64(uintptr(unsafe.Pointer(ts)))
}

// PrepTimeout prepares a timeout that completes with -ETIME after d, or with
// Res 0 once count other completions have been posted (count 0: time only).
// The timespec lives in a Ring-owned slot tied to this SQE, valid until the
// kernel consumed the SQE.
func (r *Ring) PrepTimeout(s *SQE, d time.Duration, count uint32) {
	s.prepRW(OpTimeout, -1, r.timespecFor(s, d), 1, int64(count))
}

// PrepLinkTimeout prepares a timeout for the previous SQE, which must carry
// SQEIOLink: if it has not completed after d it is cancelled (-ECANCELED)
// and this SQE completes with -ETIME; otherwise this one gets -ECANCELED.
func (r *Ring) PrepLinkTimeout(s *SQE, d time.Duration) {
	s.prepRW(OpLinkTimeout, -1, r.timespecFor(s, d), 1, 0)
}
