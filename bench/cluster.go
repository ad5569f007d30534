package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/claudefs/claudefs/client/data"
	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
)

func init() {
	RegisterTarget("cluster", "cluster:ADDR[,ADDR…]  a ClaudeFS cluster through the native client, no FUSE (EC stripes straight to the dataplanes, the client's caches and write-back as a mount has them): one file per job in the root, named as fio does (/NAME.JOB.0), laid out when absent or short; ADDR is any control process's address (`cfs dev status --json` lists them)", openCluster)
}

// clusterOpTimeout bounds one read, write or flush of the native client
// (it retries busy dataplanes and degraded reads within it).
const clusterOpTimeout = time.Minute

// clusterTarget runs each job on its own file of the cluster, as the dir:
// target does on a mount: --iodepth goroutines per job making ReadAt and
// WriteAt calls on the job's file, a Flush (the client's fsync: every
// buffered stripe written and committed) after every --fsync writes of a
// goroutine and at end_fsync, and verify=crc32c reading back what it wrote.
// --direct is accepted either way: the native client has no page cache,
// only its own stripe cache and write-back buffer, which are part of what
// is measured, as they are on a mount.
type clusterTarget struct {
	addrs []string
	name  string
	size  int64 // each file's size: Offset + Size
	mc    *metaclient.Client
	dc    *data.Client
	files []*data.File // by job index
}

func openCluster(arg string, spec *Spec, env *Env) (Target, error) {
	var addrs []string
	for _, a := range strings.Split(arg, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	switch {
	case len(addrs) == 0:
		return nil, Usagef("--target=cluster:ADDR[,ADDR…]: no address (`cfs dev status --json` lists the control addresses)")
	case spec.Size == 0:
		return nil, Usagef("--target=cluster: needs --size (each job's file holds --offset + --size bytes)")
	case int64(spec.IODepth)*int64(spec.BlockSize) > maxDeviceBuffers:
		return nil, Usagef("--iodepth=%d × --bs=%d: a job's buffers are limited to %s", spec.IODepth, spec.BlockSize, formatBinary(maxDeviceBuffers))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc, err := metaclient.Dial(ctx, addrs, metaclient.Options{})
	if err != nil {
		return nil, fmt.Errorf("cluster:%s: %w", arg, err)
	}
	dc, err := data.New(mc, data.TopologyFromMeta(mc), data.Options{Logf: env.Logf})
	if err != nil {
		mc.Close()
		return nil, fmt.Errorf("cluster:%s: %w", arg, err)
	}
	t := &clusterTarget{addrs: addrs, name: spec.Name, size: spec.Offset + spec.Size, mc: mc, dc: dc}
	if _, _, err := dc.Capacity(ctx); err != nil {
		t.Close()
		return nil, fmt.Errorf("cluster:%s: the dataplanes are not reachable: %w", arg, err)
	}
	for j := 0; j < spec.NumJobs; j++ {
		f, err := t.open(j, env)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.files = append(t.files, f)
	}
	return t, nil
}

// fileName is job j's file: NAME.J.0 in the root, as fio names a job's
// first file.
func (t *clusterTarget) fileName(j int) string { return fmt.Sprintf("%s.%d.0", t.name, j) }

// open opens (creating it if absent) job j's file and lays it out to
// t.size bytes of written data (not a hole: reads must reach the
// dataplanes), appending to what is there, in whole stripes.
func (t *clusterTarget) open(j int, env *Env) (*data.File, error) {
	name := t.fileName(j)
	ctx, cancel := context.WithTimeout(context.Background(), clusterOpTimeout)
	defer cancel()
	in, _, err := t.mc.Create(ctx, meta.RootIno, name, 0o644, 0, metaclient.Owner{}, false)
	if err != nil {
		return nil, fmt.Errorf("cluster: create /%s: %w", name, err)
	}
	f, err := t.dc.Open(in)
	if err != nil {
		return nil, fmt.Errorf("cluster: open /%s: %w", name, err)
	}
	have := int64(f.Size())
	if have >= t.size {
		return f, nil
	}
	progress := env.LayoutProgress("cluster:/" + name)
	buf := make([]byte, 4<<20) // a whole stripe at EC 4+2 with 1 MiB units: no read-modify-write
	fillPattern(buf)
	for off := have; off < t.size; {
		n := min(int64(len(buf)), t.size-off)
		wctx, wcancel := context.WithTimeout(context.Background(), clusterOpTimeout)
		_, err := f.WriteAt(wctx, buf[:n], off)
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("cluster: laying out /%s: write at %d: %w", name, off, err)
		}
		off += n
		if progress != nil {
			progress(off-have, t.size-have)
		}
	}
	if err := f.Flush(ctx); err != nil {
		return nil, fmt.Errorf("cluster: laying out /%s: flush: %w", name, err)
	}
	return f, nil
}

func (t *clusterTarget) String() string {
	return fmt.Sprintf("cluster:%s (native client, one file per job in /)", strings.Join(t.addrs, ","))
}

// Close flushes nothing (every job flushed its writes or reported why not)
// and closes the clients.
func (t *clusterTarget) Close() error {
	err := t.dc.Close()
	return errors.Join(err, t.mc.Close())
}

// RunJob runs --iodepth goroutines on the job's file.
func (t *clusterTarget) RunJob(job *Job) error {
	spec := job.Spec
	f := t.files[job.Index]
	workers := make([]*Worker, spec.IODepth)
	for i := range workers {
		w, err := job.NewWorker()
		if err != nil {
			return err
		}
		workers[i] = w
	}
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = clusterWorker(f, workers[i], spec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if job.Writes() && spec.EndFsync {
		start := Now()
		if err := clusterFlush(f); err != nil {
			return fmt.Errorf("cluster: end_fsync /%s: %w", t.fileName(job.Index), err)
		}
		d := Now() - start
		workers[0].Complete(IO{Kind: IOSync}, d, d)
	}
	job.EndMeasure()
	if job.Writes() && !spec.EndFsync {
		// Without end_fsync the writes still reach the cluster before the
		// job ends, as a close would send them, but untimed.
		if err := clusterFlush(f); err != nil {
			return fmt.Errorf("cluster: flush /%s: %w", t.fileName(job.Index), err)
		}
	}
	if job.ReadBack() {
		return clusterReadBack(f, job, workers[0], make([]byte, spec.BlockSize))
	}
	return nil
}

func clusterFlush(f *data.File) error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterOpTimeout)
	defer cancel()
	return f.Flush(ctx)
}

