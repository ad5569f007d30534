package data

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// TestSmallFileBuffers: a small file's stripe buffer holds only what was
// written (it does not cost a whole stripe), and every read of it — from
// the write buffer, from the cache after the flush, from the dataplanes in
// a new client — answers the written bytes and zeros in the holes; writes
// that grow it past the small-file size, a truncate into it and a sparse
// write after the end read as a local file would.
func TestSmallFileBuffers(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	in := c.create("small")
	dc := c.client()
	f := c.open(dc, in.Ino)
	sb := int(f.sb)
	var want []byte
	write := func(off, n int) {
		t.Helper()
		b := randBytes(r, n)
		if _, err := f.WriteAt(ctx, b, int64(off)); err != nil {
			t.Fatal(err)
		}
		if end := off + n; end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[off:], b)
	}
	check := func(what string, g *File) {
		t.Helper()
		if got := readAll(t, g); !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes read, %d written, or they differ", what, len(got), len(want))
		}
		// A read across the end of the buffered or stored bytes and a
		// small one in a hole.
		for _, at := range []int{0, len(want) / 2, len(want) - 1, 100000 % len(want)} {
			p := bytes.Repeat([]byte{0xee}, 5000)
			n, err := g.ReadAt(ctx, p, int64(at))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p[:n], want[at:min(at+5000, len(want))]) {
				t.Fatalf("%s: read of 5000 at %d differs", what, at)
			}
		}
	}

	write(0, 7000)
	write(20000, 3000) // a hole between
	f.mu.Lock()
	held := len(f.dirty[0])
	f.mu.Unlock()
	if held >= sb/8 {
		t.Fatalf("a 23000-byte file buffers %d bytes; want a small buffer, not the %d-byte stripe", held, sb)
	}
	check("buffered", f)
	// A write in the next stripe: stripe 0's bytes past its buffer, up to
	// the new size, read as zeros.
	write(sb+500, 10)
	check("next stripe, buffered", f)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("flushed, cached", f)
	check("new client", c.open(c.client(), in.Ino))

	// Grown past the small-file size (read-modify-write of the stored
	// stripe), then a second stripe written sparsely.
	write(sb/8+100, 5000)
	write(sb+1000, 10)
	check("grown, buffered", f)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("grown, new client", c.open(c.client(), in.Ino))

	// Truncate into the first stripe, then a small write past the end.
	if _, err := f.Truncate(ctx, 21000, meta.SetAttr{}); err != nil {
		t.Fatal(err)
	}
	want = want[:21000]
	write(30000, 100)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("truncated, new client", c.open(c.client(), in.Ino))
}

// TestStripeDataShort: a short flat stripe reads zeros past its bytes,
// whole shards or not, and view refuses what is not in the buffer.
func TestStripeDataShort(t *testing.T) {
	d := flatStripe([]byte{1, 2, 3, 4, 5}, 4, 3) // 3 shards of 4 bytes, 5 stored
	dst := bytes.Repeat([]byte{9}, 20)
	if n := d.copyAt(dst, 2); n != 10 || !bytes.Equal(dst[:10], []byte{3, 4, 5, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("copyAt: %d %v", n, dst)
	}
	if b, ok := d.view(4, 1); !ok || b[0] != 5 {
		t.Fatalf("view in the buffer: %v %v", b, ok)
	}
	if _, ok := d.view(4, 2); ok {
		t.Fatal("view past the buffer's end answered")
	}
	if _, ok := d.view(12, 1); ok {
		t.Fatal("view past the stripe answered")
	}
}
