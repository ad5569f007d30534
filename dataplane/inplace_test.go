package dataplane

import (
	"bytes"
	"errors"
	"testing"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// TestReadShardInPlace: the chunk's bytes land in the caller's frame
// after ReadReplyHeader, Verify accepts them with the CRC of any tail and
// refuses a wrong one, and a missing chunk is an error as for ReadShard.
func TestReadShardInPlace(t *testing.T) {
	_, _, addr := startTest(t, Config{}, true)
	ctx := ctxT(t)
	cl := NewClient(addr, netio.ClientOptions{})
	defer cl.Close()
	for _, size := range []int{1, 4096 + 17, chunkstore.MaxChunkSize} {
		id := chunkstore.ID{Hi: 9, Lo: uint64(size)}
		data := pattern(id, 3, size)
		if err := cl.WriteShard(ctx, id, 3, 0, data); err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, ReadReplyHeader+size+100)
		r, err := cl.ReadShardInPlace(ctx, id, 0, frame)
		if err != nil || r.Version != 3 || !bytes.Equal(r.Data, data) {
			t.Fatalf("size %d: %d bytes, version %d, %v", size, len(r.Data), r.Version, err)
		}
		if &r.Data[0] != &frame[ReadReplyHeader] {
			t.Fatal("not read in place")
		}
		for _, head := range []int{0, size / 2, size} {
			if err := r.Verify(head, netio.Checksum(r.Data[head:])); err != nil {
				t.Fatalf("size %d head %d: %v", size, head, err)
			}
		}
		if err := r.Verify(0, netio.Checksum(r.Data)^1); !errors.Is(err, netio.ErrBadPayloadCRC) {
			t.Fatalf("a wrong CRC passed: %v", err)
		}
		r.Data[0] ^= 0xff // as if damaged on the way
		if err := r.Verify(0, netio.Checksum(r.Data)); !errors.Is(err, netio.ErrBadPayloadCRC) {
			t.Fatalf("damaged bytes passed: %v", err)
		}
	}
	if _, err := cl.ReadShardInPlace(ctx, chunkstore.ID{Hi: 9, Lo: 12345}, 0, make([]byte, 64)); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing chunk: %v", err)
	}
}

// TestWriteShardParts: a chunk written as prefix and data reads back
// joined; a wrong data CRC is refused and stores nothing.
func TestWriteShardParts(t *testing.T) {
	_, _, addr := startTest(t, Config{}, true)
	ctx := ctxT(t)
	cl := NewClient(addr, netio.ClientOptions{})
	defer cl.Close()
	prefix := []byte("sixteen byte hdr")
	for _, size := range []int{0, 100, chunkstore.MaxChunkSize - len(prefix)} {
		id := chunkstore.ID{Hi: 11, Lo: uint64(size)}
		data := pattern(id, 2, size)
		if err := cl.WriteShardParts(ctx, id, 2, 0, prefix, data, netio.Checksum(data)^1); err == nil {
			t.Fatalf("size %d: a wrong data CRC was accepted", size)
		}
		if _, err := cl.StatShard(ctx, id); !errors.Is(err, chunkstore.ErrNotFound) {
			t.Fatalf("size %d: the refused write stored something: %v", size, err)
		}
		if err := cl.WriteShardParts(ctx, id, 2, 0, prefix, data, netio.Checksum(data)); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		buf := make([]byte, len(prefix)+size+10)
		n, v, err := cl.ReadShard(ctx, id, 0, buf)
		if err != nil || v != 2 || !bytes.Equal(buf[:n], append(append([]byte(nil), prefix...), data...)) {
			t.Fatalf("size %d: read back %d bytes, version %d, %v", size, n, v, err)
		}
	}
}
