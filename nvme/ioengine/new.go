package ioengine

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/claudefs/claudefs/nvme/uring"
)

// EnvVar names the environment variable that overrides Auto: "io_uring",
// "pread" or "auto". CI sets CFS_IOENGINE=pread to exercise the fallback.
const EnvVar = "CFS_IOENGINE"

// MaxDepth bounds New's depth (the io_uring SQ gets depth+1 entries and a
// CQ four times that).
const MaxDepth = 4096

// available reports whether io_uring can be used; a variable so tests can
// simulate a machine without it.
var available = uring.Available

// fallbackLogged makes Auto log its fallback reason once per process.
var fallbackLogged atomic.Bool

// ParseKind parses "auto" (or ""), "io_uring" (also "uring", "iouring") or
// "pread", ignoring case and surrounding space.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return Auto, nil
	case "io_uring", "uring", "iouring":
		return Uring, nil
	case "pread":
		return Pread, nil
	}
	return "", fmt.Errorf("ioengine: unknown engine %q: use auto, io_uring or pread", s)
}

// New creates an engine with room for depth outstanding operations
// (1..MaxDepth), bound to the calling goroutine, which must already be locked
// to its OS thread (runtime.LockOSThread) for the engine's lifetime.
//
// Auto uses io_uring when available, else the pread engine, logging the
// reason once per process through logf (nil: no logging); the CFS_IOENGINE
// environment variable overrides Auto. Uring fails with the reason when
// io_uring is unavailable; Pread always uses the worker pool.
func New(kind Kind, depth int, logf func(format string, args ...any)) (Engine, error) {
	if depth < 1 || depth > MaxDepth {
		return nil, fmt.Errorf("ioengine: depth %d out of range: use 1..%d", depth, MaxDepth)
	}
	if kind == Auto {
		if env := os.Getenv(EnvVar); env != "" {
			k, err := ParseKind(env)
			if err != nil {
				return nil, fmt.Errorf("%w (from %s)", err, EnvVar)
			}
			kind = k
		}
	}
	switch kind {
	case Pread:
		return newPread(depth), nil
	case Uring:
		if err := available(); err != nil {
			return nil, fmt.Errorf("ioengine: io_uring requested but unavailable: %w; use the pread engine (%s=pread)", err, EnvVar)
		}
		return newUring(depth)
	case Auto:
		err := available()
		if err == nil {
			var e Engine
			if e, err = newUring(depth); err == nil {
				return e, nil
			}
		}
		if logf != nil && !fallbackLogged.Swap(true) {
			logf("io_uring unavailable (%v): using pread engine", err)
		}
		return newPread(depth), nil
	}
	return nil, fmt.Errorf("ioengine: unknown engine kind %q: use %q, %q or %q", kind, Auto, Uring, Pread)
}

// checkOp validates op against the registered tables. It allocates only when
// it reports an error.
func checkOp(op *Op, nfiles int, bufs [][]byte) error {
	if op.UserData == ReservedUserData {
		return fmt.Errorf("ioengine: UserData %#x is reserved: use another value", op.UserData)
	}
	switch op.Opcode {
	case OpNop:
		return nil
	case OpRead, OpWrite, OpFsync:
	default:
		return fmt.Errorf("ioengine: unknown opcode %d", op.Opcode)
	}
	if op.File < 0 || int(op.File) >= nfiles {
		return fmt.Errorf("ioengine: file index %d not registered (%d files): call RegisterFiles first", op.File, nfiles)
	}
	if op.Opcode == OpFsync || op.BufIndex < 0 {
		return nil
	}
	if int(op.BufIndex) >= len(bufs) {
		return fmt.Errorf("ioengine: buffer index %d not registered (%d buffers): register it or use BufIndex -1", op.BufIndex, len(bufs))
	}
	if !within(op.Buf, bufs[op.BufIndex]) {
		return fmt.Errorf("ioengine: Buf (%d bytes) lies outside registered buffer %d: use a sub-slice of it or BufIndex -1", len(op.Buf), op.BufIndex)
	}
	return nil
}

// within reports whether b lies inside region (by address).
func within(b, region []byte) bool {
	if len(b) == 0 {
		return true
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(region)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(region))
}

// linkBroken reports whether result res of op breaks a FlagLink chain, as
// io_uring decides it: an error, or a short read or write.
func linkBroken(op *Op, res int32) bool {
	if res < 0 {
		return true
	}
	return (op.Opcode == OpRead || op.Opcode == OpWrite) && int(res) != len(op.Buf)
}
