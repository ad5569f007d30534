package bench

import (
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// epoch is the zero of Now.
var epoch = time.Now()

// Now is a monotonic clock in nanoseconds for timing I/Os. It reads only the
// monotonic clock (time.Since of a monotonic time skips the wall clock): one
// vDSO call, about 20 ns.
func Now() int64 { return int64(time.Since(epoch)) }

// Limits on workers: a job may create at most maxWorkersPerJob and a run at
// most maxWorkersPerRun, bounding recorder memory (32 KiB per direction a
// worker records) to 256 MiB.
const (
	maxWorkersPerJob = MaxIODepth
	maxWorkersPerRun = 4096
	// claimChunk is how many I/Os a worker takes from its job's shared
	// sequence at a time: one atomic add per claimChunk I/Os.
	claimChunk = 64
)

// Run phases, in order. Workers read the phase once per Next.
const (
	phaseRamp    int32 = iota // I/O runs but is not recorded or counted against Size
	phaseMeasure              // I/O is recorded
	phaseStop                 // no new I/O may be issued
)

// DirStats is what a recorder has seen for one direction (reads, writes
// or syncs; a sync moves no bytes).
type DirStats struct {
	IOs   int64     // completed I/Os
	Bytes int64     // bytes moved
	Clat  Histogram // completion latency: submission to completion, ns
	Lat   Histogram // total latency: issue (queued) to completion, ns
}

func (d *DirStats) merge(o *DirStats) {
	d.IOs += o.IOs
	d.Bytes += o.Bytes
	d.Clat.Merge(&o.Clat)
	d.Lat.Merge(&o.Lat)
}

func (d *DirStats) reset() {
	d.IOs, d.Bytes = 0, 0
	d.Clat.reset()
	d.Lat.reset()
}

// IOKind is what an I/O does.
type IOKind uint8

// The kinds of I/O a Worker hands out. A sync is fsync, or fdatasync when
// Spec.SyncData.
const (
	IORead IOKind = iota
	IOWrite
	IOSync
)

// IO is one I/O a Worker hands out.
type IO struct {
	Kind IOKind
	Off  int64 // bytes from the start of the target; 0 for a sync
	Len  int   // bytes; 0 for a sync
	// Verify: a read whose data must carry verify=crc32c stamps; the
	// target checks it with Worker.Check once it completes.
	Verify bool
}

// Worker is one goroutine's share of a job: it hands out the job's I/Os
// (kind, offset and length) and records their completions without locks. A
// target creates one per goroutine that issues I/O with Job.NewWorker; a
// Worker must only be used by that goroutine.
type Worker struct {
	job   *Job
	phase int32
	rng   uint64 // splitmix64 state
	seq   int64  // next I/O sequence number of the claimed chunk
	end   int64  // end of the claimed chunk (exclusive)
	// cursor is the next sequential offset (from Spec.Offset) with bssplit.
	cursor int64
	// writes counts writes handed out since the last sync (SyncEvery).
	writes int
	// progress publishes the completed I/O counts (read, write) for the
	// progress line, every progressEvery completions and at the end.
	progress [2]atomic.Int64
	done     [2]int64 // completions in every phase
	stats    [3]DirStats
	verify   VerifyStats
}

const progressEvery = 16

// NextIO returns the next I/O to issue. Reads and writes lie inside
// [Spec.Offset, Spec.Offset+Spec.Size), at multiples of Spec.Align from
// Spec.Offset, Spec.BlockSize bytes long or, with a bssplit, of a size drawn
// from it. With Spec.SyncEvery, a sync follows every SyncEvery writes: the
// target issues it once the I/Os in flight have completed and issues
// nothing more until it has. ok is false once the run is stopping or,
// without --time_based, the job has issued --size bytes: the caller then
// issues nothing more, waits for its I/Os in flight, records them, and
// returns.
func (w *Worker) NextIO() (io IO, ok bool) {
	j := w.job
	if p := j.run.phase.Load(); p != w.phase {
		if p == phaseStop {
			return IO{}, false
		}
		// Ramp is over: forget it.
		w.phase = p
		w.stats[0].reset()
		w.stats[1].reset()
		w.stats[2].reset()
		w.seq, w.end, w.cursor = 0, 0, 0
	}
	if j.syncEvery > 0 && w.writes >= j.syncEvery {
		w.writes = 0
		return IO{Kind: IOSync}, true
	}
	if j.split == nil {
		if w.seq == w.end && !w.claim() {
			return IO{}, false
		}
		s := w.seq
		w.seq++
		var block int64
		switch {
		case j.perm != nil:
			block = j.perm.at(s)
		case j.random:
			hi, _ := bits.Mul64(w.rand(), uint64(j.blocks))
			block = int64(hi)
		default:
			block = s % j.blocks
		}
		io.Off, io.Len = j.offset+block*j.bs, int(j.bs)
	} else {
		n := int64(j.split[w.rand()%100])
		if j.random {
			slots := uint64((j.size-n)/j.align + 1)
			hi, _ := bits.Mul64(w.rand(), slots)
			io.Off = j.offset + int64(hi)*j.align
		} else {
			// At the end of the range an I/O is cut to what is left (in
			// whole units), or the walk starts over.
			rem := j.size - w.cursor
			if rem < j.align {
				w.cursor, rem = 0, j.size
			}
			n = min(n, rem-rem%j.align)
			io.Off = j.offset + w.cursor
			w.cursor += n
		}
		if !w.claimBytes(n) {
			return IO{}, false
		}
		io.Len = int(n)
	}
	write := j.writes
	if j.mixed {
		write = int(w.rand()%100) >= j.rwMixRead
	}
	switch {
	case write:
		io.Kind = IOWrite
		w.writes++
	case j.verify != nil:
		// A read is checked when every unit it covers carries a stamp: in
		// a read-only job, always (what is read must have been written
		// with verify=crc32c); in a mixed one, when this job's writes of
		// those units had completed before the read was issued.
		io.Verify = j.written == nil || j.written.has((io.Off-j.offset)/j.align, int64(io.Len)/j.align)
	}
	return io, true
}

// claim takes the next chunk of the job's I/O sequence for the current
// phase; false when the job's budget for the phase is spent.
func (w *Worker) claim() bool {
	j := w.job
	limit := j.limit
	if w.phase == phaseRamp {
		limit = math.MaxInt64
	}
	end := j.claimed[w.phase].Add(claimChunk)
	start := end - claimChunk
	if start >= limit {
		return false
	}
	w.seq, w.end = start, min(end, limit)
	return true
}

// claimBytes takes n bytes of the job's budget for the current phase (a
// bssplit job counts bytes, not I/Os); false when it is spent.
func (w *Worker) claimBytes(n int64) bool {
	j := w.job
	if w.phase == phaseRamp || j.limitBytes == math.MaxInt64 {
		return true
	}
	return j.claimed[w.phase].Add(n)-n < j.limitBytes
}

// rand draws from the worker's generator.
func (w *Worker) rand() uint64 { return splitmix64(&w.rng) }

// splitmix64 advances *state and returns its next output: a full-period
// 64-bit generator, a few ns, one word of state, no allocation.
func splitmix64(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Complete records the completion of io: lat is ns from issue (when the
// I/O was queued) to completion, clat ns from submission to completion.
// Completions during the ramp are counted for the progress line only; a
// completed write is remembered for verification in every phase.
func (w *Worker) Complete(io IO, lat, clat int64) {
	d := int(io.Kind)
	if io.Kind == IOWrite && w.job.written != nil {
		j := w.job
		w.job.written.add((io.Off-j.offset)/j.align, int64(io.Len)/j.align)
	}
	if d < 2 {
		w.done[d]++
		if w.done[d]%progressEvery == 0 {
			w.progress[d].Store(w.done[d])
		}
	}
	if w.phase != phaseMeasure {
		return
	}
	s := &w.stats[d]
	s.IOs++
	s.Bytes += int64(io.Len)
	s.Lat.Record(lat)
	s.Clat.Record(clat)
}

// Stamp fills buf with the verify=crc32c units of the write at off (see
// Spec.Verify); it does nothing without verify.
func (w *Worker) Stamp(buf []byte, off int64) {
	if v := w.job.verify; v != nil {
		v.stamp(buf, off)
	}
}

// Check verifies buf, read from off, against the verify=crc32c stamps and
// counts the units checked and the mismatches.
func (w *Worker) Check(buf []byte, off int64) {
	if v := w.job.verify; v != nil {
		v.check(buf, off, &w.verify)
	}
}

// Job is one of a spec's numjobs jobs, handed to Target.RunJob. Its methods
// are safe for concurrent use.
type Job struct {
	// Index is the job number, 0..NumJobs-1.
	Index int
	// Spec is the validated spec (Size resolved); read-only.
	Spec *Spec

	run        *runState
	offset     int64 // Spec.Offset
	size       int64 // Spec.Size
	bs         int64 // Spec.BlockSize
	align      int64 // Spec.Align
	blocks     int64 // Spec.Size / Spec.BlockSize, >= 1
	limit      int64 // I/Os to issue in the measured phase; MaxInt64 when time based
	limitBytes int64 // with a bssplit: bytes to issue in the measured phase; MaxInt64 when time based
	split      *[100]int32
	perm       *permutation // the order of a random job's blocks (nil: drawn with replacement)
	mixed      bool
	writes     bool
	random     bool
	rwMixRead  int
	syncEvery  int
	verify     *verifier
	written    unitSet         // units written, for verify in jobs that write
	claimed    [2]atomic.Int64 // I/O sequence numbers (bytes with a bssplit) handed out, per phase (ramp, measure)

	mu         sync.Mutex
	workers    []*Worker
	measureEnd time.Time   // set by EndMeasure
	readBack   VerifyStats // checks made outside any worker
}

// addVerify adds checks made outside the job's workers.
func (j *Job) addVerify(st *VerifyStats) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.readBack.merge(st)
}

// NewWorker returns a new worker for the calling goroutine. It fails when the
// job already has maxWorkersPerJob workers or the run maxWorkersPerRun.
func (j *Job) NewWorker() (*Worker, error) {
	if j.run.workers.Add(1) > maxWorkersPerRun {
		j.run.workers.Add(-1)
		return nil, fmt.Errorf("job %d: more than %d workers in one run", j.Index, maxWorkersPerRun)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.workers) >= maxWorkersPerJob {
		j.run.workers.Add(-1)
		return nil, fmt.Errorf("job %d: more than %d workers in one job", j.Index, maxWorkersPerJob)
	}
	w := &Worker{
		job:   j,
		phase: phaseRamp,
		rng:   uint64(j.Index)<<32 | uint64(len(j.workers)) + 0x5eed,
	}
	spec := j.Spec
	if spec.Mode.Reads() {
		w.stats[0].Clat, w.stats[0].Lat = newHistogram(), newHistogram()
	}
	if spec.Mode.Writes() {
		w.stats[1].Clat, w.stats[1].Lat = newHistogram(), newHistogram()
		if spec.SyncEvery > 0 || spec.EndFsync {
			w.stats[2].Clat, w.stats[2].Lat = newHistogram(), newHistogram()
		}
	}
	j.workers = append(j.workers, w)
	return w, nil
}

// Writes reports whether the job issues writes.
func (j *Job) Writes() bool { return j.writes || j.mixed }

// EndMeasure ends the job's measured runtime: a target calls it once the
// job's I/O (and its end_fsync) is done and before it reads back what it
// wrote for verify=crc32c. Without it the runtime ends when RunJob returns.
func (j *Job) EndMeasure() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.measureEnd.IsZero() {
		j.measureEnd = time.Now()
	}
}

func (j *Job) measureEnded() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.measureEnd
}

