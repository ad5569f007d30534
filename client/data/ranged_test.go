package data

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// storeStats sums the counters of the cluster's chunk stores: BytesRead
// is what the dataplanes read for their callers.
func (c *testCluster) storeStats(t *testing.T) chunkstore.Stats {
	t.Helper()
	var sum chunkstore.Stats
	for _, d := range c.dps {
		st, err := d.store.Stats()
		if err != nil {
			t.Fatal(err)
		}
		sum.BytesRead += st.BytesRead
		sum.CorruptReads += st.CorruptReads
	}
	return sum
}

// dataplaneOf returns the test dataplane serving addr.
func (c *testCluster) dataplaneOf(t *testing.T, addr string) testDataplane {
	t.Helper()
	for _, d := range c.dps {
		if d.srv.Addr().String() == addr {
			return d
		}
	}
	t.Fatalf("no dataplane at %s", addr)
	return testDataplane{}
}

// TestSmallReadsFetchTheirRange: a read of part of one shard asks the
// dataplane for those bytes only — the chunk stores read exactly the bytes
// asked, not the shard (64 KiB here) — and returns the written bytes,
// zeros past a shard's stored end included. A read of a whole shard reads
// that shard (checked end to end) and one across shards the stripe.
func TestSmallReadsFetchTheirRange(t *testing.T) {
	c := newCluster(t)
	r := rand.New(rand.NewPCG(21, 22))
	in, want := c.writtenFile(t, "range", 4, r)
	unit, sb := int(in.Layout.StripeUnit), int(in.Layout.StripeBytes())
	ctx := context.Background()
	dc := c.uncachedClient(t)
	defer dc.Close()
	f, err := dc.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	read := func(off, n int) {
		t.Helper()
		got, err := f.Read(ctx, make([]byte, n), int64(off))
		if err != nil || !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("read of %d at %d: %d bytes, %v", n, off, len(got), err)
		}
	}
	before := c.storeStats(t)
	const reads = 40
	asked, lastEnd := 0, -1
	for i := 0; i < reads; i++ {
		n := 4096
		if i%4 == 3 {
			n = 1 + r.IntN(9000) // odd sizes at odd offsets too
		}
		off := r.IntN(len(want)/unit)*unit + r.IntN(unit-n+1)
		if i%4 != 3 {
			off &^= 4095
		}
		if off == lastEnd {
			off += 4096 // not a sequential read: that one reads ahead
		}
		read(off, n)
		asked += n
		lastEnd = off + n
	}
	st := dc.Stats()
	if st.RangesRead != reads || st.RangeBytes != uint64(asked) || st.ShardsRead != 0 || st.StripesFetched != 0 {
		t.Fatalf("%d small reads of %d bytes: %+v; want %d ranges of %d bytes, no shard or stripe reads", reads, asked, st, reads, asked)
	}
	if got := c.storeStats(t).BytesRead - before.BytesRead; got != uint64(asked) {
		t.Fatalf("the dataplanes read %d bytes for %d small reads of %d bytes", got, reads, asked)
	}

	// A whole shard: read alone, checked end to end.
	read(sb+2*unit, unit)
	if st := dc.Stats(); st.ShardsRead != 1 || st.RangesRead != reads || st.StripesFetched != 0 {
		t.Fatalf("a whole-shard read: %+v; want one shard read", st)
	}
	// Across two shards: the stripe.
	read(2*sb+unit-100, 200)
	if st := dc.Stats(); st.StripesFetched != 1 || st.RangesRead != reads {
		t.Fatalf("a read across shards: %+v; want one stripe fetch", st)
	}

	// A shard stored without its trailing zeros: a range that ends past
	// the stored bytes, and one that lies wholly past them, read zeros.
	in2 := c.create("trimmed")
	in2.Layout = in.Layout
	w, err := c.client().Open(in2)
	if err != nil {
		t.Fatal(err)
	}
	want = randBytes(r, sb)
	clear(want[10000:unit])
	if _, err := w.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	in2.Size = uint64(len(want))
	if f, err = dc.Open(in2); err != nil {
		t.Fatal(err)
	}
	before = c.storeStats(t)
	read(8192, 4096)
	read(32768, 4096)
	read(unit+5, 4096) // the next shard, whole
	if got := c.storeStats(t).BytesRead - before.BytesRead; got != 10000-8192+4096 {
		t.Fatalf("the dataplanes read %d bytes, want %d (the stored part of the first range, none of the second, all of the third)", got, 10000-8192+4096)
	}
}

