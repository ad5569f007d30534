package dataplane

import (
	"bytes"
	"testing"

	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// FuzzDecodeRequest feeds arbitrary payloads to every request decoder (and
// the client's reply decoders): none may panic, and whatever decodes
// re-encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	id := chunkstore.ID{Hi: 1, Lo: 2}
	f.Add(uint8(OpWriteShard), appendWriteReq(nil, writeReq{ID: id, Version: 3, Epoch: 4, Data: []byte("data")}))
	f.Add(uint8(OpWriteShard), make([]byte, writeHdrSize))
	f.Add(uint8(OpReadShard), appendReadReq(nil, readReq{ID: id, Offset: 5, Length: 4096}))
	f.Add(uint8(OpReadShard), appendReadReq(nil, readReq{ID: id, Offset: chunkstore.MaxChunkSize, Length: 1}))
	f.Add(uint8(OpDeleteShard), appendDeleteReq(nil, deleteReq{ID: id, Version: 6, Epoch: 7}))
	f.Add(uint8(OpStatShard), make([]byte, statReqSize))
	f.Add(uint8(OpListShards), appendListReq(nil, listReq{From: id, Limit: 10}))
	f.Add(uint8(OpListShards), appendListReq(nil, listReq{From: id, Limit: 0}))
	f.Add(uint8(OpStats), []byte{})
	f.Add(uint8(OpStats), appendStatsResp(nil, Stats{Stats: chunkstore.Stats{Puts: 1}, Epoch: 3}))
	f.Add(uint8(OpListShards), appendListResp(nil, []chunkstore.Info{{ID: id, Version: 1, Length: 2}}))
	f.Add(uint8(OpStatShard), appendStatResp(nil, chunkstore.Info{Version: 9, Length: 10}))
	f.Fuzz(func(t *testing.T, op uint8, p []byte) {
		switch (op - uint8(OpWriteShard)) % 6 {
		case 0:
			if r, err := decodeWriteReq(p); err == nil && !bytes.Equal(appendWriteReq(nil, r), p) {
				t.Fatal("write request does not round-trip")
			}
		case 1:
			if r, err := decodeReadReq(p); err == nil && !bytes.Equal(appendReadReq(nil, r), p) {
				t.Fatal("read request does not round-trip")
			}
		case 2:
			if r, err := decodeDeleteReq(p); err == nil && !bytes.Equal(appendDeleteReq(nil, r), p) {
				t.Fatal("delete request does not round-trip")
			}
		case 3:
			if id, err := decodeStatReq(p); err == nil && !bytes.Equal(getIDBytes(id), p) {
				t.Fatal("stat request does not round-trip")
			}
			if info, err := decodeStatResp(chunkstore.ID{}, p); err == nil && !bytes.Equal(appendStatResp(nil, info), p) {
				t.Fatal("stat reply does not round-trip")
			}
		case 4:
			if r, err := decodeListReq(p); err == nil && !bytes.Equal(appendListReq(nil, r), p) {
				t.Fatal("list request does not round-trip")
			}
			if page, err := decodeListResp(p, MaxListLimit); err == nil && !bytes.Equal(appendListResp(nil, page), p) {
				t.Fatal("list reply does not round-trip")
			}
		case 5:
			if st, err := decodeStatsResp(p); err == nil && len(p) == 2+8*len(statsFields(&st)) && !bytes.Equal(appendStatsResp(nil, st), p) {
				t.Fatal("stats reply does not round-trip")
			}
		}
	})
}

func getIDBytes(id chunkstore.ID) []byte {
	b := make([]byte, idSize)
	putID(b, id)
	return b
}
