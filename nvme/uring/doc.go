// Package uring is ClaudeFS's io_uring binding: pure Go on
// golang.org/x/sys/unix, no cgo, shaped like liburing (New/Setup, GetSQE,
// Prep*, Submit*, PeekBatchCQE/ForEachCQE/CQAdvance, Register*).
//
// # Ownership
//
// A Ring is owned by one goroutine that called runtime.LockOSThread and never
// unlocks while the Ring lives. That goroutine creates the ring (New) and
// makes every call on it, Close included. Reasons: rings are created with
// SetupSingleIssuer (io_uring_enter from any other thread fails with EEXIST)
// and SetupDeferTaskrun (completions are posted only when the owner enters
// the kernel); a registered ring fd (WithRegisteredRing) exists only for the
// registering thread; and io_uring work belongs to the submitting task, so
// the ring must be drained and closed before the locked goroutine returns.
// Other goroutines talk to the owner through channels or queues plus a
// wakeup (an eventfd with a READ armed in the ring, for example).
//
// # Invariants
//
//   - SQ tail and CQ head are published with atomic stores (release) after
//     the SQEs are written / the CQEs are read; SQ head and CQ tail are read
//     with atomic loads (acquire). Go's atomics are sequentially consistent,
//     which also gives the full barrier SQPOLL needs between publishing the
//     tail and testing SQFlagNeedWakeup.
//   - GetSQE zeroes each SQE, so no field of a previous request leaks into
//     the next (user_data, rw_flags, buf_index, addr3).
//   - SQE.Addr always holds the address of the data (&buf[0]), never of a
//     slice header. SQE.UserData is an integer (slot|generation), never a Go
//     pointer: the GC cannot see it.
//   - Argument structs the kernel reads asynchronously (timespecs for
//     PrepTimeout/PrepLinkTimeout, the getevents_arg and timespec of
//     SubmitAndWaitTimeout) live in Ring-owned memory, one timespec slot per
//     SQE, never in a helper's stack frame.
//   - Data buffers must stay valid until their CQE: use mmap'd anonymous
//     memory (page-aligned, good for O_DIRECT and RegisterBuffers, invisible
//     to the GC), or pin Go memory with runtime.Pinner until the CQE.
//   - Submit* retry EINTR; a wait cut short by a signal after the submit
//     part succeeded is resumed. Completions that overflowed the CQ wait in
//     the kernel's list (FeatNoDrop) and are flushed by any Submit* or by
//     GetEvents once SQFlagCQOverflow is set; none are lost.
//   - Hot paths (GetSQE, Prep*, Submit*, PeekBatchCQE, CQAdvance,
//     ForEachCQE) allocate nothing.
//
// # Usage
//
//	runtime.LockOSThread() // for the ring's lifetime
//	r, err := uring.New(256,
//		uring.WithFlags(uring.SetupSingleIssuer|uring.SetupDeferTaskrun|
//			uring.SetupTaskrunFlag|uring.SetupSubmitAll|uring.SetupNoSQArray),
//		uring.WithCQSize(1024), uring.WithRegisteredRing())
//	if err != nil { ... } // Available() explains ENOSYS/EPERM
//	defer r.Close()
//	sqe := r.GetSQE() // nil: SQ full, submit first
//	sqe.PrepReadFixed(0, buf[:4096], off, 0)
//	sqe.Flags |= uring.SQEFixedFile
//	sqe.UserData = slot
//	if _, err := r.SubmitAndWait(1); err != nil { ... }
//	r.ForEachCQE(func(c *uring.CQE) { complete(c.UserData, c.Res) })
//
// See shared/design/IOURING.md (the project's design notes) for the ABI notes behind this package.
package uring
