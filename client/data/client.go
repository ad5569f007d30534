// Package data is the native client's data path: a file's bytes cut into
// EC stripes (k data + m parity shards of one stripe unit each, from the
// file's meta.Layout; default 4+2 with 1 MiB units), encoded with
// klauspost/reedsolomon, and written straight to the dataplanes the
// placement map names for each stripe.
//
// Invariants:
//   - A stripe is replaced copy-on-write: the new version's shards are
//     written (in parallel, each durable on its dataplane) before the new
//     version is committed in metadata (metaclient.CommitStripes); only
//     then are the replaced version's shards deleted. A crash in between
//     leaves the old version readable and orphan shards for the scrubber.
//   - A write needs at least k of the k+m shards durable, so writes go on
//     while a node is down (two shards of 4+2 on three nodes); such a
//     stripe is logged as degraded and has less redundancy until repaired
//     (not built yet). A read needs any k valid shards. A shard that is
//     missing, fails its CRC32C (computed by the writer, checked by the
//     reader), has another version or a bad header is treated as missing
//     and the stripe is reconstructed from the others.
//   - All-zero shards are not stored: the stripe version's zero mask says
//     which (see newVersion), and a stored shard omits its trailing zeros.
//   - The bytes of a stored stripe past the file's size are zeros, so
//     growing a file (a write past its end, a truncate up) shows zeros
//     there. Truncating down to the middle of a stripe rewrites that stripe
//     with its tail zeroed.
package data

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/klauspost/reedsolomon"
	"golang.org/x/sync/singleflight"

	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Options tune a Client. Zero fields take defaults.
type Options struct {
	// CacheBytes bounds the read cache of decoded stripes (default 256 MiB).
	CacheBytes int64
	// DirtyStripesPerFile is how many partly written stripes a file
	// buffers before it flushes them (default 64: 256 MiB at EC 4+2, 1 MiB
	// units). Stripes written to their end are flushed at once, so only
	// random writers fill it; a larger buffer spares them read-modify-writes.
	DirtyStripesPerFile int
	// FlushesPerFile bounds one file's stripe flushes in flight (default 4).
	FlushesPerFile int
	// Timeout bounds one shard I/O (default 10 s).
	Timeout time.Duration
	// TopologyTTL is how long a topology is used before it is read again
	// (default 10 s); a failed shard write also rereads it.
	TopologyTTL time.Duration
	// Logf receives degraded-mode notes (a shard missing, a bad CRC). Nil: dropped.
	Logf func(format string, args ...any)
}

// Client is the data path of one cluster, shared by all files of a
// mount. It is safe for concurrent use.
type Client struct {
	meta     *metaclient.Client
	topology func(context.Context) (Topology, error)
	opts     Options
	nc       *netio.Client

	cache   *ristretto.Cache[string, stripeData] // stripe key → its data
	fetches singleflight.Group

	mu         sync.Mutex
	topo       Topology
	topoAt     time.Time
	dps        map[string]*dataplane.Client
	coders     map[[2]uint8]reedsolomon.Encoder
	badSeen    uint64 // bad or missing shards met by reads (for Stats)
	fetched    uint64 // stripes read from the dataplanes (for Stats)
	shardsRead uint64 // shards read from the dataplanes (for Stats)
	rangesRead uint64 // ranges of shards read from the dataplanes (for Stats)
	rangeBytes uint64 // bytes those ranges asked for (for Stats)

	dels chan deletion // replaced versions waiting for a deleter
	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// New returns a data path client that places shards with the topology
// topo returns (TopologyFromMeta reads it from the cluster map).
func New(mc *metaclient.Client, topo func(context.Context) (Topology, error), opts Options) (*Client, error) {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 256 << 20
	}
	if opts.DirtyStripesPerFile <= 0 {
		opts.DirtyStripesPerFile = 64
	}
	if opts.FlushesPerFile <= 0 {
		opts.FlushesPerFile = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.TopologyTTL <= 0 {
		opts.TopologyTTL = 10 * time.Second
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, stripeData]{
		NumCounters: max(opts.CacheBytes/(64<<10), 1024), MaxCost: opts.CacheBytes, BufferItems: 64,
	})
	if err != nil {
		return nil, err
	}
	c := &Client{
		meta: mc, topology: topo, opts: opts, cache: cache,
		nc:     netio.NewClient(netio.ClientOptions{ConnsPerAddr: 4, AttemptTimeout: opts.Timeout, MaxPayload: chunkstore.MaxChunkSize + 4096}),
		dps:    map[string]*dataplane.Client{},
		coders: map[[2]uint8]reedsolomon.Encoder{},
		dels:   make(chan deletion, maxDeletes),
		done:   make(chan struct{}),
	}
	for range deleters {
		c.wg.Add(1)
		go c.deleter()
	}
	return c, nil
}

