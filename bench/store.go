package bench

import (
	"errors"
	"fmt"
	"sync"
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
		if err := t.populate(spec, env); err != nil {
			st.Close()
			return nil, err
		}
	}
	return t, nil
}

// populate writes every chunk of the working set that is missing or of
// another size, so reads find data (like fio laying out its file).
func (t *storeTarget) populate(spec *Spec, env *Env) error {
	progress := env.LayoutProgress(t.path)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
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
				if info, err := t.store.Stat(id); err != nil || info.Length != spec.BlockSize {
					if err := t.put(id, buf); err != nil {
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
		return fmt.Errorf("populating the store's working set: %w", firstErr)
	}
	return nil
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

// RunJob runs --iodepth goroutines, each with its own Worker and buffer.
func (t *storeTarget) RunJob(job *Job) error {
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

func (t *storeTarget) worker(w *Worker, bs int) error {
	buf := make([]byte, bs)
	fillPattern(buf)
	for {
		write, off, ok := w.Next()
		if !ok {
			return nil
		}
		id := chunkstore.ID{Lo: uint64(off / int64(bs))}
		start := Now()
		if write {
			if err := t.put(id, buf); err != nil {
				return fmt.Errorf("put chunk %d: %w", id.Lo, err)
			}
		} else {
			n, _, err := t.store.Get(id, 0, buf)
			if err != nil {
				return fmt.Errorf("get chunk %d: %w", id.Lo, err)
			}
			if n != bs {
				return fmt.Errorf("get chunk %d: %d bytes, want %d", id.Lo, n, bs)
			}
		}
		d := Now() - start
		w.Done(write, bs, d, d)
	}
}
