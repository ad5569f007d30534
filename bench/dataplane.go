package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	epoch   atomic.Uint64 // the dataplane's placement epoch, as last learnt
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
	st, err := c.Stats(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("dataplane %s: %w", addr, err)
	}
	t.epoch.Store(st.Epoch) // write at the dataplane's placement epoch, as a cluster client would
	if spec.Mode.Reads() {
		if err := populateChunks(t, "dataplane:"+addr, t.chunks, spec, env); err != nil {
			c.Close()
			return nil, err
		}
	}
	return t, nil
}

// write stores one shard at a fresh version, retrying when a concurrent
// write of the same shard committed a higher version first, the dataplane
// was busy, or its placement epoch moved on (it is asked for the new one).
func (t *dataplaneTarget) write(ctx context.Context, id chunkstore.ID, buf []byte) error {
	for try := 0; ; try++ {
		err := t.client.WriteShard(ctx, id, t.version.Add(1), t.epoch.Load(), buf)
		if errors.Is(err, dataplane.ErrStaleEpoch) && try < 8 {
			if st, serr := t.client.Stats(ctx); serr == nil {
				t.epoch.Store(st.Epoch)
			}
			continue
		}
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

// RunJob runs the job as --iodepth goroutines making synchronous calls.
func (t *dataplaneTarget) RunJob(job *Job) error { return runChunkJob(t, job) }

func (t *dataplaneTarget) stat(id chunkstore.ID) (int, bool, error) {
	info, err := t.client.StatShard(context.Background(), id)
	if errors.Is(err, chunkstore.ErrNotFound) {
		return 0, false, nil
	}
	return info.Length, err == nil, err
}

func (t *dataplaneTarget) put(id chunkstore.ID, buf []byte) error {
	return t.write(context.Background(), id, buf)
}

func (t *dataplaneTarget) get(id chunkstore.ID, buf []byte) (int, error) {
	n, _, err := t.client.ReadShard(context.Background(), id, 0, buf)
	return n, err
}
