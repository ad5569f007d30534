package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Target is something a benchmark runs against: a raw device, a chunk store,
// a data plane. One Target serves every job of a run.
//
// Concurrency is the target's choice, per job: RunJob may run one loop on the
// calling goroutine keeping Spec.IODepth asynchronous I/Os in flight (the
// device target), or start Spec.IODepth goroutines that each make
// synchronous calls. Every goroutine that issues I/O takes its own *Worker
// from job.NewWorker and uses it alone: Worker.Next says what to issue,
// Worker.Done records a completion, and neither takes a lock.
type Target interface {
	// String describes the target for the report, e.g.
	// "device:/tmp/x.dat (io_uring)".
	String() string
	// RunJob runs one job until Worker.Next reports the end, waits for
	// every I/O it issued and every goroutine it started, and returns. It
	// is called once per job, concurrently, each on a fresh goroutine that
	// exits when RunJob returns: a target may runtime.LockOSThread it and
	// never unlock. An error ends the run.
	RunJob(job *Job) error
	// Close releases the target after every RunJob has returned.
	Close() error
}

// OpenFunc opens a target from the part of --target after the first ':'.
// It validates spec against the target's own constraints, returning a
// *UsageError (Usagef) for values it cannot run, and resolves spec.Size
// when it is 0 (the whole target from spec.Offset on). On return
// spec.Size >= spec.BlockSize. It may report set-up progress (laying out a
// file) through env.
type OpenFunc func(arg string, spec *Spec, env *Env) (Target, error)

// Env is what a target's OpenFunc may use besides the spec.
type Env struct {
	// Stderr receives progress lines and notes; never nil.
	Stderr io.Writer
	// Progress is false when progress lines are suppressed.
	Progress bool
	// Logf prints a note on Stderr (e.g. an engine falling back); never nil.
	Logf func(format string, args ...any)
}

// LayoutProgress returns a callback for nvme.OpenOptions.Progress that
// prints "laying out PATH: DONE/TOTAL (P%)" on Stderr at most once a second
// and once at the end, or nil when progress is suppressed.
func (e *Env) LayoutProgress(path string) func(done, total int64) {
	if !e.Progress {
		return nil
	}
	line := newStatusLine(e.Stderr)
	start := time.Now()
	var last time.Time
	return func(done, total int64) {
		now := time.Now()
		if done < total && now.Sub(last) < time.Second {
			return
		}
		last = now
		line.update(fmt.Sprintf("laying out %s: %s/%s (%d%%) [%s]", path, formatBinary(float64(done)),
			formatBinary(float64(total)), done*100/max(total, 1), now.Sub(start).Round(100*time.Millisecond)))
		if done >= total {
			line.finish()
		}
	}
}

type targetEntry struct {
	usage string
	open  OpenFunc
}

var (
	registryMu sync.RWMutex
	registry   = map[string]targetEntry{}
)

// RegisterTarget makes --target KIND:ARG open with open. usage is the form
// and a one-line description for help, e.g. "device:PATH  a file or block
// device ...". Call it from an init function; it panics when kind is empty,
// contains ':' or is already registered.
func RegisterTarget(kind, usage string, open OpenFunc) {
	if kind == "" || strings.Contains(kind, ":") || open == nil {
		panic(fmt.Sprintf("bench: RegisterTarget(%q): kind must be non-empty without ':' and open non-nil", kind))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[kind]; dup {
		panic(fmt.Sprintf("bench: target kind %q registered twice", kind))
	}
	registry[kind] = targetEntry{usage: usage, open: open}
}

// Targets lists the usage lines of the registered target kinds, sorted.
func Targets() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for _, e := range registry {
		out = append(out, e.usage)
	}
	sort.Strings(out)
	return out
}

// openTarget splits --target at its first ':' and opens it with the
// registered OpenFunc. An unknown kind is a *UsageError.
func openTarget(spec *Spec, env *Env) (Target, error) {
	kind, arg, _ := strings.Cut(spec.Target, ":")
	registryMu.RLock()
	e, ok := registry[kind]
	registryMu.RUnlock()
	if !ok {
		return nil, Usagef("target %q is not supported yet; supported targets: %s", kind, strings.Join(kinds(), ", "))
	}
	if chunkKinds[kind] {
		if spec.BSSplit != nil {
			return nil, Usagef("--bssplit: a %s: target keeps a working set of --bs chunks; weighted block sizes need a device: target", kind)
		}
		if spec.SyncEvery > 0 || spec.EndFsync {
			env.Logf("%s: every write is acknowledged only once durable, so fsync=, fdatasync= and end_fsync add nothing: none is issued", kind)
			spec.SyncEvery, spec.EndFsync = 0, false
		}
	}
	return e.open(arg, spec, env)
}

// chunkKinds are the targets that keep a working set of --bs chunks
// (chunkService) and acknowledge writes only once durable.
var chunkKinds = map[string]bool{"store": true, "dataplane": true}

// kinds lists the registered kinds as "KIND:", sorted.
func kinds() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k+":")
	}
	sort.Strings(out)
	return out
}
