package ioengine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudefs/claudefs/nvme/uring"
	"golang.org/x/sys/unix"
)

// TestConformanceServeLoop runs the shape the storage engine uses: owner
// goroutines (one engine each, on locked threads) sleep in Submit(1,
// timeout) and serve requests that other goroutines queue and announce with
// Wake. Every request does a real O_DIRECT read; none may be lost or wait
// for the sleep timeout.
func TestConformanceServeLoop(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			if kind == Uring {
				if err := uring.Available(); err != nil {
					t.Skipf("SKIPPING the io_uring engine: unavailable on this machine: %v", err)
				}
			}
			const owners, clients, requests, bs = 2, 3, 300, 4096
			dir := t.TempDir()
			fd := openFile(t, dir, "data", unix.O_RDWR|unix.O_DIRECT)
			src := mmapBuf(t, 64*bs)
			pattern(src, 3)
			if _, err := unix.Pwrite(fd, src, 0); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for o := range owners {
				inbox := make(chan chan int32, clients)
				var sleeping atomic.Bool
				engc := make(chan Engine, 1)
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { // the owner
					defer close(done)
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					e, err := New(kind, 8, t.Logf)
					if err != nil {
						t.Error(err)
						close(engc)
						return
					}
					defer e.Close()
					func() {
						if err := e.RegisterFiles([]int{fd}); err != nil {
							t.Error(err)
							return
						}
						buf := mmapBuf(t, 8*bs)
						if err := e.RegisterBuffers([][]byte{buf}); err != nil {
							t.Error(err)
							return
						}
						engc <- e
						replies := make([]chan int32, 8)
						free := []int{0, 1, 2, 3, 4, 5, 6, 7}
						out := make([]Completion, 8)
						for {
							for len(free) > 0 {
								var reply chan int32
								select {
								case reply = <-inbox:
								default:
								}
								if reply == nil {
									break
								}
								s := free[len(free)-1]
								free = free[:len(free)-1]
								replies[s] = reply
								op := Op{Opcode: OpRead, BufIndex: 0, Buf: buf[s*bs : (s+1)*bs], Off: int64(s%64) * bs, UserData: uint64(s)}
								if err := e.Prepare(&op); err != nil {
									t.Errorf("Prepare: %v", err)
									return
								}
							}
							if _, err := e.Submit(0, 0); err != nil {
								t.Errorf("Submit: %v", err)
								return
							}
							n := e.Reap(out)
							for _, c := range out[:n] {
								replies[c.UserData] <- c.Res
								free = append(free, int(c.UserData))
							}
							if n > 0 {
								continue
							}
							select {
							case <-stop:
								return
							default:
							}
							sleeping.Store(true)
							if len(inbox) == 0 || len(free) == 0 {
								if _, err := e.Submit(1, 2*time.Second); err != nil {
									t.Errorf("Submit(1): %v", err)
								}
							}
							sleeping.Store(false)
						}
					}()
				}()
				e, ok := <-engc
				if !ok {
					t.FailNow()
				}
				var cwg sync.WaitGroup
				for c := range clients {
					cwg.Add(1)
					go func() {
						defer cwg.Done()
						reply := make(chan int32, 1)
						for i := range requests {
							start := time.Now()
							inbox <- reply
							if sleeping.Load() {
								if err := e.Wake(); err != nil {
									t.Error(err)
								}
							}
							if res := <-reply; res != bs {
								t.Errorf("owner %d client %d request %d: res %d", o, c, i, res)
							}
							if el := time.Since(start); el > time.Second {
								t.Errorf("owner %d client %d request %d took %v: a wakeup or completion was lost", o, c, i, el)
							}
						}
					}()
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					cwg.Wait()
					close(stop)
					e.Wake()
					<-done
				}()
			}
			wg.Wait()
			runtime.GC()
		})
	}
}