// ReadBack reports whether the job must read back what it wrote once its
// I/O is done: verify=crc32c in a job that writes.
func (j *Job) ReadBack() bool { return j.written != nil }

// WrittenRuns calls fn with each run of bytes [off, off+n) the job wrote,
// in order, no run longer than maxBytes (at least one verify unit); it
// stops when fn returns false.
func (j *Job) WrittenRuns(maxBytes int, fn func(off int64, n int) bool) {
	if j.written == nil {
		return
	}
	maxUnits := max(int64(maxBytes)/j.align, 1)
	j.written.runs(j.size/j.align, maxUnits, func(first, n int64) bool {
		return fn(j.offset+first*j.align, int(n*j.align))
	})
}

// progress sums the published completion counts (read, write) of the job's
// workers.
func (j *Job) progress() (r, w int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, wk := range j.workers {
		r += wk.progress[0].Load()
		w += wk.progress[1].Load()
	}
	return r, w
}

// measuredFraction is how much of its measured-phase budget the job has
// handed out, 0..1 (0 when time based).
func (j *Job) measuredFraction() float64 {
	c := j.claimed[phaseMeasure].Load()
	switch {
	case j.split != nil && j.limitBytes != math.MaxInt64:
		return min(float64(c)/float64(j.limitBytes), 1)
	case j.split == nil && j.limit != math.MaxInt64:
		return min(float64(c)/float64(j.limit), 1)
	}
	return 0
}

// stats merges the workers' recorders. Call only after RunJob returned.
func (j *Job) stats() (r, w, s DirStats, v VerifyStats) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, wk := range j.workers {
		r.merge(&wk.stats[0])
		w.merge(&wk.stats[1])
		s.merge(&wk.stats[2])
		v.merge(&wk.verify)
	}
	v.merge(&j.readBack)
	return r, w, s, v
}
