package netio

import (
	"context"
	"sync"
	"testing"
	"time"
)

// benchEcho runs b.N echo calls of size bytes with inflight calls
// outstanding at once, from inflight goroutines.
func benchEcho(b *testing.B, size, inflight int) {
	s, _ := startServer(b, ServerOptions{EventLoops: 1})
	c := newClient(b, ClientOptions{ConnsPerAddr: 2, MaxInFlightPerConn: 128})
	addr := s.Addr().String()
	payload := make([]byte, size)
	// Warm the connections and pools.
	for range 2 * inflight {
		if _, err := c.Call(context.Background(), addr, opEcho, payload, nil, false); err != nil {
			b.Fatal(err)
		}
	}
	var next sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range inflight {
		next.Add(1)
		go func() {
			defer next.Done()
			resp := make([]byte, 0, size)
			for range work {
				if _, err := c.Call(context.Background(), addr, opEcho, payload, resp, false); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	next.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

func BenchmarkEcho4KiB32InFlight(b *testing.B) { benchEcho(b, 4<<10, 32) }
func BenchmarkEcho1MiB4InFlight(b *testing.B)  { benchEcho(b, 1<<20, 4) }
