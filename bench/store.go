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
// --bs chunks (chunk i is the block at offset i × bs). Each job keeps
// --iodepth requests in flight through the store's asynchronous calls
// (PutAsync, GetAsync), as the dataplane's event loops use the store and as
// fio keeps its queue full from one thread: see runStoreJob.
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

// RunJob runs the job with --iodepth requests in flight (runStoreJob).
func (t *storeTarget) RunJob(job *Job) error {
	err := runStoreJob(t, job)
	job.EndMeasure()
	if err == nil && job.ReadBack() {
		err = readBackChunks(t, job)
	}
	return err
}

// storeSlot is one of a job's --iodepth chains of I/Os: it owns a worker
// and a buffer, and has at most one request in the store at a time. The
// completion callback of each request records it and issues the slot's
// next one, so a slot's state is only ever touched by one callback at a
// time (the store's inbox orders them) and no goroutine has to be woken to
// keep the queue full.
type storeSlot struct {
	t     *storeTarget
	w     *Worker
	buf   []byte
	io    IO
	id    chunkstore.ID
	start int64
	tries int
	err   error
	done  chan<- *storeSlot // receives the slot once its chain has ended
	onPut func(error)
	onGet func(int, uint64, error)
}

// runStoreJob runs job as --iodepth slots and waits for every one to end.
func runStoreJob(t *storeTarget, job *Job) error {
	spec := job.Spec
	done := make(chan *storeSlot, spec.IODepth)
	started := 0
	var err error
	for g := 0; g < spec.IODepth; g++ {
		w, werr := job.NewWorker()
		if werr != nil {
			err = werr
			break
		}
		sl := &storeSlot{t: t, w: w, buf: make([]byte, spec.BlockSize), done: done}
		fillPattern(sl.buf)
		sl.onPut = sl.putDone
		sl.onGet = sl.getDone
		started++
		sl.next()
	}
	for ; started > 0; started-- {
		err = errors.Join(err, (<-done).err)
	}
	return err
}

// next issues the slot's next I/O, or ends the chain when the worker has
// no more. It runs on the caller's goroutine for the first I/O and on a
// partition's goroutine, from a completion callback, after that.
func (sl *storeSlot) next() {
	io, ok := sl.w.NextIO() // never a sync: a store spec has none (its puts are durable)
	if !ok {
		sl.done <- sl
		return
	}
	sl.io, sl.tries = io, 0
	sl.id = chunkstore.ID{Lo: uint64(io.Off / int64(len(sl.buf)))}
	if io.Kind == IOWrite {
		sl.w.Stamp(sl.buf, io.Off)
	}
	sl.start = Now()
	sl.issue()
}

// issue hands the slot's I/O to the store. The store refuses at once only
// when a partition's inbox is full (it holds far more than any --iodepth)
// or the store is closing; a goroutine then retries the busy case so a
// callback never blocks.
func (sl *storeSlot) issue() {
	var err error
	if sl.io.Kind == IOWrite {
		err = sl.t.store.PutAsync(sl.id, sl.t.version.Add(1), sl.buf, sl.onPut)
	} else {
		err = sl.t.store.GetAsync(sl.id, 0, sl.buf, sl.onGet)
	}
	switch {
	case err == nil:
	case errors.Is(err, chunkstore.ErrBusy) && sl.tries < maxStoreTries:
		sl.tries++
		go func() {
			time.Sleep(time.Millisecond)
			sl.issue()
		}()
	default:
		sl.fail(err)
	}
}

// maxStoreTries bounds the retries of one I/O (ErrBusy, ErrStaleVersion).
const maxStoreTries = 8

func (sl *storeSlot) fail(err error) {
	verb := "get"
	if sl.io.Kind == IOWrite {
		verb = "put"
	}
	sl.err = fmt.Errorf("%s chunk %d: %w", verb, sl.id.Lo, err)
	sl.done <- sl
}

// putDone completes a put: retried at a fresh version when a concurrent
// put of the same chunk committed a higher one first.
func (sl *storeSlot) putDone(err error) {
	if errors.Is(err, chunkstore.ErrStaleVersion) && sl.tries < maxStoreTries {
		sl.tries++
		sl.issue()
		return
	}
	if err != nil {
		sl.fail(err)
		return
	}
	d := Now() - sl.start
	sl.w.Complete(sl.io, d, d)
	sl.next()
}

func (sl *storeSlot) getDone(n int, _ uint64, err error) {
	switch {
	case err != nil:
		sl.fail(err)
		return
	case n != len(sl.buf):
		sl.fail(fmt.Errorf("%d bytes, want %d", n, len(sl.buf)))
		return
	}
	d := Now() - sl.start
	if sl.io.Verify {
		sl.w.Check(sl.buf, sl.io.Off)
	}
	sl.w.Complete(sl.io, d, d)
	sl.next()
}

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
