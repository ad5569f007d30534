package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/nvme"
	"golang.org/x/sys/unix"
)

// SmallFilesProfile is the built-in profile RunSmallFiles runs.
const SmallFilesProfile = "small-files"

// Bounds of a small-files run.
const (
	MaxSmallFiles       = 1_000_000
	maxSmallConcurrency = 1024
)

// SmallFiles configures a small-files run: Files files, each written whole
// (open with O_CREAT, write, fsync, close), then each stat'ed, read back
// (open, read, close) and unlinked, Concurrency files at a time.
type SmallFiles struct {
	Dir         string
	Files       int        // default 10000
	Sizes       []BSWeight // file sizes and weights, default 4k/40:16k/40:64k/20
	Concurrency int        // files in flight at once, default 32 (fio's openfiles)
	Buffered    bool       // no O_DIRECT
	NoFsync     bool       // skip the fsync before close (fio's fsync_on_close=0)
	Verify      bool       // check every byte read back
	Progress    bool       // a progress line on stderr
}

// SmallOp is one operation's figures in a small-files run.
type SmallOp struct {
	Op      string  `json:"op"` // create, write, fsync, close, stat, open, read, unlink
	Count   int64   `json:"count"`
	OpsPerS float64 `json:"ops_per_s"` // Count over the phase's elapsed time
	P50us   float64 `json:"lat_p50_us"`
	P99us   float64 `json:"lat_p99_us"`
	MaxUs   float64 `json:"lat_max_us"`
}

// SmallPhase is one pass over the files.
type SmallPhase struct {
	Phase     string    `json:"phase"` // write, stat, read, unlink
	ElapsedS  float64   `json:"elapsed_s"`
	FilesPerS float64   `json:"files_per_s"`
	OpsPerS   float64   `json:"ops_per_s"` // every operation of the phase
	Ops       []SmallOp `json:"ops"`
}

// SmallFilesResult is a finished small-files run (`--output-format=json`).
type SmallFilesResult struct {
	Profile     string       `json:"profile"`
	Target      string       `json:"target"`
	Files       int          `json:"files"`
	Bytes       int64        `json:"bytes"`
	Concurrency int          `json:"concurrency"`
	Direct      bool         `json:"direct"`
	Verified    int          `json:"verified_files"`
	Phases      []SmallPhase `json:"phases"`
}

// smallStats is one goroutine's recorders, by operation.
type smallStats map[string]*Histogram

func (s smallStats) record(op string, start int64) {
	h := s[op]
	if h == nil {
		nh := newHistogram()
		h = &nh
		s[op] = h
	}
	h.Record(Now() - start)
}

