package dataplane

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// benchShards serves a store of n shards of size bytes over loopback and
// returns a client of it.
func benchShards(b *testing.B, n, size int) *Client {
	b.Helper()
	st, err := chunkstore.Open(filepath.Join(b.TempDir(), "dev"), chunkstore.Options{CreateSize: 512 << 20, Partitions: 1, SegmentSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(st, Config{Net: netio.ServerOptions{Addr: "127.0.0.1:0", EventLoops: 2, NoLockOSThread: true}})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	c := NewClient(s.Addr().String(), netio.ClientOptions{ConnsPerAddr: 2})
	b.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		_ = st.Close()
	})
	data := make([]byte, size)
	for i := range n {
		if err := c.WriteShard(context.Background(), chunkstore.ID{Lo: uint64(i)}, 1, 0, data); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// BenchmarkReadShard4KiB reads 4 KiB shards over loopback with 32 calls in
// flight. Its allocs/op counts the client's and the server's together, so
// it bounds the server's allocations per request from above.
func BenchmarkReadShard4KiB(b *testing.B) {
	const shards, inflight = 1024, 32
	c := benchShards(b, shards, 4096)
	var next atomic.Int64
	run := func(n int64) {
		var wg sync.WaitGroup
		for range inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					i := next.Add(1)
					if i > n {
						return
					}
					if _, _, err := c.ReadShard(context.Background(), chunkstore.ID{Lo: uint64(i*7919) % shards}, 0, buf); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	run(2000) // warm the pools
	next.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	run(int64(b.N))
}
