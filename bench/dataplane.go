package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

func init() {
	RegisterTarget("dataplane", "dataplane:HOST:PORT  a running `cfs dataplane` over the network: WriteShard/ReadShard of --bs shards, acknowledged only when durable", openDataplane)
}

// dataplaneTarget runs jobs against a dataplane over the network: the
// working set is --size / --bs shards (shard i is the block at offset
// i × bs), each job runs --iodepth goroutines making synchronous calls,
// so --iodepth requests are in flight per job, as with fio.
type dataplaneTarget struct {
	client  *dataplane.Client
	addr    string
	chunks  int64
	version atomic.Uint64 // versions handed to writes; start above any earlier run's
	logf    func(string, ...any)
}

func openDataplane(addr string, spec *Spec, env *Env) (Target, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, Usagef("--target=dataplane:HOST:PORT: %q is not HOST:PORT", addr)
	}
	switch {
	case spec.Size == 0:
		return nil, Usagef("--target=dataplane: needs --size (the working set: --size/--bs shards)")
	case spec.BlockSize > chunkstore.MaxChunkSize:
		return nil, Usagef("--bs=%d: shards are at most %d bytes", spec.BlockSize, chunkstore.MaxChunkSize)
	case spec.Offset != 0:
		return nil, Usagef("--offset: not meaningful for a dataplane target")
	}
	inflight := spec.IODepth * spec.NumJobs
	// A connection per 32 calls in flight, and at least two: the server
	// serves each connection on one event loop, so one connection would
	// leave its other loops idle.
	conns := min(max(inflight/32, 2), 16)
	c := dataplane.NewClient(addr, netio.ClientOptions{
		ConnsPerAddr:       conns,
		MaxInFlight:        max(inflight, 64),
		MaxInFlightPerConn: 128,
	})
	t := &dataplaneTarget{client: c, addr: addr, chunks: spec.Size / int64(spec.BlockSize), logf: env.Logf}
	t.version.Store(uint64(time.Now().UnixNano()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Stats(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("dataplane %s: %w", addr, err)
	}
	if spec.Mode.Reads() {
		if err := t.populate(spec, env); err != nil {
			c.Close()
			return nil, err
		}
	}
	return t, nil
}

// populate writes every shard of the working set that is missing or of
// another size, so reads find data.
func (t *dataplaneTarget) populate(spec *Spec, env *Env) error {
	progress := env.LayoutProgress(t.addr)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	ctx := context.Background()
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, spec.BlockSize)
			fillPattern(buf)
			for {
				i := next.Add(1) - 1
				if i >= t.chunks {
					return
				}
				id := chunkstore.ID{Lo: uint64(i)}
				info, err := t.client.StatShard(ctx, id)
				if err != nil && !errors.Is(err, chunkstore.ErrNotFound) {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				if err != nil || info.Length != spec.BlockSize {
					if err := t.write(ctx, id, buf); err != nil {
						mu.Lock()
						firstErr = errors.Join(firstErr, err)
						mu.Unlock()
						return
					}
				}
				if d := done.Add(1); progress != nil && (d%4096 == 0 || d == t.chunks) {
					progress(d*int64(spec.BlockSize), t.chunks*int64(spec.BlockSize))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("populating the dataplane's working set: %w", firstErr)
	}
	return nil
}

// write stores one shard at a fresh version, retrying when a concurrent
// write of the same shard committed a higher version first, or the
// dataplane was busy.
func (t *dataplaneTarget) write(ctx context.Context, id chunkstore.ID, buf []byte) error {
	for try := 0; ; try++ {
		err := t.client.WriteShard(ctx, id, t.version.Add(1), 0, buf)
		if err == nil || try == 8 || !(errors.Is(err, chunkstore.ErrStaleVersion) || errors.Is(err, dataplane.ErrBusy)) {
			return err
		}
	}
}

func (t *dataplaneTarget) String() string {
	return fmt.Sprintf("dataplane:%s (%d shards)", t.addr, t.chunks)
}

// Close reports the dataplane store's figures, then closes the client.
func (t *dataplaneTarget) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := t.client.Stats(ctx); err == nil && st.Batches > 0 {
		t.logf("dataplane: %d durable appends, %.1f records each on average; %d gets, %d corrupt reads",
			st.Batches, float64(st.BatchRecords)/float64(st.Batches), st.Gets, st.CorruptReads)
	}
	return t.client.Close()
}

// RunJob runs --iodepth goroutines, each with its own Worker and buffer.
func (t *dataplaneTarget) RunJob(job *Job) error {
	spec := job.Spec
	errs := make(chan error, spec.IODepth)
	for g := 0; g < spec.IODepth; g++ {
		w, err := job.NewWorker()
		if err != nil {
			return err
		}
		go func() { errs <- t.worker(w, spec.BlockSize) }()
	}
	var err error
	for g := 0; g < spec.IODepth; g++ {
		err = errors.Join(err, <-errs)
	}
	return err
}

func (t *dataplaneTarget) worker(w *Worker, bs int) error {
	buf := make([]byte, bs)
	fillPattern(buf)
	ctx := context.Background()
	for {
		write, off, ok := w.Next()
		if !ok {
			return nil
		}
		id := chunkstore.ID{Lo: uint64(off / int64(bs))}
		start := Now()
		if write {
			if err := t.write(ctx, id, buf); err != nil {
				return fmt.Errorf("write shard %d: %w", id.Lo, err)
			}
		} else {
			n, _, err := t.client.ReadShard(ctx, id, 0, buf)
			if err != nil {
				return fmt.Errorf("read shard %d: %w", id.Lo, err)
			}
			if n != bs {
				return fmt.Errorf("read shard %d: %d bytes, want %d", id.Lo, n, bs)
			}
		}
		d := Now() - start
		w.Done(write, bs, d, d)
	}
}
