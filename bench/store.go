package bench

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/nvme/chunkstore"
)

func init() {
	RegisterTarget("store", "store:PATH  the ClaudeFS chunk store on a file or block device: Put/Get of --bs chunks, acknowledged only when durable (a file is laid out when absent)", openStore)
}

// storeTarget runs jobs against a chunk store: the working set is --size /
// --bs chunks (chunk i is the block at offset i × bs), each job runs
// --iodepth goroutines making synchronous Puts and Gets, so --iodepth
// requests are in flight per job, as with fio.
type storeTarget struct {
	store   *chunkstore.Store
	path    string
	chunks  int64
	version atomic.Uint64 // versions handed to Puts; start above any earlier run's
	logf    func(string, ...any)
}

// storeOverhead is the device size a store target lays out per byte of
// working set: a log-structured store needs free segments to write into
// while old versions are still on disk.
const storeOverhead = 3

func openStore(path string, spec *Spec, env *Env) (Target, error) {
	switch {
	case path == "":
		return nil, Usagef("--target=store:PATH: PATH is empty")
	case spec.Size == 0:
		return nil, Usagef("--target=store: needs --size (the working set: --size/--bs chunks)")
	case spec.BlockSize > chunkstore.MaxChunkSize:
		return nil, Usagef("--bs=%d: chunks are at most %d bytes", spec.BlockSize, chunkstore.MaxChunkSize)
	case spec.Offset != 0:
		return nil, Usagef("--offset: not meaningful for a store target")
	}
	devSize := max(storeOverhead*spec.Size, 256<<20)
	st, err := chunkstore.Open(path, chunkstore.Options{
		CreateSize: devSize,
		Engine:     spec.Engine,
		Logf:       env.Logf,
	})
	if err != nil {
		return nil, err
	}
	t := &storeTarget{store: st, path: path, chunks: spec.Size / int64(spec.BlockSize), logf: env.Logf}
	t.version.Store(uint64(time.Now().UnixNano()))
	if spec.Mode.Reads() {
		if err := populateChunks(t, "store:"+path, t.chunks, spec, env); err != nil {
			st.Close()
			return nil, err
		}
	}
	return t, nil
}

// put writes one chunk at a fresh version, retrying when a concurrent Put
// of the same chunk committed a higher version first.
func (t *storeTarget) put(id chunkstore.ID, buf []byte) error {
	for try := 0; ; try++ {
		err := t.store.Put(id, t.version.Add(1), buf)
		if err == nil || !errors.Is(err, chunkstore.ErrStaleVersion) || try == 8 {
			return err
		}
	}
}

func (t *storeTarget) String() string {
	return fmt.Sprintf("store:%s (%d partitions, %d chunks)", t.path, t.store.Partitions(), t.chunks)
}

// Close reports how well writes combined, then closes the store.
func (t *storeTarget) Close() error {
	if st, err := t.store.Stats(); err == nil && st.Batches > 0 {
		t.logf("store: %d durable appends, %.1f records and %s each on average; %d gets, %d corrupt reads",
			st.Batches, float64(st.BatchRecords)/float64(st.Batches), formatBinary(float64(st.BatchBytes)/float64(st.Batches)), st.Gets, st.CorruptReads)
	}
	return t.store.Close()
}

// RunJob runs the job as --iodepth goroutines making synchronous calls.
func (t *storeTarget) RunJob(job *Job) error { return runChunkJob(t, job) }

func (t *storeTarget) stat(id chunkstore.ID) (int, bool, error) {
	info, err := t.store.Stat(id)
	if errors.Is(err, chunkstore.ErrNotFound) {
		return 0, false, nil
	}
	return info.Length, err == nil, err
}

func (t *storeTarget) get(id chunkstore.ID, buf []byte) (int, error) {
	n, _, err := t.store.Get(id, 0, buf)
	return n, err
}
