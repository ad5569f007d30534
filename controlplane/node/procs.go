package node

import (
	"context"
	"runtime"
	"syscall"
	"time"
)

// AdaptProcs sets GOMAXPROCS to 1 while the process is nearly idle and to max while it is
// busy, checking its own CPU time every second, until ctx ends.
//
// Why: with hundreds of Raft groups, an idle control process spends most of its CPU on the
// Go scheduler waking other threads for raft's timer goroutines; with one P those wakeups
// stay on one thread (idle cost 8.5% → 5.3% of a core per node, docs/benchmarks.md). Under
// load, one P caps commit throughput (853 → 1438 commits/s with two). Switching costs a
// stop-the-world of microseconds, a few times at most per busy period.
func AdaptProcs(ctx context.Context, max int, logf func(string, ...any)) {
	const (
		busy     = 0.25 // of one core: go wide
		idle     = 0.10 // of one core, for idleFor: go back to one P
		idleFor  = 5    // seconds
		interval = time.Second
	)
	if max <= 1 {
		runtime.GOMAXPROCS(1)
		return
	}
	runtime.GOMAXPROCS(1)
	wide := false
	quiet := 0
	last := cpuTime()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := cpuTime()
		use := (now - last).Seconds() / interval.Seconds()
		last = now
		switch {
		case !wide && use > busy:
			runtime.GOMAXPROCS(max)
			wide, quiet = true, 0
			logf("busy (%.0f%% of a core): running Go code on up to %d threads", use*100, max)
		case wide && use < idle:
			if quiet++; quiet >= idleFor {
				runtime.GOMAXPROCS(1)
				wide = false
				logf("idle again: one thread runs Go code")
			}
		default:
			quiet = 0
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
