// Package ioengine is the one asynchronous block-I/O interface the storage
// engine is written against, with two implementations: io_uring (through the
// in-house binding in nvme/uring) and a pread/pwrite worker pool used where
// io_uring is unavailable.
//
// Threading contract: an Engine is owned by one goroutine, the one that created
// it, which must have called runtime.LockOSThread first and never unlock it
// (io_uring rings are created with SINGLE_ISSUER|DEFER_TASKRUN: only the
// creating thread may submit). Every method except Wake must be called from
// that goroutine. Wake is safe from any goroutine (but not concurrently with
// Close).
//
// Wakeup protocol: the owner sleeps only inside Submit(wait > 0, ...).
// Another goroutine that hands the owner work publishes it first (queue,
// channel) and then calls Wake. Wake records a pending wakeup and, only when
// the owner is blocked in Submit (an atomic "sleeping" flag the engine sets
// just before blocking), also kicks it (an eventfd write for io_uring, a
// channel send for pread); otherwise it is one atomic swap. A pending wakeup
// makes the next Submit(wait > 0) return at once, so a Wake that races with
// the owner going to sleep is never lost. After every Submit the owner
// re-checks its queue. Callers may keep their own "sleeping" flag to skip
// even the swap: set it, re-check the queue, then Submit; wakers publish,
// then call Wake if the flag is set.
//
// Memory contract: the buffers handed to Prepare must stay valid until the
// operation's completion has been reaped. Use buffers allocated outside the Go
// heap (nvme.AllocAligned) and registered with RegisterBuffers.
package ioengine

import (
	"errors"
	"time"
)

// Opcode names one operation.
type Opcode uint8

const (
	// OpNop completes with Res 0 and does no I/O.
	OpNop Opcode = iota
	// OpRead reads len(Buf) bytes from File at Off into Buf.
	OpRead
	// OpWrite writes Buf to File at Off. With FlagDatasync the write is
	// durable (RWF_DSYNC) when it completes.
	OpWrite
	// OpFsync flushes File: fdatasync with FlagDatasync, fsync otherwise.
	OpFsync
)

// Flags modify one operation.
type Flags uint8

const (
	// FlagLink makes the next prepared operation start only after this one
	// succeeds; if this one fails, the rest of the chain completes with
	// -ECANCELED.
	FlagLink Flags = 1 << iota
	// FlagDatasync: for OpWrite, RWF_DSYNC; for OpFsync, data only.
	FlagDatasync
)

// Op describes one I/O. File is an index into the files registered with
// RegisterFiles. When BufIndex >= 0, Buf must lie inside registered buffer
// BufIndex and the fixed-buffer opcode is used.
type Op struct {
	Opcode   Opcode
	Flags    Flags
	File     int32
	BufIndex int32
	Buf      []byte
	Off      int64
	UserData uint64
}

// ReservedUserData is used internally (the io_uring engine's wakeup read);
// Prepare rejects it and Reap never reports it.
const ReservedUserData = ^uint64(0)

// Completion is the result of one Op: Res is the byte count (or 0), or a
// negated errno on failure, exactly like an io_uring CQE.
type Completion struct {
	UserData uint64
	Res      int32
}

// ErrQueueFull is returned by Prepare when the submission queue holds as many
// operations as it can; the caller submits (and reaps) and tries again.
var ErrQueueFull = errors.New("ioengine: submission queue full")

// Engine is an asynchronous I/O queue bound to one OS thread.
type Engine interface {
	// Name is "io_uring" or "pread".
	Name() string
	// Depth is the maximum number of outstanding operations: prepared, in
	// flight, or completed but not yet reaped. Prepare returns ErrQueueFull
	// beyond it.
	Depth() int
	// RegisterFiles registers fds; Op.File indexes this table. A second call
	// replaces the table; no operation may be outstanding then.
	RegisterFiles(fds []int) error
	// RegisterBuffers registers buffers for fixed I/O; Op.BufIndex indexes
	// this table. Buffers must be page-aligned memory outside the Go heap.
	// A second call replaces the table; no operation may be outstanding.
	// On error the table is empty and ops must use BufIndex -1.
	RegisterBuffers(bufs [][]byte) error
	// Prepare queues a copy of op (op itself may be reused at once). It
	// returns ErrQueueFull when Depth operations are outstanding, and an
	// error naming the problem for an invalid op (unknown opcode, File not
	// registered, Buf outside registered buffer BufIndex, UserData equal to
	// ReservedUserData). A FlagLink chain must be prepared completely before
	// Submit: Submit ends any open chain.
	Prepare(op *Op) error
	// Submit starts every prepared operation. When wait > 0 it then blocks
	// until at least wait completions are ready to reap, Wake is called, or
	// timeout passes (timeout <= 0: no limit). A timeout or a Wake is not an
	// error, and a Wake that arrived while the owner was not sleeping makes
	// the next waiting Submit return at once, so callers must re-check their
	// conditions after every return. It returns the number of operations
	// submitted.
	Submit(wait int, timeout time.Duration) (int, error)
	// Reap moves up to len(out) ready completions into out and returns how
	// many. It never blocks and never allocates.
	Reap(out []Completion) int
	// Wake makes a blocked Submit return soon. Safe from any goroutine.
	Wake() error
	// Close releases the engine. No operation may be in flight, and no Wake
	// may run concurrently.
	Close() error
}

// Kind selects an implementation.
type Kind string

const (
	// Auto picks io_uring when the kernel allows it, pread otherwise.
	Auto Kind = "auto"
	// Uring forces io_uring and fails when it is unavailable.
	Uring Kind = "io_uring"
	// Pread forces the pread/pwrite worker pool.
	Pread Kind = "pread"
)