// TopologyFromMeta reads the topology from the cluster map through mc.
func TopologyFromMeta(mc *metaclient.Client) func(context.Context) (Topology, error) {
	return func(ctx context.Context) (Topology, error) {
		st, err := mc.ClusterState(ctx)
		if err != nil {
			return Topology{}, err
		}
		return TopologyOf(st)
	}
}

// Close releases the client's connections and cache. Deletions still
// queued are left to the scrubber.
func (c *Client) Close() error {
	close(c.done)
	c.wg.Wait()
	c.cache.Close()
	return c.nc.Close()
}

// Meta is the metadata client the data path commits through.
func (c *Client) Meta() *metaclient.Client { return c.meta }

func (c *Client) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// currentTopology returns the topology, reread when older than the TTL
// or when stale is set.
func (c *Client) currentTopology(ctx context.Context, stale bool) (Topology, error) {
	c.mu.Lock()
	t, at := c.topo, c.topoAt
	c.mu.Unlock()
	if !stale && !at.IsZero() && time.Since(at) < c.opts.TopologyTTL {
		return t, nil
	}
	nt, err := c.topology(ctx)
	if err != nil {
		if !at.IsZero() {
			return t, nil // keep using the last one; the cluster map is briefly unreachable
		}
		return Topology{}, err
	}
	c.mu.Lock()
	c.topo, c.topoAt = nt, time.Now()
	c.mu.Unlock()
	return nt, nil
}

func (c *Client) dataplane(addr string) *dataplane.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.dps[addr]
	if d == nil {
		d = dataplane.ClientFor(c.nc, addr)
		c.dps[addr] = d
	}
	return d
}

func (c *Client) coder(l meta.Layout) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := [2]uint8{l.K, l.M}
	if e := c.coders[key]; e != nil {
		return e, nil
	}
	if l.M == 0 {
		return nil, nil
	}
	e, err := reedsolomon.New(int(l.K), int(l.M))
	if err != nil {
		return nil, err
	}
	c.coders[key] = e
	return e, nil
}

func checkLayout(l meta.Layout) error {
	if l.K == 0 || int(l.K)+int(l.M) > 64 || l.StripeUnit == 0 || l.StripeUnit > MaxStripeUnit || l.StripeUnit%4096 != 0 {
		return fmt.Errorf("data: unsupported layout EC %d+%d, unit %d bytes (want k ≥ 1, k+m ≤ 64, a unit of 4 KiB to 2 MiB in 4 KiB steps)", l.K, l.M, l.StripeUnit)
	}
	return nil
}

// placeStripe returns the dataplane addresses of stripe s's shards and
// the placement epoch.
func (c *Client) placeStripe(ctx context.Context, ino meta.Ino, l meta.Layout, s uint64, stale bool) ([]string, uint64, error) {
	t, err := c.currentTopology(ctx, stale)
	if err != nil {
		return nil, 0, err
	}
	t.Map.K, t.Map.M = int(l.K), int(l.M)
	addrs, err := t.place(uint64(ino), s)
	return addrs, t.Map.Epoch, err
}

func cacheKey(ino meta.Ino, s, v uint64) string {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(ino))
	binary.LittleEndian.PutUint64(b[8:], s)
	binary.LittleEndian.PutUint64(b[16:], v)
	return string(b[:])
}

// readStripe returns the data of stripe s of ino at version v, from the
// cache or the dataplanes.
func (c *Client) readStripe(ctx context.Context, ino meta.Ino, l meta.Layout, s, v uint64) (stripeData, error) {
	key := cacheKey(ino, s, v)
	if b, ok := c.cache.Get(key); ok {
		return b, nil
	}
	out, err, _ := c.fetches.Do(key, func() (any, error) {
		b, err := c.fetchStripe(ctx, ino, l, s, v)
		if err != nil {
			return nil, err
		}
		c.cache.Set(key, b, b.cost())
		return b, nil
	})
	if err != nil {
		return stripeData{}, err
	}
	return out.(stripeData), nil
}