// RunSmallFiles runs the small-files workload in o.Dir (created if absent;
// the files are NAME small-files.0.N, removed by the last phase).
func RunSmallFiles(ctx context.Context, o SmallFiles, stderr io.Writer) (*SmallFilesResult, error) {
	if o.Files == 0 {
		o.Files = 10000
	}
	if o.Concurrency == 0 {
		o.Concurrency = 32
	}
	if o.Sizes == nil {
		o.Sizes = []BSWeight{{Size: 4 << 10, Percent: 40}, {Size: 16 << 10, Percent: 40}, {Size: 64 << 10, Percent: 20}}
	}
	switch {
	case o.Dir == "":
		return nil, Usagef("--target=dir:PATH: PATH is empty")
	case o.Files < 1 || o.Files > MaxSmallFiles:
		return nil, Usagef("--nrfiles=%d: must be 1..%d", o.Files, MaxSmallFiles)
	case o.Concurrency < 1 || o.Concurrency > maxSmallConcurrency:
		return nil, Usagef("--iodepth=%d (files at a time): must be 1..%d", o.Concurrency, maxSmallConcurrency)
	}
	var split [100]int32
	biggest, at := 0, 0
	for _, w := range o.Sizes {
		if !o.Buffered && w.Size%dirAlign != 0 {
			return nil, Usagef("file size %d: O_DIRECT needs a multiple of %d (or --direct=0)", w.Size, dirAlign)
		}
		for i := 0; i < w.Percent && at < 100; i++ {
			split[at] = int32(w.Size)
			at++
		}
		biggest = max(biggest, w.Size)
	}
	if at != 100 || biggest < 16 {
		return nil, Usagef("the file sizes' weights must add up to 100, every size at least 16 bytes")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("dir:%s: %w", o.Dir, err)
	}
	sizes := make([]int, o.Files)
	rng := uint64(0x5a11f11e5)
	res := &SmallFilesResult{Profile: SmallFilesProfile, Target: "dir:" + o.Dir, Files: o.Files, Concurrency: o.Concurrency, Direct: !o.Buffered}
	for i := range sizes {
		sizes[i] = int(split[splitmix64(&rng)%100])
		res.Bytes += int64(sizes[i])
	}
	name := func(i int) string { return filepath.Join(o.Dir, fmt.Sprintf("%s.0.%d", SmallFilesProfile, i)) }
	flags := 0
	if !o.Buffered {
		flags = syscall.O_DIRECT
	}
	var verified atomic.Int64
	phases := []struct {
		name string
		do   func(i int, buf, rbuf []byte, st smallStats) error
	}{
		{"write", func(i int, buf, _ []byte, st smallStats) error {
			t := Now()
			fd, err := unix.Open(name(i), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|flags, 0o644)
			if err != nil {
				return err
			}
			st.record("create", t)
			stampFile(buf[:sizes[i]], i)
			t = Now()
			if err := pwriteFull(fd, buf[:sizes[i]], 0); err != nil {
				unix.Close(fd)
				return err
			}
			st.record("write", t)
			if !o.NoFsync {
				t = Now()
				if err := unix.Fsync(fd); err != nil {
					unix.Close(fd)
					return err
				}
				st.record("fsync", t)
			}
			t = Now()
			err = unix.Close(fd)
			st.record("close", t)
			return err
		}},
		{"stat", func(i int, _, _ []byte, st smallStats) error {
			var s unix.Stat_t
			t := Now()
			if err := unix.Stat(name(i), &s); err != nil {
				return err
			}
			st.record("stat", t)
			if s.Size != int64(sizes[i]) {
				return fmt.Errorf("stat says %d bytes, %d were written", s.Size, sizes[i])
			}
			return nil
		}},
		{"read", func(i int, buf, rbuf []byte, st smallStats) error {
			t := Now()
			fd, err := unix.Open(name(i), unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
			if err != nil {
				return err
			}
			st.record("open", t)
			t = Now()
			err = preadFull(fd, rbuf[:sizes[i]], 0)
			if err == nil {
				st.record("read", t)
			}
			t = Now()
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
			st.record("close", t)
			if err == nil && o.Verify {
				stampFile(buf[:sizes[i]], i)
				if !bytes.Equal(rbuf[:sizes[i]], buf[:sizes[i]]) {
					return fmt.Errorf("verify: the file's content differs from what was written")
				}
				verified.Add(1)
			}
			return err
		}},
		{"unlink", func(i int, _, _ []byte, st smallStats) error {
			t := Now()
			if err := unix.Unlink(name(i)); err != nil {
				return err
			}
			st.record("unlink", t)
			return nil
		}},
	}
	for _, ph := range phases {
		p, err := runSmallPhase(ctx, ph.name, o, biggest, stderr, ph.do)
		if err != nil {
			return nil, err
		}
		res.Phases = append(res.Phases, p)
	}
	res.Verified = int(verified.Load())
	return res, nil
}

// stampFile fills buf with file i's content: the pattern, its first 8
// bytes the file number, so files differ and a misdirected read shows.
func stampFile(buf []byte, i int) {
	fillPattern(buf[:len(buf)/8*8])
	binary.LittleEndian.PutUint64(buf, uint64(i))
}

// smallOpOrder is the report order of the operations.
var smallOpOrder = []string{"create", "open", "write", "read", "fsync", "close", "stat", "unlink"}

// runSmallPhase runs do for every file, o.Concurrency at a time.
func runSmallPhase(ctx context.Context, phase string, o SmallFiles, biggest int, stderr io.Writer,
	do func(i int, buf, rbuf []byte, st smallStats) error) (SmallPhase, error) {
	var next, done atomic.Int64
	errs := make([]error, o.Concurrency)
	stats := make([]smallStats, o.Concurrency)
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < o.Concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mem, err := nvme.AllocAligned(2 * ((biggest + dirAlign - 1) / dirAlign * dirAlign))
			if err != nil {
				errs[g] = err
				return
			}
			defer nvme.FreeAligned(mem)
			buf, rbuf := mem[:len(mem)/2], mem[len(mem)/2:]
			st := smallStats{}
			stats[g] = st
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.Files {
					return
				}
				if err := do(i, buf, rbuf, st); err != nil {
					errs[g] = fmt.Errorf("small-files %s of file %d in %s: %w", phase, i, o.Dir, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	if o.Progress {
		go func() {
			line := newStatusLine(stderr)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					line.finish()
					return
				case <-t.C:
					line.update(fmt.Sprintf("small-files %s: %d/%d files [%s]", phase, done.Load(), o.Files, time.Since(start).Round(time.Second)))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return SmallPhase{}, err
	}
	if err := ctx.Err(); err != nil {
		return SmallPhase{}, fmt.Errorf("small-files %s: %w", phase, err)
	}
	p := SmallPhase{Phase: phase, ElapsedS: elapsed.Seconds(), FilesPerS: float64(o.Files) / elapsed.Seconds()}
	var all int64
	for _, op := range smallOpOrder {
		var h *Histogram
		for _, st := range stats {
			if sh := st[op]; sh != nil {
				if h == nil {
					nh := newHistogram()
					h = &nh
				}
				h.Merge(sh)
			}
		}
		if h == nil {
			continue
		}
		n := int64(h.Count())
		all += n
		p.Ops = append(p.Ops, SmallOp{Op: op, Count: n, OpsPerS: float64(n) / elapsed.Seconds(),
			P50us: float64(h.Percentile(50)) / 1e3, P99us: float64(h.Percentile(99)) / 1e3, MaxUs: float64(h.Max()) / 1e3})
	}
	p.OpsPerS = float64(all) / elapsed.Seconds()
	return p, nil
}

// WriteSmallFilesReport prints r in fio's spirit: per phase, files and
// operations per second and each operation's latency.
func WriteSmallFilesReport(w io.Writer, r *SmallFilesResult) error {
	var b strings.Builder
	mode := "O_DIRECT"
	if !r.Direct {
		mode = "buffered"
	}
	fmt.Fprintf(&b, "small-files: %s (%s): %d files, %s, %d at a time\n", r.Target, mode, r.Files, formatBinary(float64(r.Bytes)), r.Concurrency)
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "  %-6s: %9.0f files/s, %9.0f ops/s (%.2fs)\n", p.Phase, p.FilesPerS, p.OpsPerS, p.ElapsedS)
		for _, op := range p.Ops {
			fmt.Fprintf(&b, "    %-6s %9.0f ops/s  lat (usec): p50=%.1f p99=%.1f max=%.1f\n", op.Op, op.OpsPerS, op.P50us, op.P99us, op.MaxUs)
		}
	}
	if r.Verified > 0 {
		fmt.Fprintf(&b, "  verify: %d files read back equal to what was written\n", r.Verified)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
