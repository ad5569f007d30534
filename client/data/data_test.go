package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/controlplane/placement"
	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// testCluster is the real metadata shards and three real dataplanes (each on
// its own file-backed chunk store) in this process.
type testCluster struct {
	t    *testing.T
	mc   *metaclient.Client
	topo Topology
	dps  []testDataplane
}

// testDataplane is one of a testCluster's dataplanes.
type testDataplane struct {
	node, dev string // node id, the chunk store's device file
	srv       *dataplane.Server
	store     *chunkstore.Store
}

func newCluster(t *testing.T) *testCluster {
	t.Helper()
	h := newHosts(t, 3, 2)
	c := &testCluster{t: t, mc: h.client(metaclient.Options{})}
	c.topo = Topology{Map: placement.Map{Epoch: 1, K: 4, M: 2, PGs: 64}, Dataplanes: map[string]string{}}
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("n%d", i)
		dev := filepath.Join(t.TempDir(), "dev")
		st, err := chunkstore.Open(dev, chunkstore.Options{CreateSize: 512 << 20, Partitions: 1, SegmentSize: 32 << 20})
		if err != nil {
			t.Fatal(err)
		}
		s, err := dataplane.NewServer(st, dataplane.Config{Net: netio.ServerOptions{Addr: "127.0.0.1:0", EventLoops: 1}, Workers: 8})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Stop(ctx)
			_ = st.Close()
		})
		c.topo.Map.Devices = append(c.topo.Map.Devices, placement.Device{ID: node + "/dev0", Node: node})
		c.topo.Dataplanes[node] = s.Addr().String()
		c.dps = append(c.dps, testDataplane{node: node, dev: dev, srv: s, store: st})
	}
	return c
}

// client is a fresh data path client: its cache starts empty.
func (c *testCluster) client() *Client {
	c.t.Helper()
	dc, err := New(c.mc, func(context.Context) (Topology, error) { return c.topo, nil }, Options{Logf: c.t.Logf})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { dc.Close() })
	return dc
}

func (c *testCluster) create(name string) meta.Inode {
	c.t.Helper()
	in, _, err := c.mc.Create(context.Background(), meta.RootIno, name, 0o644, 0, metaclient.Owner{}, true)
	if err != nil {
		c.t.Fatal(err)
	}
	return in
}

