package dataplane

import (
	"context"
	"fmt"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Client is a typed client of one dataplane. It is safe for concurrent use;
// calls share the netio client's connections.
//
// Retries: netio retries an idempotent call when the connection broke or
// an attempt timed out, not knowing whether the first attempt ran. Reads,
// stats, lists and Stats change nothing, so they are idempotent. A write is
// too: the store's Put of an equal version replaces the chunk with the same
// bytes, so running it twice leaves what running it once does. (If another
// writer stored a newer version in between, the retry is refused with
// ErrStaleVersion, which is also the truth about the write.) A delete is
// not retried: a second run of a delete that did land answers ErrNotFound,
// which would misreport the outcome; a caller that gets ErrConnBroken from
// DeleteShard should check with StatShard.
//
// Errors from the dataplane are *Error values that match chunkstore's and
// this package's sentinels with errors.Is; connection failures are netio's.
type Client struct {
	nc   *netio.Client
	addr string
	own  bool
}

// NewClient returns a client of the dataplane at addr ("host:port") on a
// netio client of its own, made with opts.
func NewClient(addr string, opts netio.ClientOptions) *Client {
	return &Client{nc: netio.NewClient(opts), addr: addr, own: true}
}

// ClientFor returns a client of the dataplane at addr that calls through
// nc, which it does not close.
func ClientFor(nc *netio.Client, addr string) *Client { return &Client{nc: nc, addr: addr} }

// Addr is the dataplane's address.
func (c *Client) Addr() string { return c.addr }

// Close closes the netio client when it is the Client's own.
func (c *Client) Close() error {
	if c.own {
		return c.nc.Close()
	}
	return nil
}

func (c *Client) call(ctx context.Context, op netio.Opcode, payload, resp []byte, idempotent bool) ([]byte, error) {
	p, err := c.nc.Call(ctx, c.addr, op, payload, resp, idempotent)
	return p, fromRemote(err)
}

// WriteShard stores data as chunk id at version, written under placement
// epoch; it returns once the data is durable on the dataplane.
func (c *Client) WriteShard(ctx context.Context, id chunkstore.ID, version, epoch uint64, data []byte) error {
	if len(data) == 0 || len(data) > chunkstore.MaxChunkSize {
		return fmt.Errorf("%w: write of shard %v: %d bytes of data, want 1 to %d", ErrBadRequest, id, len(data), chunkstore.MaxChunkSize)
	}
	buf := getBuf(writeHdrSize + len(data))
	defer putBuf(buf)
	p := appendWriteReq((*buf)[:0], writeReq{ID: id, Version: version, Epoch: epoch, Data: data})
	resp, err := c.call(ctx, OpWriteShard, p, nil, true)
	if err == nil && len(resp) != 0 {
		err = fmt.Errorf("dataplane: write reply of %d bytes, want none", len(resp))
	}
	return err
}

// WriteShardParts is WriteShard of the chunk prefix‖data, sent without
// joining or copying them (data goes out from the caller's buffer), with
// dataCRC, the CRC32C of data the caller computed anyway (for its own
// end-to-end check), standing in for a pass over data for the frame's
// CRC. A wrong dataCRC gets the write refused as damaged in transit.
func (c *Client) WriteShardParts(ctx context.Context, id chunkstore.ID, version, epoch uint64, prefix, data []byte, dataCRC uint32) error {
	if n := len(prefix) + len(data); n == 0 || n > chunkstore.MaxChunkSize {
		return fmt.Errorf("%w: write of shard %v: %d bytes of data, want 1 to %d", ErrBadRequest, id, n, chunkstore.MaxChunkSize)
	}
	if len(prefix) > maxWritePrefix {
		return fmt.Errorf("%w: write of shard %v: a prefix of %d bytes, at most %d", ErrBadRequest, id, len(prefix), maxWritePrefix)
	}
	var hb [writeHdrSize + maxWritePrefix]byte
	head := appendWriteReq(hb[:0], writeReq{ID: id, Version: version, Epoch: epoch, Data: prefix})
	resp, err := c.nc.CallParts(ctx, c.addr, OpWriteShard, head, data, dataCRC, nil, true)
	if err == nil && len(resp) != 0 {
		err = fmt.Errorf("dataplane: write reply of %d bytes, want none", len(resp))
	}
	return fromRemote(err)
}

// maxWritePrefix bounds WriteShardParts's prefix (a header the caller
// puts before its data), which is copied.
const maxWritePrefix = 64

// ReadShard reads len(buf) bytes of chunk id from offset off into buf and
// returns how many it read (fewer at the end of the chunk) and the
// chunk's version. A buf longer than chunkstore.MaxChunkSize reads at most
// that much.
func (c *Client) ReadShard(ctx context.Context, id chunkstore.ID, off int64, buf []byte) (n int, version uint64, err error) {
	if off < 0 || off >= chunkstore.MaxChunkSize {
		return 0, 0, fmt.Errorf("%w: read of shard %v: offset %d out of range [0, %d)", ErrBadRequest, id, off, chunkstore.MaxChunkSize)
	}
	if len(buf) > chunkstore.MaxChunkSize {
		buf = buf[:chunkstore.MaxChunkSize]
	}
	// The request comes from the buffer pool too: netio's Call lets its
	// payload escape, and an array here would be an allocation per read.
	rq := getBuf(readReqSize)
	defer putBuf(rq)
	req := appendReadReq((*rq)[:0], readReq{ID: id, Offset: uint64(off), Length: uint32(len(buf))})
	rb := getBuf(readHdrSize + len(buf))
	defer putBuf(rb)
	resp, err := c.call(ctx, OpReadShard, req, (*rb)[:0], true)
	if err != nil {
		return 0, 0, err
	}
	if len(resp) < readHdrSize || len(resp)-readHdrSize > len(buf) {
		return 0, 0, fmt.Errorf("dataplane: read reply of %d bytes for a read of %d", len(resp), len(buf))
	}
	return copy(buf, resp[readHdrSize:]), le.Uint64(resp), nil
}

// ReadReplyHeader is how many bytes a read reply carries before the
// chunk's bytes (the version): ReadShardInPlace's frame has room for them
// first.
const ReadReplyHeader = readHdrSize

// ShardReply is a read's outcome from ReadShardInPlace.
type ShardReply struct {
	// Data is the chunk's bytes read (fewer than asked at the end of the
	// chunk), in place in the caller's frame.
	Data []byte
	// Version is the chunk's version.
	Version uint64

	payload []byte // the whole reply: version, then Data
	crc     uint32 // the reply frame's payload CRC, not checked yet
}

// Verify checks the reply's frame CRC, given tailCRC, the CRC32C of
// Data[head:] that the caller computed for its own end-to-end check: the
// reply's other bytes (the version, Data[:head]) are hashed here and the
// CRCs combined, so Data[head:] is read once for both checks. A reply
// that fails must be treated as never received (netio.ErrBadPayloadCRC).
func (r *ShardReply) Verify(head int, tailCRC uint32) error {
	if head < 0 || head > len(r.Data) {
		return fmt.Errorf("%w: head %d of %d bytes", ErrBadRequest, head, len(r.Data))
	}
	c := netio.Checksum(r.payload[:ReadReplyHeader+head])
	if netio.CombineCRC(c, tailCRC, len(r.Data)-head) != r.crc {
		return netio.ErrBadPayloadCRC
	}
	return nil
}

// ReadShardInPlace reads up to len(frame)-ReadReplyHeader bytes of chunk
// id from offset off straight into frame, with no copy: the chunk's bytes
// land at frame[ReadReplyHeader:]. Unlike ReadShard it does not check the
// reply's frame CRC: the caller must call Verify on the reply (with the
// CRC32C it computes of the bytes anyway) before trusting any of it.
func (c *Client) ReadShardInPlace(ctx context.Context, id chunkstore.ID, off int64, frame []byte) (ShardReply, error) {
	if off < 0 || off >= chunkstore.MaxChunkSize {
		return ShardReply{}, fmt.Errorf("%w: read of shard %v: offset %d out of range [0, %d)", ErrBadRequest, id, off, chunkstore.MaxChunkSize)
	}
	n := len(frame) - ReadReplyHeader
	if n <= 0 {
		return ShardReply{}, fmt.Errorf("%w: read of shard %v: a frame of %d bytes holds no data", ErrBadRequest, id, len(frame))
	}
	n = min(n, chunkstore.MaxChunkSize)
	var req [readReqSize]byte
	appendReadReq(req[:0], readReq{ID: id, Offset: uint64(off), Length: uint32(n)})
	resp, crc, err := c.nc.CallUnverified(ctx, c.addr, OpReadShard, req[:], frame[:0:ReadReplyHeader+n], true)
	if err != nil {
		return ShardReply{}, fromRemote(err)
	}
	if len(resp) < readHdrSize || len(resp)-readHdrSize > n {
		return ShardReply{}, fmt.Errorf("dataplane: read reply of %d bytes for a read of %d", len(resp), n)
	}
	if &resp[0] != &frame[0] {
		return ShardReply{}, fmt.Errorf("dataplane: read reply of %d bytes not read in place", len(resp))
	}
	return ShardReply{Data: resp[readHdrSize:], Version: le.Uint64(resp), payload: resp, crc: crc}, nil
}

// DeleteShard removes chunk id durably; version must be at least the
// stored one and epoch current. It is not retried (see Client).
func (c *Client) DeleteShard(ctx context.Context, id chunkstore.ID, version, epoch uint64) error {
	var req [deleteReqSize]byte
	appendDeleteReq(req[:0], deleteReq{ID: id, Version: version, Epoch: epoch})
	resp, err := c.call(ctx, OpDeleteShard, req[:], nil, false)
	if err == nil && len(resp) != 0 {
		err = fmt.Errorf("dataplane: delete reply of %d bytes, want none", len(resp))
	}
	return err
}

// StatShard returns chunk id's version and length.
func (c *Client) StatShard(ctx context.Context, id chunkstore.ID) (chunkstore.Info, error) {
	var req [statReqSize]byte
	putID(req[:], id)
	var rb [statRespSize]byte
	resp, err := c.call(ctx, OpStatShard, req[:], rb[:0], true)
	if err != nil {
		return chunkstore.Info{}, err
	}
	return decodeStatResp(id, resp)
}

// ListShards returns up to limit (1 to MaxListLimit) chunks with ids at or
// above from, in id order: a page of the walk described at
// chunkstore.Store.List.
func (c *Client) ListShards(ctx context.Context, from chunkstore.ID, limit int) ([]chunkstore.Info, error) {
	if limit < 1 || limit > MaxListLimit {
		return nil, fmt.Errorf("%w: list limit %d out of range [1, %d]", ErrBadRequest, limit, MaxListLimit)
	}
	var req [listReqSize]byte
	appendListReq(req[:0], listReq{From: from, Limit: uint32(limit)})
	resp, err := c.call(ctx, OpListShards, req[:], nil, true)
	if err != nil {
		return nil, err
	}
	return decodeListResp(resp, limit)
}

// Stats returns the dataplane's chunk store counters and placement epoch.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	resp, err := c.call(ctx, OpStats, nil, nil, true)
	if err != nil {
		return Stats{}, err
	}
	return decodeStatsResp(resp)
}
