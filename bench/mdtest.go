package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
)

// The metadata benchmark (mdtest-like): --numjobs clients create --files
// files each, spread over --dirs directories they share, then stat them,
// list the directories and unlink the files. Every phase is timed apart
// and reports operations per second and latency percentiles.

// MDSpec is a metadata benchmark run.
type MDSpec struct {
	// Addrs are control-process addresses (any mix; those that do not
	// answer are skipped).
	Addrs []string
	Jobs  int // concurrent clients
	Dirs  int // directories shared by the clients
	Files int // files per client
	// Logf gets notes and the progress line's messages.
	Progress io.Writer
}

// Limits of a metadata run.
const (
	MaxMDJobs  = 256
	MaxMDDirs  = 1 << 16
	MaxMDFiles = 10 << 20
)

// MDPhase is one phase's figures (JSON field names are stable).
type MDPhase struct {
	Ops       uint64  `json:"ops"`
	Errors    uint64  `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p99_9_us"`
	MaxUs     float64 `json:"max_us"`
	// Entries is the entries listed (readdir only).
	Entries uint64 `json:"entries,omitempty"`
}

// MDReport is the whole run: one object per phase.
type MDReport struct {
	Jobs    int     `json:"numjobs"`
	Dirs    int     `json:"dirs"`
	Files   int     `json:"files_per_job"`
	Shards  int     `json:"shards"`
	Create  MDPhase `json:"create"`
	Stat    MDPhase `json:"stat"`
	Readdir MDPhase `json:"readdir"`
	Unlink  MDPhase `json:"unlink"`
	// FirstError is the first error any operation met, if any.
	FirstError string `json:"first_error,omitempty"`
}

// Validate checks the spec's bounds.
func (s *MDSpec) Validate() error {
	switch {
	case len(s.Addrs) == 0:
		return Usagef("the metadata benchmark needs --target cluster:ADDR[,ADDR…] (`cfs dev status --json` lists the control addresses)")
	case s.Jobs < 1 || s.Jobs > MaxMDJobs:
		return Usagef("--numjobs=%d: want 1..%d concurrent clients", s.Jobs, MaxMDJobs)
	case s.Dirs < 1 || s.Dirs > MaxMDDirs:
		return Usagef("--dirs=%d: want 1..%d", s.Dirs, MaxMDDirs)
	case s.Files < 1 || s.Files > MaxMDFiles:
		return Usagef("--files=%d: want 1..%d per client", s.Files, MaxMDFiles)
	}
	return nil
}

// RunMetadata runs the benchmark. The files live under a directory of
// their own in the root, removed at the end.
func RunMetadata(ctx context.Context, s MDSpec) (*MDReport, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	progress := s.Progress
	if progress == nil {
		progress = io.Discard
	}
	clients := make([]*metaclient.Client, s.Jobs)
	for i := range clients {
		c, err := metaclient.Dial(ctx, s.Addrs, metaclient.Options{})
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return nil, err
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	c0 := clients[0]
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	topName := "mdtest-" + hex.EncodeToString(tag[:])
	top, err := c0.Mkdir(ctx, meta.RootIno, topName, 0o755, metaclient.Owner{})
	if err != nil {
		return nil, fmt.Errorf("mdtest: mkdir /%s: %w", topName, err)
	}
	fmt.Fprintf(progress, "mdtest: %d clients, %d directories, %d files each, under /%s\n", s.Jobs, s.Dirs, s.Files, topName)
	dirs := make([]meta.Ino, s.Dirs)
	var firstErr atomic.Value
	note := func(err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, err.Error())
		}
	}
	// Setup: the shared directories, made in parallel.
	if err := parallel(ctx, s.Jobs, s.Dirs, func(job, i int) error {
		d, err := clients[job].Mkdir(ctx, top.Ino, fmt.Sprintf("dir.%d", i), 0o755, metaclient.Owner{})
		dirs[i] = d.Ino
		return err
	}); err != nil {
		return nil, fmt.Errorf("mdtest: making the directories: %w", err)
	}
	r := &MDReport{Jobs: s.Jobs, Dirs: s.Dirs, Files: s.Files, Shards: len(c0.Shards())}
	dirOf := func(job, k int) meta.Ino { return dirs[(job*s.Files+k)%s.Dirs] }
	name := func(job, k int) string { return fmt.Sprintf("file.%d.%d", job, k) }
	files := make([][]meta.Ino, s.Jobs)
	for j := range files {
		files[j] = make([]meta.Ino, s.Files)
	}

	r.Create = phase(ctx, "create", s.Jobs, s.Files, progress, note, func(job, k int) (int, error) {
		in, _, err := clients[job].Create(ctx, dirOf(job, k), name(job, k), 0o644, 0, metaclient.Owner{}, true)
		files[job][k] = in.Ino
		return 1, err
	})
	r.Stat = phase(ctx, "stat", s.Jobs, s.Files, progress, note, func(job, k int) (int, error) {
		_, err := clients[job].GetAttr(ctx, files[job][k])
		return 1, err
	})
	// Readdir: the directories split among the clients; one op is one
	// page of entries.
	perJob := (s.Dirs + s.Jobs - 1) / s.Jobs
	var entries atomic.Uint64
	r.Readdir = phase(ctx, "readdir", s.Jobs, perJob, progress, note, func(job, k int) (int, error) {
		i := job*perJob + k
		if i >= s.Dirs {
			return 0, nil
		}
		after, ops := "", 0
		for {
			ents, more, err := clients[job].ReadDir(ctx, dirs[i], after, 1024)
			ops++
			if err != nil {
				return ops, err
			}
			entries.Add(uint64(len(ents)))
			if !more || len(ents) == 0 {
				return ops, nil
			}
			after = ents[len(ents)-1].Name
		}
	})
	r.Readdir.Entries = entries.Load()
	r.Unlink = phase(ctx, "unlink", s.Jobs, s.Files, progress, note, func(job, k int) (int, error) {
		return 1, clients[job].Unlink(ctx, dirOf(job, k), name(job, k))
	})
	// Cleanup.
	_ = parallel(ctx, s.Jobs, s.Dirs, func(job, i int) error {
		return clients[job].Rmdir(ctx, top.Ino, fmt.Sprintf("dir.%d", i))
	})
	if err := c0.Rmdir(ctx, meta.RootIno, topName); err != nil && !errors.Is(err, syscall.ENOENT) {
		fmt.Fprintf(progress, "mdtest: removing /%s: %v\n", topName, err)
	}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	return r, nil
}