// clusterWorker issues w's I/Os one at a time on f. Reads land in the
// first half of its buffer, writes go from the second (the pattern).
func clusterWorker(f *data.File, w *Worker, spec *Spec) error {
	buf := make([]byte, 2*spec.BlockSize)
	rbuf, wbuf := buf[:spec.BlockSize], buf[spec.BlockSize:]
	fillPattern(wbuf)
	for {
		io, ok := w.NextIO()
		if !ok {
			return nil
		}
		start := Now()
		ctx, cancel := context.WithTimeout(context.Background(), clusterOpTimeout)
		var err error
		switch io.Kind {
		case IORead:
			var n int
			n, err = f.ReadAt(ctx, rbuf[:io.Len], io.Off)
			if err == nil && n != io.Len {
				err = fmt.Errorf("short read: %d bytes (the file is %d bytes)", n, f.Size())
			}
			if err == nil && io.Verify {
				w.Check(rbuf[:io.Len], io.Off)
			}
		case IOWrite:
			if spec.Verify {
				w.Stamp(wbuf[:io.Len], io.Off)
			}
			_, err = f.WriteAt(ctx, wbuf[:io.Len], io.Off)
		case IOSync:
			err = f.Flush(ctx)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("cluster: %s of %d bytes at offset %d: %w", kindName(io.Kind), io.Len, io.Off, err)
		}
		d := Now() - start
		w.Complete(io, d, d)
	}
}

// clusterReadBack reads what the job wrote and checks it (verify=crc32c).
func clusterReadBack(f *data.File, job *Job, w *Worker, buf []byte) error {
	return readBackRuns(job, w, buf, func(b []byte, off int64) error {
		ctx, cancel := context.WithTimeout(context.Background(), clusterOpTimeout)
		defer cancel()
		n, err := f.ReadAt(ctx, b, off)
		if err == nil && n != len(b) {
			err = fmt.Errorf("short read: %d of %d bytes", n, len(b))
		}
		return err
	})
}
