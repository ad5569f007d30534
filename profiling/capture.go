// Package profiling takes CPU profiles of the running process for the
// admin API (the dataplane over its sidecar channel, the control process
// directly). Subpackages cut profiles (analyze: by label, into folded
// stacks, into workload buckets; perf's output) and draw them (flamegraph).
package profiling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"sync"
	"time"
)

// The pprof labels the dataplane puts on its goroutines (dataplane/labels.go
// says where): core is the I/O core number, role what the goroutine does,
// op the request's operation on workers.
const (
	LabelCore = "core"
	LabelRole = "role"
	LabelOp   = "op"
)

// Values of LabelRole.
const (
	RoleIO     = "io"     // a store partition's goroutine (its ring)
	RoleNet    = "net"    // a network event loop
	RoleWorker = "worker" // a request worker
)

// ErrBusy is returned while another CPU profile of the process runs (the Go
// runtime takes one at a time).
var ErrBusy = errors.New("profiling: a CPU profile of this process is already being taken")

var running sync.Mutex

// CPU profiles the process's CPU for d, or until ctx ends (the profile then
// covers the time until then), and returns the pprof bytes. A profile over
// limit bytes is an error saying so. Samples carry the goroutines' pprof
// labels.
func CPU(ctx context.Context, d time.Duration, limit int) ([]byte, error) {
	if d <= 0 {
		return nil, fmt.Errorf("profiling: duration %v: want a positive one", d)
	}
	if !running.TryLock() {
		return nil, ErrBusy
	}
	defer running.Unlock()
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		// Someone outside this package (a test's -cpuprofile) holds it.
		return nil, fmt.Errorf("%w: %v", ErrBusy, err)
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	pprof.StopCPUProfile()
	if buf.Len() > limit {
		return nil, fmt.Errorf("profiling: the profile is %d bytes, over the %d-byte limit: take a shorter one", buf.Len(), limit)
	}
	return buf.Bytes(), nil
}
