package bench

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// chunkService is what the store: and dataplane: targets have in common:
// a working set of --size/--bs chunks (chunk i is the block at offset
// i × bs) kept by something that puts and gets whole chunks synchronously.
type chunkService interface {
	// stat reports chunk id's length; ok is false when it is absent.
	stat(id chunkstore.ID) (length int, ok bool, err error)
	// put stores buf as chunk id at a fresh version; it returns once the
	// chunk is durable.
	put(id chunkstore.ID, buf []byte) error
	// get reads chunk id into buf and returns the bytes read.
	get(id chunkstore.ID, buf []byte) (int, error)
}

// populateChunks writes every chunk of the working set that is missing or
// of another size (with verify=crc32c: every chunk, stamped), 32 at a
// time, so reads find data (like fio laying out its file). what names the
// target in progress lines and errors.
func populateChunks(svc chunkService, what string, chunks int64, spec *Spec, env *Env) error {
	bs := spec.BlockSize
	var v *verifier
	if spec.Verify {
		v = newVerifier(bs)
	}
	progress := env.LayoutProgress(what)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		firstErr = errors.Join(firstErr, err)
		mu.Unlock()
	}
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			fillPattern(buf)
			for {
				i := next.Add(1) - 1
				if i >= chunks {
					return
				}
				id := chunkstore.ID{Lo: uint64(i)}
				n, ok, err := svc.stat(id)
				if err != nil {
					fail(err)
					return
				}
				if !ok || n != bs || v != nil {
					if v != nil {
						v.stamp(buf, i*int64(bs))
					}
					if err := svc.put(id, buf); err != nil {
						fail(err)
						return
					}
				}
				if d := done.Add(1); progress != nil && (d%4096 == 0 || d == chunks) {
					progress(d*int64(bs), chunks*int64(bs))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("populating the working set of %s: %w", what, firstErr)
	}
	return nil
}

// runChunkJob runs a job as --iodepth goroutines, each with its own Worker
// and buffer making synchronous puts and gets, so --iodepth requests are in
// flight, as with fio.
func runChunkJob(svc chunkService, job *Job) error {
	spec := job.Spec
	errs := make(chan error, spec.IODepth)
	for g := 0; g < spec.IODepth; g++ {
		w, err := job.NewWorker()
		if err != nil {
			return err
		}
		go func() { errs <- chunkWorker(svc, w, spec.BlockSize) }()
	}
	var err error
	for g := 0; g < spec.IODepth; g++ {
		err = errors.Join(err, <-errs)
	}
	job.EndMeasure()
	if err == nil && job.ReadBack() {
		err = readBackChunks(svc, job)
	}
	return err
}

func chunkWorker(svc chunkService, w *Worker, bs int) error {
	buf := make([]byte, bs)
	fillPattern(buf)
	for {
		io, ok := w.NextIO()
		if !ok {
			return nil
		}
		id := chunkstore.ID{Lo: uint64(io.Off / int64(bs))}
		if io.Kind == IOWrite {
			w.Stamp(buf, io.Off)
		}
		start := Now()
		if io.Kind == IOWrite {
			if err := svc.put(id, buf); err != nil {
				return fmt.Errorf("put chunk %d: %w", id.Lo, err)
			}
		} else {
			n, err := svc.get(id, buf)
			if err != nil {
				return fmt.Errorf("get chunk %d: %w", id.Lo, err)
			}
			if n != bs {
				return fmt.Errorf("get chunk %d: %d bytes, want %d", id.Lo, n, bs)
			}
		}
		d := Now() - start
		if io.Verify {
			w.Check(buf, io.Off)
		}
		w.Complete(io, d, d)
	}
}