// parallel runs fn(job, i) for i in [0, n) on jobs workers and returns the
// first error.
func parallel(ctx context.Context, jobs, n int, fn func(job, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for j := 0; j < jobs; j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(j, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// phase runs fn(job, k) for k in [0, per) on each of jobs workers, timing
// every call; fn returns the operations it made.
func phase(ctx context.Context, label string, jobs, per int, progress io.Writer, note func(error), fn func(job, k int) (int, error)) MDPhase {
	hists := make([]Histogram, jobs)
	var ops, errs atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				el := time.Since(start).Seconds()
				fmt.Fprintf(progress, "\rmdtest %s: %d ops, %.0f ops/s, %d errors   ", label, ops.Load(), float64(ops.Load())/el, errs.Load())
			}
		}
	}()
	for j := 0; j < jobs; j++ {
		hists[j] = newHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hists[j]
			for k := 0; k < per && ctx.Err() == nil; k++ {
				t0 := time.Now()
				n, err := fn(j, k)
				d := time.Since(t0)
				if n == 0 {
					continue
				}
				h.Record(int64(d) / int64(n))
				ops.Add(uint64(n))
				if err != nil {
					errs.Add(1)
					note(fmt.Errorf("%s: %w", label, err))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	el := time.Since(start).Seconds()
	total := newHistogram()
	for j := range hists {
		total.Merge(&hists[j])
	}
	p := MDPhase{Ops: ops.Load(), Errors: errs.Load(), Seconds: el}
	if el > 0 {
		p.OpsPerSec = float64(p.Ops) / el
	}
	if total.Count() > 0 {
		p.P50us = float64(total.Percentile(50)) / 1e3
		p.P99us = float64(total.Percentile(99)) / 1e3
		p.P999us = float64(total.Percentile(99.9)) / 1e3
		p.MaxUs = float64(total.Max()) / 1e3
	}
	fmt.Fprintf(progress, "\rmdtest %s: %d ops in %.2fs: %.0f ops/s, p99 %.0f µs, %d errors\n", label, p.Ops, el, p.OpsPerSec, p.P99us, p.Errors)
	return p
}

// WriteMDReport prints the report as JSON or as a table.
func WriteMDReport(w io.Writer, r *MDReport, jsonOut bool) error {
	if jsonOut {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "metadata: %d clients, %d directories, %d files each, %d shards\n", r.Jobs, r.Dirs, r.Files, r.Shards)
	fmt.Fprintf(&b, "%-8s %10s %12s %10s %10s %10s %8s\n", "phase", "ops", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "errors")
	for _, row := range []struct {
		name string
		p    MDPhase
	}{{"create", r.Create}, {"stat", r.Stat}, {"readdir", r.Readdir}, {"unlink", r.Unlink}} {
		fmt.Fprintf(&b, "%-8s %10d %12.0f %10.0f %10.0f %10.0f %8d\n", row.name, row.p.Ops, row.p.OpsPerSec, row.p.P50us, row.p.P99us, row.p.P999us, row.p.Errors)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
