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

// DirStats is what a recorder has seen for one direction.
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

// Worker is one goroutine's share of a job: it hands out the job's I/Os
// (direction and offset) and records their completions without locks. A
// target creates one per goroutine that issues I/O with Job.NewWorker; a
// Worker must only be used by that goroutine.
type Worker struct {
	job   *Job
	phase int32
	rng   uint64 // splitmix64 state
	seq   int64  // next I/O sequence number of the claimed chunk
	end   int64  // end of the claimed chunk (exclusive)
	// progress publishes the completed I/O counts (read, write) for the
	// progress line, every progressEvery completions and at the end.
	progress [2]atomic.Int64
	done     [2]int64 // completions in every phase
	stats    [2]DirStats
}

const progressEvery = 16

// Next returns the next I/O to issue: whether it writes, and its offset in
// bytes (a multiple of Spec.BlockSize inside [Spec.Offset, Spec.Offset+Spec.Size)).
// ok is false once the run is stopping or, without --time_based, the job
// has issued --size bytes: the caller then issues nothing more, waits for its
// I/Os in flight, records them, and returns.
func (w *Worker) Next() (write bool, off int64, ok bool) {
	j := w.job
	if p := j.run.phase.Load(); p != w.phase {
		if p == phaseStop {
			return false, 0, false
		}
		// Ramp is over: forget it.
		w.phase = p
		w.stats[0].reset()
		w.stats[1].reset()
		w.seq, w.end = 0, 0
	}
	if w.seq == w.end && !w.claim() {
		return false, 0, false
	}
	s := w.seq
	w.seq++
	switch {
	case j.mixed:
		write = int(w.rand()%100) >= j.rwMixRead
	default:
		write = j.writes
	}
	var block int64
	if j.random {
		hi, _ := bits.Mul64(w.rand(), uint64(j.blocks))
		block = int64(hi)
	} else {
		block = s % j.blocks
	}
	return write, j.offset + block*j.bs, true
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

// Done records one completed I/O of n bytes: lat is ns from issue (when the
// I/O was queued) to completion, clat ns from submission to completion.
// Completions during the ramp are counted for the progress line only.
func (w *Worker) Done(write bool, n int, lat, clat int64) {
	d := 0
	if write {
		d = 1
	}
	w.done[d]++
	if w.done[d]%progressEvery == 0 {
		w.progress[d].Store(w.done[d])
	}
	if w.phase != phaseMeasure {
		return
	}
	s := &w.stats[d]
	s.IOs++
	s.Bytes += int64(n)
	s.Lat.Record(lat)
	s.Clat.Record(clat)
}

// Job is one of a spec's numjobs jobs, handed to Target.RunJob. Its methods
// are safe for concurrent use.
type Job struct {
	// Index is the job number, 0..NumJobs-1.
	Index int
	// Spec is the validated spec (Size resolved); read-only.
	Spec *Spec

	run       *runState
	offset    int64 // Spec.Offset
	bs        int64 // Spec.BlockSize
	blocks    int64 // Spec.Size / Spec.BlockSize, >= 1
	limit     int64 // I/Os to issue in the measured phase; MaxInt64 when time based
	mixed     bool
	writes    bool
	random    bool
	rwMixRead int
	claimed   [2]atomic.Int64 // I/O sequence numbers handed out, per phase (ramp, measure)

	mu      sync.Mutex
	workers []*Worker
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
	if j.Spec.Mode.Reads() {
		w.stats[0].Clat, w.stats[0].Lat = newHistogram(), newHistogram()
	}
	if j.Spec.Mode.Writes() {
		w.stats[1].Clat, w.stats[1].Lat = newHistogram(), newHistogram()
	}
	j.workers = append(j.workers, w)
	return w, nil
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

// measuredIssued is how many I/Os the job has handed out in the measured
// phase, capped at its budget.
func (j *Job) measuredIssued() int64 {
	return min(j.claimed[phaseMeasure].Load(), j.limit)
}

// stats merges the workers' recorders. Call only after RunJob returned.
func (j *Job) stats() (r, w DirStats) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, wk := range j.workers {
		r.merge(&wk.stats[0])
		w.merge(&wk.stats[1])
	}
	return r, w
}
