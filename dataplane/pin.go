package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
)

// AllowedCPUs is the CPUs this process may run on (the main thread's
// affinity mask, so a thread pinned earlier does not narrow it), ascending.
func AllowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &set); err != nil {
		return nil, fmt.Errorf("reading the process's CPU affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < dpconfig.MaxCPU; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// ResolveAffinity turns cpu.affinity into the CPUs to pin to, in order:
// nil for no pinning, every allowed CPU for "true", the list itself
// otherwise. A listed CPU the process may not use is an error naming it
// and the allowed ones.
func ResolveAffinity(a dpconfig.Affinity) ([]int, error) {
	if !a.Enabled() {
		return nil, nil
	}
	allowed, err := AllowedCPUs()
	if err != nil {
		return nil, err
	}
	if a.All {
		return allowed, nil
	}
	ok := map[int]bool{}
	for _, c := range allowed {
		ok[c] = true
	}
	var missing []int
	for _, c := range a.CPUs {
		if !ok[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cpu.affinity %s: CPU %s not available to this process (it may use %s): choose CPUs among those",
			a, dpconfig.FormatCPUList(missing), dpconfig.FormatCPUList(allowed))
	}
	return a.CPUs, nil
}

// Thread is one pinned-or-not thread of the dataplane: an I/O core's
// (store partition's) or an event loop's.
type Thread struct {
	Index int // partition or event loop number
	TID   int // Linux thread id
	CPU   int // the CPU it is pinned to, -1 when not pinned
}

// placement pins the dataplane's threads: partition i and event loop i to
// cpus[i % len(cpus)], each on its own thread, when cpus is not empty.
// Partitions are pinned by chunkstore's OnPartitionThread hook as the
// store opens; an event loop (netio offers no per-loop start hook) when
// it serves its first connection, through the server's OnConnThread.
type placement struct {
	cpus    []int
	allowed unix.CPUSet // restored on loop threads at stop
	logf    func(string, ...any)
	onErr   func(error)

	mu    sync.Mutex
	parts []Thread
	loops []Thread // by netio's loop index; TID 0 for a loop not seen yet
	kick  func()   // called after a new connection is seen
}

func newPlacement(cpus []int, logf func(string, ...any), onErr func(error)) (*placement, error) {
	p := &placement{cpus: cpus, logf: logf, onErr: onErr}
	if err := unix.SchedGetaffinity(os.Getpid(), &p.allowed); err != nil {
		return nil, err
	}
	return p, nil
}

// pin pins the calling thread to cpus[i % len(cpus)] and returns the CPU,
// -1 when not pinning.
func (p *placement) pin(what string, i int) int {
	if len(p.cpus) == 0 {
		return -1
	}
	cpu := p.cpus[i%len(p.cpus)]
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		err = fmt.Errorf("pinning %s %d to CPU %d: %w (it runs unpinned)", what, i, cpu, err)
		p.logf("%v", err)
		p.onErr(err)
		return -1
	}
	return cpu
}

// partitionThread is chunkstore's OnPartitionThread.
func (p *placement) partitionThread(i int) {
	pprof.SetGoroutineLabels(coreLabels(i, RoleIO))
	cpu := p.pin("I/O core", i)
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.parts) <= i {
		p.parts = append(p.parts, Thread{Index: len(p.parts), CPU: -1})
	}
	p.parts[i] = Thread{Index: i, TID: unix.Gettid(), CPU: cpu}
}

