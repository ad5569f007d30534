package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"
)

// runState is shared by every job and worker of a run.
type runState struct {
	phase   atomic.Int32 // phaseRamp, phaseMeasure or phaseStop; only increases
	workers atomic.Int64 // workers created, for maxWorkersPerRun
}

// Result is a finished run.
type Result struct {
	Spec   *Spec
	Target string    // Target.String()
	Start  time.Time // wall-clock start of the run
	Jobs   []JobResult
}

// JobResult is what one job measured.
type JobResult struct {
	Index int
	// Runtime is the measured phase: from the end of the ramp to the
	// job's last completion.
	Runtime time.Duration
	Read    DirStats
	Write   DirStats
	Sync    DirStats // fsync/fdatasync: latencies only
	Verify  VerifyStats
}

type jobEnd struct {
	index int
	err   error
	at    time.Time
}

// Run opens spec's target and runs its jobs: a ramp of spec.RampTime, then
// the measured phase until spec.Runtime passes or, without TimeBased, every
// job has moved spec.Size bytes. Cancelling ctx ends the run early and still
// returns the result, like interrupting fio. A progress line goes to stderr
// about once a second when spec.Progress. Errors are *UsageError for a bad
// spec or target, *VerifyError (with the result) when verify=crc32c found
// a mismatch, others for failures while running.
func Run(ctx context.Context, spec *Spec, stderr io.Writer) (*Result, error) {
	env := &Env{
		Stderr:   stderr,
		Progress: spec.Progress,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(stderr, "cfs bench: "+format+"\n", args...)
		},
	}
	for _, n := range spec.Notes {
		env.Logf("%s", n)
	}
	target, err := openTarget(spec, env)
	if err != nil {
		return nil, err
	}
	res, err := runJobs(ctx, spec, target, stderr)
	if cerr := target.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", target, cerr)
	}
	if err != nil {
		return nil, err
	}
	var ve VerifyError
	for _, j := range res.Jobs {
		ve.Units += j.Verify.Units
		ve.Mismatches += j.Verify.Mismatches
		for _, m := range j.Verify.First {
			if len(ve.First) < maxMismatchNotes {
				ve.First = append(ve.First, m)
			}
		}
	}
	if ve.Mismatches > 0 {
		ve.Job = spec.Name
		return res, &ve
	}
	return res, nil
}

