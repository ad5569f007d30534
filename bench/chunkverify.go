package bench

import (
	"errors"
	"fmt"
	"sync"

	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// readBackChunks gets every chunk the job wrote, with --iodepth gets in
// flight, and checks its verify=crc32c stamps (not measured).
func readBackChunks(svc chunkService, job *Job) error {
	bs := job.Spec.BlockSize
	offs := make(chan int64, 256)
	stop := make(chan struct{})
	go func() {
		defer close(offs)
		job.WrittenRuns(bs*256, func(off int64, n int) bool {
			for o := off; o < off+int64(n); o += int64(bs) {
				select {
				case offs <- o:
				case <-stop:
					return false
				}
			}
			return true
		})
	}()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		once     sync.Once
	)
	v := job.verify
	for range job.Spec.IODepth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			var st VerifyStats
			defer func() { job.addVerify(&st) }()
			for off := range offs {
				id := chunkstore.ID{Lo: uint64(off / int64(bs))}
				n, err := svc.get(id, buf)
				if err == nil && n != bs {
					err = fmt.Errorf("%d bytes, want %d", n, bs)
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, fmt.Errorf("verify: reading back chunk %d: %w", id.Lo, err))
					mu.Unlock()
					once.Do(func() { close(stop) })
					return
				}
				v.check(buf, off, &st)
			}
		}()
	}
	wg.Wait()
	once.Do(func() { close(stop) })
	for range offs { // let the producer finish
	}
	return firstErr
}
