package data

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
)

// TestSequentialReadFetchesEachStripeOnce reads a file of many stripes in
// kernel-sized pieces through a client whose shared cache admits nothing,
// so only the file's recent stripes (readahead's) serve it: every stripe
// must be fetched from the dataplanes once. A reader that meets
// readahead's fetch of its stripe in flight used to add the stripe a
// second time to the recent list and push out the next ones, which were
// then fetched again.
func TestSequentialReadFetchesEachStripeOnce(t *testing.T) {
	c := newCluster(t)
	const stripes = 40
	in, want := c.writtenFile(t, "seq", stripes, rand.New(rand.NewPCG(7, 8)))
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		dc := c.uncachedClient(t)
		f, err := dc.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 0, len(want))
		p := make([]byte, 32<<10)
		for off := 0; off < len(want); off += len(p) {
			b, err := f.Read(ctx, p, int64(off))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("read back other bytes")
		}
		if n := dc.Stats().StripesFetched; n != stripes {
			t.Errorf("round %d: %d stripe fetches for %d stripes", round, n, stripes)
		}
		dc.Close()
	}
}

// TestRecentHoldsAStripeOnce: readers that fetch the same stripe at once
// (they share one fetch) leave one entry in the file's recent stripes.
func TestRecentHoldsAStripeOnce(t *testing.T) {
	c := newCluster(t)
	in, _ := c.writtenFile(t, "once", 3, rand.New(rand.NewPCG(9, 10)))
	ctx := context.Background()
	for round := 0; round < 5; round++ {
		dc := c.uncachedClient(t)
		f, err := dc.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		v, err := f.version(ctx, 1)
		f.mu.Unlock()
		if err != nil || v == 0 {
			t.Fatalf("version %#x, %v", v, err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := f.stripe(ctx, 1, v); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		f.mu.Lock()
		n := len(f.recent)
		f.mu.Unlock()
		if n != 1 {
			t.Fatalf("round %d: %d recent entries for one stripe", round, n)
		}
		dc.Close()
	}
}

// TestRandomReadsOneShard: small reads out of order each read their range
// of the one shard they lie in, not the stripe, and return the written
// bytes; with a shard lost they still do (through the stripe, rebuilt).
func TestRandomReadsOneShard(t *testing.T) {
	c := newCluster(t)
	r := rand.New(rand.NewPCG(11, 12))
	in, want := c.writtenFile(t, "rand", 4, r)
	sb := int(in.Layout.StripeBytes())
	ctx := context.Background()
	read := func(f *File, off, n int) {
		t.Helper()
		got, err := f.Read(ctx, make([]byte, n), int64(off))
		if err != nil || !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("read of %d at %d: %d bytes, %v", n, off, len(got), err)
		}
	}
	dc := c.uncachedClient(t)
	defer dc.Close()
	f, err := dc.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	const reads = 20
	for i := 0; i < reads; i++ {
		read(f, 4096+r.IntN(len(want)-8192)&^4095, 4096)
	}
	if st := dc.Stats(); st.RangesRead != reads || st.ShardsRead != 0 || st.StripesFetched != 0 {
		t.Fatalf("%d random 4 KiB reads: %d ranges, %d shard reads, %d stripe fetches; want %d, 0, 0", reads, st.RangesRead, st.ShardsRead, st.StripesFetched, reads)
	}
	// Lose data shard 1 of stripe 2: a read there goes through the stripe.
	svs, _, err := c.mc.Stripes(ctx, in.Ino, 0, 10)
	if err != nil || len(svs) != 4 {
		t.Fatalf("stripes %v, %v", svs, err)
	}
	addrs, err := c.topo.place(uint64(in.Ino), 2)
	if err != nil {
		t.Fatal(err)
	}
	dp := dataplane.NewClient(addrs[1], netio.ClientOptions{})
	defer dp.Close()
	if err := dp.DeleteShard(ctx, chunkID(in.Ino, 2, 1, svs[2].Version), svs[2].Version, 1); err != nil {
		t.Fatal(err)
	}
	read(f, 2*sb+unitOff(in.Layout, 1)+100, 4096)
	read(f, 4096, 100) // and others still a shard alone
}

func unitOff(l meta.Layout, i int) int { return i * int(l.StripeUnit) }

// writtenFile creates name with EC 4+2 and 64 KiB units, writes stripes
// whole stripes of bytes drawn from r through a client of its own and
// flushes them; it returns the inode (Size set) and the bytes.
func (c *testCluster) writtenFile(t *testing.T, name string, stripes int, r *rand.Rand) (meta.Inode, []byte) {
	t.Helper()
	in := c.create(name)
	in.Layout = meta.Layout{K: 4, M: 2, StripeUnit: 64 << 10}
	ctx := context.Background()
	w, err := c.client().Open(in)
	if err != nil {
		t.Fatal(err)
	}
	want := randBytes(r, stripes*int(in.Layout.StripeBytes()))
	if _, err := w.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	in.Size = uint64(len(want))
	return in, want
}

// uncachedClient is a client whose shared stripe cache admits nothing, so
// only a file's recent stripes serve repeated reads. The caller closes it.
func (c *testCluster) uncachedClient(t *testing.T) *Client {
	t.Helper()
	dc, err := New(c.mc, func(context.Context) (Topology, error) { return c.topo, nil }, Options{CacheBytes: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return dc
}