// connThread is the server's OnConnThread: it runs on event loop loop
// (netio's Request.Loop). The loop is known by its index, not its thread:
// an unpinned loop is not locked to a thread and moves between them (the
// TID recorded is the one it first ran on then).
func (p *placement) connThread(loop int) {
	p.mu.Lock()
	if loop >= len(p.loops) || p.loops[loop].TID == 0 {
		for len(p.loops) <= loop {
			p.loops = append(p.loops, Thread{Index: len(p.loops), CPU: -1})
		}
		tid := unix.Gettid()
		cpu := p.pin("event loop", loop)
		p.loops[loop] = Thread{Index: loop, TID: tid, CPU: cpu}
		if cpu >= 0 {
			p.logf("placement: event loop %d (thread %d) pinned to CPU %d", loop, tid, cpu)
		}
		// The loop goroutine keeps its labels: set once per loop.
		pprof.SetGoroutineLabels(coreLabels(loop, RoleNet))
	}
	kick := p.kick
	p.mu.Unlock()
	if kick != nil {
		kick()
	}
}

// threads returns copies of the partition and loop threads.
func (p *placement) threads() (parts, loops []Thread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Thread(nil), p.parts...), append([]Thread(nil), p.loops...)
}

// describe is the placement line of the start log.
func (p *placement) describe(eventLoops int, affinity dpconfig.Affinity) string {
	parts, _ := p.threads()
	var b bytes.Buffer
	if len(p.cpus) == 0 {
		fmt.Fprintf(&b, "placement: no CPU pinning (cpu.affinity false): %d I/O cores and %d event loops run where the scheduler puts them;", len(parts), eventLoops)
		for _, t := range parts {
			fmt.Fprintf(&b, " I/O core %d thread %d;", t.Index, t.TID)
		}
		return string(bytes.TrimSuffix(b.Bytes(), []byte(";")))
	}
	fmt.Fprintf(&b, "placement: cpu.affinity %s = CPUs %s:", affinity, dpconfig.FormatCPUList(p.cpus))
	for _, t := range parts {
		if t.CPU >= 0 {
			fmt.Fprintf(&b, " I/O core %d (thread %d) on CPU %d;", t.Index, t.TID, t.CPU)
		} else {
			fmt.Fprintf(&b, " I/O core %d (thread %d) unpinned;", t.Index, t.TID)
		}
	}
	loopCPUs := make([]int, eventLoops)
	for i := range loopCPUs {
		loopCPUs[i] = p.cpus[i%len(p.cpus)]
	}
	fmt.Fprintf(&b, " event loops 0..%d go to CPUs %v as each serves its first connection", eventLoops-1, loopCPUs)
	return b.String()
}

// release gives the event loops' threads (back in Go's pool once their
// loops have stopped) the process's whole affinity mask again.
func (p *placement) release() {
	if len(p.cpus) == 0 {
		return
	}
	_, loops := p.threads()
	for _, t := range loops {
		_ = unix.SchedSetaffinity(t.TID, &p.allowed) // ESRCH: the thread has exited
	}
}

// userHz is the unit of /proc's CPU times: fixed at 100 by the Linux ABI
// (USER_HZ), whatever the kernel's tick rate.
const userHz = 100

// threadCPU returns the user and system CPU time of thread tid of this
// process, from /proc/self/task/TID/stat.
func threadCPU(tid int) (user, system time.Duration, err error) {
	if tid <= 0 {
		return 0, 0, errors.New("no thread")
	}
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseThreadStat(b)
}

// parseThreadStat reads utime and stime (fields 14 and 15) from a
// /proc/PID/task/TID/stat line. The command name (field 2) is in
// parentheses and may contain anything, so fields are counted from the
// last ')'.
func parseThreadStat(b []byte) (user, system time.Duration, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("malformed stat: %d fields after the command name", len(f))
	}
	ticks := func(s []byte) (time.Duration, error) {
		n, err := strconv.ParseUint(string(s), 10, 63)
		if err != nil || n > uint64(1<<62)/uint64(time.Second) {
			return 0, fmt.Errorf("malformed stat: CPU time %q", s)
		}
		return time.Duration(n) * time.Second / userHz, nil
	}
	if user, err = ticks(f[14-3]); err != nil {
		return 0, 0, err
	}
	if system, err = ticks(f[15-3]); err != nil {
		return 0, 0, err
	}
	return user, system, nil
}