// flipOnDisk flips a byte of the device file at dev where the 64 bytes of
// pat are stored, at offset at from their start: damage the chunk store
// finds with its per-block CRC32C.
func flipOnDisk(t *testing.T, dev string, pat []byte, at int) {
	t.Helper()
	fd, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	buf := make([]byte, 8<<20)
	for pos := int64(0); ; pos += int64(len(buf) - len(pat)) {
		n, err := fd.ReadAt(buf, pos)
		if i := bytes.Index(buf[:n], pat); i >= 0 {
			b := []byte{buf[i+at] ^ 0x5a}
			if i+at >= n {
				t.Fatal("the byte to flip lies past the piece read")
			}
			if _, err := fd.WriteAt(b, pos+int64(i+at)); err != nil {
				t.Fatal(err)
			}
			if err := fd.Sync(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err == io.EOF || n < len(buf) {
			t.Fatalf("%d bytes of the shard not found on %s", len(pat), dev)
		}
	}
}

// TestSmallReadFallsBack: a small read whose range cannot be read — its
// block corrupted on disk (the store answers a corruption error), the
// shard replaced by another version, the shard missing, its dataplane
// down — still returns the written bytes, through the stripe, rebuilt
// from the other shards; and the rebuilt stripe, once cached, serves the
// next small reads of that stripe without a dataplane read.
func TestSmallReadFallsBack(t *testing.T) {
	c := newCluster(t)
	r := rand.New(rand.NewPCG(31, 32))
	in, want := c.writtenFile(t, "fallback", 4, r)
	unit, sb := int(in.Layout.StripeUnit), int(in.Layout.StripeBytes())
	ctx := context.Background()
	svs, _, err := c.mc.Stripes(ctx, in.Ino, 0, 10)
	if err != nil || len(svs) != 4 {
		t.Fatalf("stripes %v, %v", svs, err)
	}
	dc := c.client()
	f, err := dc.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	read := func(f *File, off, n int) {
		t.Helper()
		got, err := f.Read(ctx, make([]byte, n), int64(off))
		if err != nil || !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("read of %d at %d: %d bytes, %v", n, off, len(got), err)
		}
	}
	place := func(s uint64) []string {
		t.Helper()
		addrs, err := c.topo.place(uint64(in.Ino), s)
		if err != nil {
			t.Fatal(err)
		}
		return addrs
	}
	expect := func(what string, ranges, stripes, bad uint64) {
		t.Helper()
		if st := dc.Stats(); st.RangesRead != ranges || st.StripesFetched != stripes || st.BadShards != bad {
			t.Fatalf("%s: %+v; want %d ranges, %d stripe fetches, %d bad shards", what, st, ranges, stripes, bad)
		}
	}

	// Stripe 1, shard 2: a byte of its block at shard offset 8192+100
	// flipped on the dataplane's disk.
	start := sb + 2*unit + 8192
	flipOnDisk(t, c.dataplaneOf(t, place(1)[2]).dev, want[start:start+64], 100)
	corrupt := c.storeStats(t).CorruptReads
	read(f, start, 4096)
	expect("a corrupted range", 1, 1, 1)
	if n := c.storeStats(t).CorruptReads - corrupt; n != 2 {
		t.Fatalf("the stores met %d corrupt reads, want 2 (the range, then the shard in the stripe read)", n)
	}
	// The rebuilt stripe is at hand: this file's recent stripes, and the
	// shared cache for another open of the file.
	read(f, sb+3*unit+20, 4096)
	dc.cache.Wait()
	f2, err := dc.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	read(f2, start+4096, 4096)
	expect("reads of the rebuilt stripe", 1, 1, 1)

	// Stripe 2, shard 3: another version stored under its chunk id.
	v := svs[2].Version
	addrs := place(2)
	dp := dataplane.NewClient(addrs[3], netio.ClientOptions{})
	defer dp.Close()
	other := encodeShard(nil, uint32(unit), randBytes(r, unit))
	if err := dp.WriteShard(ctx, chunkID(in.Ino, 2, 3, v), v+1<<ZeroMaskBits, 1, other); err != nil {
		t.Fatal(err)
	}
	read(f, 2*sb+3*unit+4096, 4096)
	expect("a range of another version", 2, 2, 2)

	// Stripe 3, shard 0: missing.
	v = svs[3].Version
	addrs = place(3)
	dp0 := dataplane.NewClient(addrs[0], netio.ClientOptions{})
	defer dp0.Close()
	if err := dp0.DeleteShard(ctx, chunkID(in.Ino, 3, 0, v), v, 1); err != nil {
		t.Fatal(err)
	}
	read(f, 3*sb+12288, 4096)
	expect("a range of a missing shard", 3, 3, 3)

	// Stripe 0, shard 1: its dataplane down (two shards of every stripe
	// with it; stripe 0 keeps four).
	down := c.dataplaneOf(t, place(0)[1])
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := down.srv.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	read(f, unit+50000, 4096)
	if st := dc.Stats(); st.RangesRead != 4 || st.StripesFetched != 4 || st.BadShards < 4 {
		t.Fatalf("a range on a dataplane that is down: %+v; want 4 ranges, 4 stripe fetches, at least 4 bad shards", st)
	}
}