func runJobs(ctx context.Context, spec *Spec, target Target, stderr io.Writer) (*Result, error) {
	if spec.Size < int64(spec.BlockSize) {
		return nil, fmt.Errorf("target %s left --size at %d bytes, below --bs", target, spec.Size)
	}
	if units := spec.Size / int64(spec.Align); spec.Verify && spec.Mode.Writes() && units > maxVerifyUnits {
		return nil, Usagef("--verify=crc32c: a writing job remembers which of its %d-byte units it wrote, at most %d of them; --size=%d has %d",
			spec.Align, maxVerifyUnits, spec.Size, units)
	}
	st := &runState{}
	if spec.RampTime <= 0 {
		st.phase.Store(phaseMeasure)
	}
	jobs := make([]*Job, spec.NumJobs)
	for i := range jobs {
		jobs[i] = newJob(spec, st, i)
	}
	res := &Result{Spec: spec, Start: time.Now()}
	start := time.Now()
	measureStart, measuring := start, spec.RampTime <= 0
	ends := make(chan jobEnd, len(jobs))
	for _, j := range jobs {
		go func() {
			err := target.RunJob(j)
			ends <- jobEnd{index: j.Index, err: err, at: time.Now()}
		}()
	}

	// Unfired timers from time.After are collected once unreferenced.
	var rampC, deadlineC, tickC <-chan time.Time
	if spec.RampTime > 0 {
		rampC = time.After(spec.RampTime)
	} else if spec.Runtime > 0 {
		deadlineC = time.After(spec.Runtime)
	}
	var prog *progress
	if spec.Progress {
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		tickC = ticker.C
		prog = &progress{line: newStatusLine(stderr), spec: spec, jobs: jobs, start: start, last: start}
	}
	doneC := ctx.Done()
	jobEnds := make([]time.Time, len(jobs))
	var firstErr error
	for left := len(jobs); left > 0; {
		select {
		case <-rampC:
			measureStart, measuring = time.Now(), true
			st.phase.CompareAndSwap(phaseRamp, phaseMeasure)
			if spec.Runtime > 0 {
				deadlineC = time.After(spec.Runtime)
			}
		case <-deadlineC:
			st.phase.Store(phaseStop)
		case <-doneC:
			st.phase.Store(phaseStop)
			doneC = nil
		case e := <-ends:
			left--
			jobEnds[e.index] = e.at
			if e.err != nil && firstErr == nil {
				firstErr = fmt.Errorf("job %d: %w", e.index, e.err)
				st.phase.Store(phaseStop)
			}
		case now := <-tickC:
			prog.print(now, measureStart, st.phase.Load())
		}
	}
	if prog != nil {
		prog.line.finish()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	res.Target = target.String() // after RunJob: a target may name its engine only then
	for i, j := range jobs {
		jr := JobResult{Index: i}
		end := jobEnds[i]
		if e := j.measureEnded(); !e.IsZero() {
			end = e
		}
		if measuring && end.After(measureStart) {
			jr.Runtime = end.Sub(measureStart)
		}
		jr.Read, jr.Write, jr.Sync, jr.Verify = j.stats()
		res.Jobs = append(res.Jobs, jr)
	}
	return res, nil
}

// newJob returns job index of spec (Size resolved) in run st.
func newJob(spec *Spec, st *runState, index int) *Job {
	bs := int64(spec.BlockSize)
	j := &Job{
		Index: index, Spec: spec, run: st,
		offset: spec.Offset, size: spec.Size, bs: bs, align: int64(spec.Align),
		blocks: spec.Size / bs, limit: spec.Size / bs, limitBytes: spec.Size,
		mixed: spec.Mode.Mixed(), writes: spec.Mode.Writes(), random: spec.Mode.Random(),
		rwMixRead: spec.RWMixRead, syncEvery: spec.SyncEvery,
	}
	if j.align <= 0 {
		j.align = bs
	}
	if spec.TimeBased {
		j.limit, j.limitBytes = math.MaxInt64, math.MaxInt64
	}
	if spec.BSSplit != nil {
		j.split = splitTable(spec.BSSplit)
	} else if spec.Mode.Random() && !spec.NoRandomMap {
		st := uint64(index) + 0x7a11
		j.perm = newPermutation(j.blocks, splitmix64(&st))
	}
	if spec.Verify {
		j.verify = newVerifier(int(j.align))
		if spec.Mode.Writes() {
			j.written = make(unitSet, (spec.Size/j.align+63)/64)
		}
	}
	return j
}

// splitTable maps a draw 0..99 to a block size, each size taking its
// percent of the entries.
func splitTable(split []BSWeight) *[100]int32 {
	var t [100]int32
	i := 0
	for _, w := range split {
		for range w.Percent {
			t[i] = int32(w.Size)
			i++
		}
	}
	return &t
}

// progress prints the "[r=38.2k IOPS w=0 IOPS][12% done][eta 4s]" line.
type progress struct {
	line         *statusLine
	spec         *Spec
	jobs         []*Job
	start, last  time.Time
	lastR, lastW int64
}

func (p *progress) print(now, measureStart time.Time, phase int32) {
	var r, w int64
	var issued float64
	for _, j := range p.jobs {
		jr, jw := j.progress()
		r += jr
		w += jw
		issued += j.measuredFraction()
	}
	secs := now.Sub(p.last).Seconds()
	riops, wiops := float64(r-p.lastR)/secs, float64(w-p.lastW)/secs
	p.last, p.lastR, p.lastW = now, r, w

	s := p.spec
	elapsed := now.Sub(p.start)
	frac, eta := 0.0, time.Duration(-1)
	if s.Runtime > 0 {
		total := s.RampTime + s.Runtime
		frac = min(elapsed.Seconds()/total.Seconds(), 1)
		eta = max(total-elapsed, 0)
	}
	if !s.TimeBased && phase != phaseRamp {
		f := issued / float64(len(p.jobs))
		if f > frac {
			frac = min(f, 1)
		}
		if f > 0 {
			sizeETA := time.Duration(float64(now.Sub(measureStart)) * (1 - f) / f)
			if eta < 0 || sizeETA < eta {
				eta = sizeETA
			}
		}
	}
	etaText := "?"
	if eta >= 0 {
		etaText = formatETA(eta)
	}
	ramp := ""
	if phase == phaseRamp {
		ramp = "[ramp]"
	}
	p.line.update(fmt.Sprintf("%s[r=%s IOPS w=%s IOPS][%d%% done][eta %s]", ramp,
		formatCount(riops), formatCount(wiops), int(frac*100), etaText))
}