func (c *testCluster) open(dc *Client, ino meta.Ino) *File {
	c.t.Helper()
	in, err := c.mc.GetAttr(context.Background(), ino)
	if err != nil {
		c.t.Fatal(err)
	}
	f, err := dc.Open(in)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

func readAll(t *testing.T, f *File) []byte {
	t.Helper()
	b := make([]byte, f.Size()+100)
	n, err := f.ReadAt(context.Background(), b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestWriteReadDegraded writes a file of several stripes through the write
// buffer, reads it back from a second client, then loses one shard of a
// stripe and corrupts another (a CRC32C mismatch): the bytes read are
// still the ones written. An overwrite (read-modify-write), a truncate into
// a stripe and a grow again read as a local file would.
func TestWriteReadDegraded(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	in := c.create("f")
	want := randBytes(r, 9<<20+12345) // two full stripes and a partial one
	w := c.open(c.client(), in.Ino)
	for off := 0; off < len(want); {
		n := min(len(want)-off, 1+r.IntN(300<<10))
		if _, err := w.WriteAt(ctx, want[off:off+n], int64(off)); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if got := readAll(t, w); !bytes.Equal(got, want) {
		t.Fatal("read-after-write in one client: bytes differ")
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rf := c.open(c.client(), in.Ino)
	if got := readAll(t, rf); !bytes.Equal(got, want) {
		t.Fatal("another client after flush: bytes differ")
	}
	// Read answers views of the stripe buffer where it can: the same bytes.
	for _, off := range []int{0, 1<<20 - 10, 3 << 20, 4<<20 + 5, len(want) - 100, len(want) - 5} {
		got, err := rf.Read(ctx, make([]byte, 128<<10), int64(off))
		if end := min(off+128<<10, len(want)); err != nil || !bytes.Equal(got, want[off:end]) {
			t.Fatalf("Read at %d: %d bytes, %v; want %d", off, len(got), err, end-off)
		}
	}

	// Degrade stripe 1: delete data shard 0, corrupt data shard 2.
	svs, _, err := c.mc.Stripes(ctx, in.Ino, 0, 10)
	if err != nil || len(svs) != 3 {
		t.Fatalf("stripes %v, %v: want 3", svs, err)
	}
	v := svs[1].Version
	addrs, err := c.topo.place(uint64(in.Ino), 1)
	if err != nil {
		t.Fatal(err)
	}
	dp0 := dataplane.NewClient(addrs[0], netio.ClientOptions{})
	defer dp0.Close()
	if err := dp0.DeleteShard(ctx, chunkID(in.Ino, 1, 0, v), v, 1); err != nil {
		t.Fatal(err)
	}
	dp2 := dataplane.NewClient(addrs[2], netio.ClientOptions{})
	defer dp2.Close()
	bad := encodeShard(nil, 1<<20, randBytes(r, 1<<20))
	bad[20] ^= 0xff // the CRC in the header no longer matches
	if err := dp2.WriteShard(ctx, chunkID(in.Ino, 1, 2, v), v, 1, bad); err != nil {
		t.Fatal(err)
	}
	rc := c.client()
	if got := readAll(t, c.open(rc, in.Ino)); !bytes.Equal(got, want) {
		t.Fatal("degraded read (one shard missing, one corrupted): bytes differ")
	}
	if st := rc.Stats(); st.BadShards != 2 {
		t.Fatalf("bad shards seen %d, want 2", st.BadShards)
	}
	// A third bad shard of the stripe is one too many: reading a lost
	// shard's bytes is an error, never wrong bytes; a small read of an
	// intact shard (its range read alone) still answers. The "corrupted"
	// shard was stored so, with valid per-block CRCs in the store: only a
	// read of the whole shard, checked against the writer's CRC, sees it
	// (a range of it reads as stored; see docs/architecture.md).
	dp4 := dataplane.NewClient(addrs[4], netio.ClientOptions{})
	defer dp4.Close()
	if err := dp4.DeleteShard(ctx, chunkID(in.Ino, 1, 4, v), v, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.open(c.client(), in.Ino).ReadAt(ctx, make([]byte, 10), 4<<20+10); !errors.Is(err, errUnreadable) {
		t.Fatalf("read of a lost shard with 3 of 6 shards lost: %v, want %v", err, errUnreadable)
	}
	if _, err := c.open(c.client(), in.Ino).ReadAt(ctx, make([]byte, 1<<20), 4<<20+2<<20); !errors.Is(err, errUnreadable) {
		t.Fatalf("read of a corrupted shard with 3 of 6 shards lost: %v, want %v", err, errUnreadable)
	}
	got := make([]byte, 10)
	if n, err := c.open(c.client(), in.Ino).ReadAt(ctx, got, 5<<20); err != nil || n != 10 || !bytes.Equal(got, want[5<<20:5<<20+10]) {
		t.Fatalf("small read of an intact shard with 3 of 6 lost: %d bytes, %v", n, err)
	}

	// Overwrite a few bytes in stripe 1: a read-modify-write that replaces
	// the broken version; the old version's shards are deleted.
	f := c.open(c.client(), in.Ino)
	patch := []byte("hello, stripe one")
	// Reading stripe 1 fails now, so the first write covers it whole.
	if _, err := f.WriteAt(ctx, want[4<<20:8<<20], 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(ctx, patch, 5<<20+7); err != nil {
		t.Fatal(err)
	}
	copy(want[5<<20+7:], patch)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c.open(c.client(), in.Ino)); !bytes.Equal(got, want) {
		t.Fatal("after overwrite: bytes differ")
	}
	dp1 := dataplane.NewClient(addrs[1], netio.ClientOptions{})
	defer dp1.Close()
	waitGone(t, dp1, chunkID(in.Ino, 1, 1, v))

	// Truncate into stripe 1, then grow: the cut bytes read as zeros.
	cut := uint64(5<<20 + 3)
	if _, err := f.Truncate(ctx, cut, meta.SetAttr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Truncate(ctx, 7<<20, meta.SetAttr{}); err != nil {
		t.Fatal(err)
	}
	want = append(want[:cut], make([]byte, 7<<20-cut)...)
	if got := readAll(t, c.open(c.client(), in.Ino)); !bytes.Equal(got, want) {
		t.Fatal("after truncate and grow: bytes differ")
	}
}

// waitGone waits for a replaced shard to be deleted (in the background).
func waitGone(t *testing.T, dp *dataplane.Client, id chunkstore.ID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := dp.StatShard(context.Background(), id)
		if errors.Is(err, chunkstore.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("old shard %v still there after 5 s (%v)", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSmallFileNoPadding: a 4 KiB file stores one data shard and two
// parity shards of 4 KiB each; the zero shards are implicit.
func TestSmallFileNoPadding(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	in := c.create("small")
	f := c.open(c.client(), in.Ino)
	want := bytes.Repeat([]byte("x"), 4096)
	if _, err := f.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	svs, _, err := c.mc.Stripes(ctx, in.Ino, 0, 10)
	if err != nil || len(svs) != 1 {
		t.Fatalf("stripes %v, %v", svs, err)
	}
	if zm := zeroMask(svs[0].Version); zm != 0b1110 {
		t.Fatalf("zero mask %06b, want 001110 (data shards 1-3 implicit)", zm)
	}
	addrs, _ := c.topo.place(uint64(in.Ino), 0)
	for _, i := range []int{0, 4, 5} {
		dp := dataplane.NewClient(addrs[i], netio.ClientOptions{})
		info, err := dp.StatShard(ctx, chunkID(in.Ino, 0, i, svs[0].Version))
		dp.Close()
		if err != nil || info.Length != headerSize+4096 {
			t.Fatalf("shard %d: %+v, %v: want %d bytes", i, info, err, headerSize+4096)
		}
	}
	if got := readAll(t, c.open(c.client(), in.Ino)); !bytes.Equal(got, want) {
		t.Fatal("bytes differ")
	}
}

func TestShardCodec(t *testing.T) {
	b := encodeShard(nil, 8192, []byte("abc"))
	out := make([]byte, 8192)
	if err := decodeShard(b, 8192, out); err != nil || string(out[:3]) != "abc" || out[3] != 0 {
		t.Fatalf("round trip: %v %q", err, out[:4])
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		if err := decodeShard(c, 8192, out); !errors.Is(err, errBadShard) {
			t.Fatalf("byte %d flipped: %v, want a bad shard", i, err)
		}
	}
	if err := decodeShard(b[:5], 8192, out); !errors.Is(err, errBadShard) {
		t.Fatalf("short chunk: %v", err)
	}
}

// FuzzDecodeShard: any bytes from a dataplane decode or fail cleanly.
func FuzzDecodeShard(f *testing.F) {
	f.Add(encodeShard(nil, 4096, []byte("hello")), uint32(4096))
	f.Add([]byte{1, 2, 3}, uint32(4096))
	f.Fuzz(func(t *testing.T, b []byte, unit uint32) {
		if unit == 0 || unit > 1<<16 {
			return
		}
		out := make([]byte, unit)
		if err := decodeShard(b, unit, out); err == nil && len(b)-headerSize > int(unit) {
			t.Fatal("accepted a shard longer than its unit")
		}
	})
}