// shardKey is the cache key of data shard idx of stripe s of ino at
// version v, cached alone.
func shardKey(ino meta.Ino, s, v uint64, idx int) string {
	var b [25]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(ino))
	binary.LittleEndian.PutUint64(b[8:], s)
	binary.LittleEndian.PutUint64(b[16:], v)
	b[24] = byte(idx)
	return string(b[:])
}

// readDataShard returns data shard idx (unit bytes, read-only) of stripe
// s of ino at version v, which must not be in the version's zero mask:
// from the cached stripe, the shard cached alone, or the dataplane — that
// shard only, checked end to end. A small random read so costs one shard,
// not k. A shard missing or bad is an error: the caller reads the whole
// stripe then, which rebuilds it from the others.
func (c *Client) readDataShard(ctx context.Context, ino meta.Ino, l meta.Layout, s, v uint64, idx int) ([]byte, error) {
	unit := int(l.StripeUnit)
	if d, ok := c.cache.Get(cacheKey(ino, s, v)); ok {
		if b, ok := d.view(idx*unit, unit); ok {
			return b, nil
		}
	}
	key := shardKey(ino, s, v, idx)
	if d, ok := c.cache.Get(key); ok {
		if b, ok := d.view(0, unit); ok {
			return b, nil
		}
	}
	out, err, _ := c.fetches.Do(key, func() (any, error) {
		if err := checkLayout(l); err != nil {
			return nil, err
		}
		addrs, _, err := c.placeStripe(ctx, ino, l, s, false)
		if err != nil {
			return nil, err
		}
		slot := make([]byte, slotHead+unit)
		if err := c.readShard(ctx, addrs[idx], chunkID(ino, s, idx, v), v, uint32(unit), slot); err != nil {
			return nil, err
		}
		d := stripeData{b: slot, stride: slotHead + unit, off: slotHead, unit: unit, k: 1}
		c.cache.Set(key, d, d.cost())
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	b, _ := out.(stripeData).view(0, unit)
	return b, nil
}

// readRange returns the m bytes at offset w of data shard idx (w+m ≤
// unit; read-only) of stripe s of ino at version v, which must not be in
// the version's zero mask: from the cached stripe, the shard cached alone,
// or the dataplane — those bytes only, not the shard. Such a read cannot
// be checked against the writer's CRC of the whole shard; it rests on the
// chunk store's CRC32C of every 4 KiB block it reads (checked on the
// server before it answers; a mismatch answers a corruption error), the
// reply frame's CRC32C (the wire), and the version check (the chunk is
// the committed version's). A stored shard omits its trailing zeros, so
// what lies past the chunk's end reads as zeros. An error (the shard
// missing or corrupt, another version, the dataplane unreachable) sends
// the caller to the stripe read, which rebuilds the shard.
func (c *Client) readRange(ctx context.Context, ino meta.Ino, l meta.Layout, s, v uint64, idx, w, m int) ([]byte, error) {
	unit := int(l.StripeUnit)
	if w < 0 || m <= 0 || w+m > unit {
		return nil, fmt.Errorf("data: range %d+%d of a %d-byte shard", w, m, unit)
	}
	if d, ok := c.cache.Get(cacheKey(ino, s, v)); ok {
		if b, ok := d.view(idx*unit+w, m); ok {
			return b, nil
		}
	}
	if d, ok := c.cache.Get(shardKey(ino, s, v, idx)); ok {
		if b, ok := d.view(w, m); ok {
			return b, nil
		}
	}
	if err := checkLayout(l); err != nil {
		return nil, err
	}
	addrs, _, err := c.placeStripe(ctx, ino, l, s, false)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	c.mu.Lock()
	c.rangesRead++
	c.rangeBytes += uint64(m)
	c.mu.Unlock()
	frame := make([]byte, dataplane.ReadReplyHeader+m)
	var r dataplane.ShardReply
	err = retryBusy(ctx, func() (err error) {
		r, err = c.dataplane(addrs[idx]).ReadShardInPlace(ctx, chunkID(ino, s, idx, v), int64(headerSize+w), frame)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := r.Verify(0, crc32.Checksum(r.Data, castagnoli)); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadShard, err)
	}
	if r.Version != v {
		return nil, fmt.Errorf("%w: version %#x stored, %#x committed", errBadShard, r.Version, v)
	}
	b := frame[dataplane.ReadReplyHeader:]
	clear(b[len(r.Data):]) // past the stored bytes: the shard's trailing zeros
	return b, nil
}

// fetchStripe reads the data shards of a stripe and, when some are
// missing or bad, enough parity shards to reconstruct them.
func (c *Client) fetchStripe(ctx context.Context, ino meta.Ino, l meta.Layout, s, v uint64) (stripeData, error) {
	if err := checkLayout(l); err != nil {
		return stripeData{}, err
	}
	addrs, _, err := c.placeStripe(ctx, ino, l, s, false)
	if err != nil {
		return stripeData{}, err
	}
	c.mu.Lock()
	c.fetched++
	c.mu.Unlock()
	k, n, unit := int(l.K), int(l.K)+int(l.M), int(l.StripeUnit)
	stride := slotHead + unit
	zm := zeroMask(v)
	// Each shard is read into its slot, the read reply's header and the
	// shard's first, and stays there.
	slots := make([][]byte, n)
	shards := make([][]byte, n)
	data := make([]byte, k*stride)
	for i := 0; i < k; i++ {
		slots[i] = data[i*stride : (i+1)*stride : (i+1)*stride]
		shards[i] = slots[i][slotHead:]
	}
	ok := make([]bool, n)
	read := func(idx []int) {
		var wg sync.WaitGroup
		for _, i := range idx {
			if i < ZeroMaskBits && zm&(1<<i) != 0 {
				clear(shards[i])
				ok[i] = true
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.readShard(ctx, addrs[i], chunkID(ino, s, i, v), v, uint32(unit), slots[i]); err != nil {
					c.logf("data: inode %v stripe %d shard %d on %s: %v (reconstructing)", ino, s, i, addrs[i], err)
					c.mu.Lock()
					c.badSeen++
					c.mu.Unlock()
					return
				}
				ok[i] = true
			}()
		}
		wg.Wait()
	}
	all := make([]int, k)
	for i := range all {
		all[i] = i
	}
	read(all)
	good := 0
	for i := 0; i < k; i++ {
		if ok[i] {
			good++
		}
	}
	sd := stripeData{b: data, stride: stride, off: slotHead, unit: unit, k: k}
	if good == k {
		return sd, nil
	}
	if ctx.Err() != nil {
		return stripeData{}, ctx.Err()
	}
	// Degraded: read every parity shard, then rebuild the missing data.
	var par []int
	for i := k; i < n; i++ {
		slots[i] = make([]byte, stride)
		shards[i] = slots[i][slotHead:]
		par = append(par, i)
	}
	read(par)
	have := 0
	for i := 0; i < n; i++ {
		if !ok[i] {
			shards[i] = shards[i][:0]
			continue
		}
		have++
	}
	if have < k {
		return stripeData{}, fmt.Errorf("data: inode %v stripe %d: only %d of %d shards readable, %d needed: %w", ino, s, have, n, k, errUnreadable)
	}
	enc, err := c.coder(l)
	if err != nil {
		return stripeData{}, err
	}
	// Missing shards are empty slices whose spare capacity is their slot
	// in the stripe buffer: Reconstruct writes the rebuilt shards there.
	if err := enc.ReconstructData(shards); err != nil {
		return stripeData{}, fmt.Errorf("data: inode %v stripe %d: reconstruct: %w", ino, s, err)
	}
	for i := 0; i < k; i++ {
		if dst := data[i*stride+slotHead : (i+1)*stride]; &shards[i][0] != &dst[0] {
			copy(dst, shards[i])
		}
	}
	return sd, nil
}

var errUnreadable = errors.New("too few shards readable")

// retryBusy runs op again, backing off, while the dataplane answers that
// it is busy (its queue is full) and ctx allows.
func retryBusy(ctx context.Context, op func() error) error {
	d := 2 * time.Millisecond
	for {
		err := op()
		if err == nil || !(errors.Is(err, dataplane.ErrBusy) || errors.Is(err, chunkstore.ErrBusy)) {
			return err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		d = min(2*d, 200*time.Millisecond)
	}
}

// slotHead is what precedes a shard's bytes in its slot of a stripe
// buffer: the dataplane's read reply header, then the shard's.
const slotHead = dataplane.ReadReplyHeader + headerSize

// readShard reads a shard's chunk into slot (slotHead + unit bytes) in
// place, checks it, and zeroes the slot past the stored bytes. One CRC32C
// pass over the shard's bytes serves both the end-to-end check (the
// writer's CRC in the shard header) and the read reply's frame CRC.
func (c *Client) readShard(ctx context.Context, addr string, id chunkstore.ID, v uint64, unit uint32, slot []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	c.mu.Lock()
	c.shardsRead++
	c.mu.Unlock()
	var r dataplane.ShardReply
	err := retryBusy(ctx, func() (err error) {
		r, err = c.dataplane(addr).ReadShardInPlace(ctx, id, 0, slot)
		return err
	})
	if err != nil {
		return err
	}
	chunk := r.Data
	if len(chunk) < headerSize {
		if err := r.Verify(len(chunk), 0); err != nil {
			return fmt.Errorf("%w: %v", errBadShard, err)
		}
		return checkHeader(chunk, unit)
	}
	bodyCRC := crc32.Checksum(chunk[headerSize:], castagnoli)
	if err := r.Verify(headerSize, bodyCRC); err != nil {
		return fmt.Errorf("%w: %v", errBadShard, err)
	}
	if r.Version != v {
		return fmt.Errorf("%w: version %#x stored, %#x committed", errBadShard, r.Version, v)
	}
	if err := checkHeader(chunk, unit); err != nil {
		return err
	}
	if err := checkBody(chunk, bodyCRC); err != nil {
		return err
	}
	clear(slot[dataplane.ReadReplyHeader+len(chunk):])
	return nil
}

// writeStripe encodes data (at most k × unit bytes; zeros past its end)
// and stores the shards of a new version of stripe s, returning the
// version. It does not commit.
func (c *Client) writeStripe(ctx context.Context, ino meta.Ino, l meta.Layout, s uint64, data []byte) (uint64, error) {
	if err := checkLayout(l); err != nil {
		return 0, err
	}
	if s >= MaxStripes {
		return 0, fmt.Errorf("data: stripe %d past the largest file (%d stripes): %w", s, MaxStripes, errFileTooBig)
	}
	k, n, unit := int(l.K), int(l.K)+int(l.M), int(l.StripeUnit)
	shards := make([][]byte, n)
	lens := make([]int, n)
	maxLen := 0
	for i := 0; i < k; i++ {
		shards[i] = data[min(i*unit, len(data)):min((i+1)*unit, len(data))]
		lens[i] = trimmedLen(shards[i])
		maxLen = max(maxLen, lens[i])
	}
	if l.M > 0 {
		// Parity past the longest data shard's end is zero: encode only
		// up to there (rounded to 64 bytes, the coder's SIMD width).
		el := min((maxLen+63)&^63, unit)
		enc, err := c.coder(l)
		if err != nil {
			return 0, err
		}
		parts := make([][]byte, n)
		for i := 0; i < k; i++ {
			if len(shards[i]) >= el {
				parts[i] = shards[i][:el]
			} else { // a short stripe buffer: the coder wants el bytes
				parts[i] = make([]byte, el)
				copy(parts[i], shards[i])
			}
		}
		for i := k; i < n; i++ {
			parts[i] = make([]byte, el)
			shards[i] = parts[i]
		}
		if el > 0 {
			if err := enc.Encode(parts); err != nil {
				return 0, err
			}
		}
		for i := k; i < n; i++ {
			lens[i] = trimmedLen(parts[i])
		}
	}
	var zm uint16
	for i := 0; i < n && i < ZeroMaskBits; i++ {
		if lens[i] == 0 {
			zm |= 1 << i
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		v := newVersion(zm)
		addrs, epoch, err := c.placeStripe(ctx, ino, l, s, attempt > 0)
		if err != nil {
			return 0, err
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			if i < ZeroMaskBits && zm&(1<<i) != 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The header goes before the shard's bytes, which are sent
				// from the stripe buffer as they are; their CRC32C, in the
				// header, also makes the frame's.
				body := shards[i][:lens[i]]
				crc := crc32.Checksum(body, castagnoli)
				var h [headerSize]byte
				putShardHeader(h[:], uint32(unit), uint32(len(body)), crc)
				wctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
				defer cancel()
				errs[i] = retryBusy(wctx, func() error {
					return c.dataplane(addrs[i]).WriteShardParts(wctx, chunkID(ino, s, i, v), v, epoch, h[:], body, crc)
				})
			}()
		}
		wg.Wait()
		failed := 0
		stale := false
		for i, err := range errs {
			if err != nil {
				failed++
				lastErr = fmt.Errorf("shard %d on %s: %w", i, addrs[i], err)
				stale = stale || errors.Is(err, chunkstore.ErrStaleVersion) || errors.Is(err, dataplane.ErrStaleEpoch)
			}
		}
		if failed <= int(l.M) && !stale {
			if failed > 0 {
				c.logf("data: inode %v stripe %d written degraded: %v", ino, s, lastErr)
			}
			return v, nil
		}
		c.deleteShards(ino, l, s, v, addrs)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("data: inode %v stripe %d: too few shards written: %w", ino, s, lastErr)
}

var errFileTooBig = errors.New("file too large")

// deleteShards drops the stored shards of version v of stripe s, best
// effort (what it misses is an orphan for the scrubber). addrs may be nil.
func (c *Client) deleteShards(ino meta.Ino, l meta.Layout, s, v uint64, addrs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	if addrs == nil {
		var err error
		if addrs, _, err = c.placeStripe(ctx, ino, l, s, false); err != nil {
			return
		}
	}
	t, err := c.currentTopology(ctx, false)
	if err != nil {
		return
	}
	zm := zeroMask(v)
	var wg sync.WaitGroup
	for i := range addrs {
		if i < ZeroMaskBits && zm&(1<<i) != 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.dataplane(addrs[i]).DeleteShard(ctx, chunkID(ino, s, i, v), v, t.Map.Epoch)
		}()
	}
	wg.Wait()
}

// dropOld queues the shards of replaced stripe versions for deletion by
// the client's deleters (it blocks while deleters are maxDeletes behind,
// so deletes cannot outgrow the writes that cause them).
func (c *Client) dropOld(ino meta.Ino, l meta.Layout, old []meta.StripeVersion) {
	for _, sv := range old {
		select {
		case c.dels <- deletion{ino: ino, l: l, s: sv.Index, v: sv.Version}:
		case <-c.done:
			return
		}
	}
}

// DropStripes queues the shards of stripe versions of a deleted file for
// deletion.
func (c *Client) DropStripes(ino meta.Ino, l meta.Layout, svs []meta.StripeVersion) {
	if l.K == 0 {
		l = meta.DefaultLayout
	}
	c.dropOld(ino, l, svs)
}

// deletion is one replaced stripe version whose shards go.
type deletion struct {
	ino  meta.Ino
	l    meta.Layout
	s, v uint64
}

const (
	maxDeletes = 4096 // queued stripe deletions
	deleters   = 2
)

func (c *Client) deleter() {
	defer c.wg.Done()
	for {
		select {
		case d := <-c.dels:
			c.deleteShards(d.ino, d.l, d.s, d.v, nil)
		case <-c.done:
			return
		}
	}
}

// Stats are the data path's counters.
type Stats struct {
	BadShards      uint64 // missing or bad shards reads met (and reconstructed around)
	StripesFetched uint64 // stripes read from the dataplanes (cache misses)
	ShardsRead     uint64 // shard reads sent to the dataplanes (stripes' and single ones)
	RangesRead     uint64 // reads of part of a shard sent to the dataplanes (small reads)
	RangeBytes     uint64 // bytes those asked for
}

// Stats returns the data path's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{BadShards: c.badSeen, StripesFetched: c.fetched, ShardsRead: c.shardsRead, RangesRead: c.rangesRead, RangeBytes: c.rangeBytes}
}

// Capacity sums the dataplanes' chunk store space, in file bytes at the
// default layout's overhead (k of every k+m bytes hold data).
func (c *Client) Capacity(ctx context.Context) (total, free uint64, err error) {
	t, err := c.currentTopology(ctx, false)
	if err != nil {
		return 0, 0, err
	}
	for _, addr := range t.Dataplanes {
		st, serr := c.dataplane(addr).Stats(ctx)
		if serr != nil {
			err = serr
			continue
		}
		total += st.Segments * st.SegmentSize
		free += st.FreeSegments * st.SegmentSize
	}
	if k, n := uint64(max(t.Map.K, 1)), uint64(max(t.Map.K+t.Map.M, 1)); n > 0 {
		total, free = total*k/n, free*k/n
	}
	return total, free, err
}
