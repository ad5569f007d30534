package bench

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync/atomic"
)

// verify=crc32c: every unit of Spec.Align bytes a job writes carries a
// header and a body derived from the unit's offset alone:
//
//	bytes 0..3    magic "CFSV"
//	bytes 4..7    CRC32C (Castagnoli) of bytes 8..unit-1
//	bytes 8..15   the unit's offset in the target, little-endian
//	bytes 16..19  the unit's length
//	bytes 20..23  zero
//	bytes 24..    a pseudo-random body: the job's base pattern XOR a word
//	              drawn from the offset
//
// Because a unit's bytes depend only on where it is, two writes of the
// same unit (overlapping random writes, several jobs on one range, a torn
// mix of both) leave the same bytes, and any read of a written unit can be
// checked with no record of what was written when. A check finds a wrong
// CRC (the data changed), a wrong offset (data meant for elsewhere) or no
// header (never written with verify=crc32c). Like fio's default, the
// pattern does not change between runs, so a lost write that leaves the
// same pattern from an earlier run is not detected.
const (
	verifyMagic   = 0x56534643 // "CFSV" little-endian
	verifyHeader  = 24
	minVerifyUnit = 32
	// maxVerifyUnits bounds the record of written units a writing job
	// keeps for its read-back (one bit each: 16 MiB).
	maxVerifyUnits = 1 << 27
	// maxMismatchNotes is how many mismatches a job describes; all are
	// counted.
	maxMismatchNotes = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifier stamps and checks the units of one job.
type verifier struct {
	unit int
	base []byte // unit bytes of pseudo-random pattern
}

func newVerifier(unit int) *verifier {
	v := &verifier{unit: unit, base: make([]byte, unit)}
	state := uint64(0x5eedcf5)
	for i := 0; i < unit; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], splitmix64(&state))
		copy(v.base[i:], w[:])
	}
	return v
}

// offsetKey is the word a unit's body is XORed with.
func offsetKey(off int64) uint64 {
	st := uint64(off)
	return splitmix64(&st)
}

// stamp fills buf (a multiple of the unit long) with the units that belong
// at offset off.
func (v *verifier) stamp(buf []byte, off int64) {
	u := v.unit
	for p := 0; p+u <= len(buf); p += u {
		b := buf[p : p+u]
		uoff := off + int64(p)
		key := offsetKey(uoff)
		i := verifyHeader
		for ; i+8 <= u; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(v.base[i:])^key)
		}
		for ; i < u; i++ {
			b[i] = v.base[i] ^ byte(key>>(8*(i%8)))
		}
		binary.LittleEndian.PutUint32(b[0:], verifyMagic)
		binary.LittleEndian.PutUint64(b[8:], uint64(uoff))
		binary.LittleEndian.PutUint32(b[16:], uint32(u))
		binary.LittleEndian.PutUint32(b[20:], 0)
		binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	}
}

// checkUnit checks the unit b read from offset off; "" when it is good,
// else why not.
func (v *verifier) checkUnit(b []byte, off int64) string {
	switch {
	case binary.LittleEndian.Uint32(b[0:]) != verifyMagic:
		return "no verify header (never written with verify=crc32c?)"
	case binary.LittleEndian.Uint32(b[4:]) != crc32.Checksum(b[8:], castagnoli):
		return "CRC32C mismatch: the data changed after it was written"
	case int64(binary.LittleEndian.Uint64(b[8:])) != off:
		return fmt.Sprintf("the unit was written for offset %d", int64(binary.LittleEndian.Uint64(b[8:])))
	case binary.LittleEndian.Uint32(b[16:]) != uint32(len(b)):
		return fmt.Sprintf("the unit was written %d bytes long, not %d", binary.LittleEndian.Uint32(b[16:]), len(b))
	}
	return ""
}

// Mismatch is one unit that failed verification.
type Mismatch struct {
	Offset int64  // the unit's offset in the target
	Reason string // what was wrong
}

// VerifyStats is what a job's verification saw.
type VerifyStats struct {
	Units      int64      // units checked
	Mismatches int64      // units that failed
	First      []Mismatch // the first few failures (at most maxMismatchNotes per job)
}

func (v *VerifyStats) merge(o *VerifyStats) {
	v.Units += o.Units
	v.Mismatches += o.Mismatches
	for _, m := range o.First {
		if len(v.First) < maxMismatchNotes {
			v.First = append(v.First, m)
		}
	}
}

// check verifies buf, read from offset off, unit by unit, into st.
func (v *verifier) check(buf []byte, off int64, st *VerifyStats) {
	u := v.unit
	for p := 0; p+u <= len(buf); p += u {
		st.Units++
		if why := v.checkUnit(buf[p:p+u], off+int64(p)); why != "" {
			st.Mismatches++
			if len(st.First) < maxMismatchNotes {
				st.First = append(st.First, Mismatch{Offset: off + int64(p), Reason: why})
			}
		}
	}
}

// unitSet is a bitmap of units, set concurrently.
type unitSet []atomic.Uint64

// add marks units [first, first+n).
func (s unitSet) add(first, n int64) {
	for i := first; i < first+n; {
		w, b := i/64, uint(i%64)
		span := min(64-int64(b), first+n-i)
		mask := ^uint64(0)
		if span < 64 {
			mask = (uint64(1)<<uint(span) - 1) << b
		}
		if s[w].Load()&mask != mask {
			s[w].Or(mask)
		}
		i += span
	}
}

// has reports whether every unit of [first, first+n) is marked.
func (s unitSet) has(first, n int64) bool {
	for i := first; i < first+n; {
		w, b := i/64, uint(i%64)
		span := min(64-int64(b), first+n-i)
		mask := ^uint64(0)
		if span < 64 {
			mask = (uint64(1)<<uint(span) - 1) << b
		}
		if s[w].Load()&mask != mask {
			return false
		}
		i += span
	}
	return true
}

// runs calls fn with each maximal run [first, first+n) of marked units,
// in order, splitting runs longer than maxRun; it stops when fn returns
// false.
func (s unitSet) runs(total, maxRun int64, fn func(first, n int64) bool) {
	start := int64(-1)
	for i := int64(0); i <= total; i++ {
		in := i < total && s[i/64].Load()&(1<<uint(i%64)) != 0
		switch {
		case in && start < 0:
			start = i
		case start >= 0 && (!in || i-start == maxRun):
			if !fn(start, i-start) {
				return
			}
			start = -1
			if in {
				start = i
			}
		}
	}
}

// VerifyError is a run that verify=crc32c failed: the report is still
// written, and the command fails.
type VerifyError struct {
	Job        string
	Mismatches int64
	Units      int64
	First      []Mismatch
}

func (e *VerifyError) Error() string {
	msg := fmt.Sprintf("verify=crc32c: job %q: %d of %d units checked failed", e.Job, e.Mismatches, e.Units)
	for _, m := range e.First {
		msg += fmt.Sprintf("; offset %d: %s", m.Offset, m.Reason)
	}
	return msg
}

// readBackRuns reads what job wrote, in runs of at most len(buf), with
// read (which fills its slice or fails) and checks the bytes against their
// verify=crc32c stamps.
func readBackRuns(job *Job, w *Worker, buf []byte, read func(b []byte, off int64) error) error {
	var err error
	job.WrittenRuns(len(buf), func(off int64, n int) bool {
		if err = read(buf[:n], off); err != nil {
			err = fmt.Errorf("verify: reading back %d bytes at offset %d: %w", n, off, err)
			return false
		}
		w.Check(buf[:n], off)
		return true
	})
	return err
}
