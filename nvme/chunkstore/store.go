package chunkstore

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/nvme"
	"github.com/claudefs/claudefs/nvme/ioengine"
)

// Limits.
const (
	// MaxChunkSize is the largest chunk a Put accepts, in bytes; a store
	// whose segments are smaller accepts less (Store.MaxChunk).
	MaxChunkSize = 4 << 20
	// maxBatchBytes bounds the data of one combined append.
	maxBatchBytes  = 8 << 20
	minSegmentSize = 1 << 20
	maxSegmentSize = 1 << 30
	// DefaultSegmentSize is the segment size for devices of 8 GiB and more;
	// smaller devices get smaller segments so each partition owns several.
	DefaultSegmentSize = 64 << 20
	// maxListLimit bounds one page of List.
	maxListLimit = 100000
	// maxFlying bounds Options.AppendsInFlight; recovery verifies this
	// many of a partition's newest appends.
	maxFlying = 4
)

// Errors callers can test with errors.Is.
var (
	ErrNotFound     = errors.New("chunk not found")
	ErrStaleVersion = errors.New("stale version: the store holds a newer version of this chunk")
	ErrNoSpace      = errors.New("chunk store is full")
	ErrClosed       = errors.New("chunk store is closed")
	ErrBusy         = errors.New("chunk store partition is busy: its inbox is full, retry later")
	ErrTooLarge     = errors.New("chunk too large")
	ErrEmpty        = errors.New("empty chunk: a chunk holds at least one byte")
)

// StaleVersionError is the ErrStaleVersion a put or delete gets: it names
// the version the store holds, so callers need not ask again.
type StaleVersionError struct {
	ID    ID
	Held  uint64 // the version the store holds
	Asked uint64 // the version the request carried
}

func (e *StaleVersionError) Error() string {
	return fmt.Sprintf("%v: chunk %v is at version %d, request has %d", ErrStaleVersion, e.ID, e.Held, e.Asked)
}

// Is makes errors.Is(err, ErrStaleVersion) true.
func (e *StaleVersionError) Is(target error) bool { return target == ErrStaleVersion }

// ID names a chunk.
type ID struct{ Hi, Lo uint64 }

func (id ID) String() string { return fmt.Sprintf("%016x%016x", id.Hi, id.Lo) }

// Next is the id right after id; ok is false for the largest id.
func (id ID) Next() (next ID, ok bool) {
	if id.Lo != ^uint64(0) {
		return ID{id.Hi, id.Lo + 1}, true
	}
	if id.Hi != ^uint64(0) {
		return ID{id.Hi + 1, 0}, true
	}
	return id, false
}

func (id ID) less(o ID) bool { return id.Hi < o.Hi || (id.Hi == o.Hi && id.Lo < o.Lo) }

// compareInfo orders Infos by ID, for slices.SortFunc.
func compareInfo(a, b Info) int {
	switch {
	case a.ID.less(b.ID):
		return -1
	case b.ID.less(a.ID):
		return 1
	}
	return 0
}

// partitionOf maps a chunk to its partition (splitmix64 finalizer over the
// id, so sequential ids spread evenly).
func partitionOf(id ID, n int) int {
	x := id.Lo ^ (id.Hi * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int(x % uint64(n))
}

// Info describes a stored chunk.
type Info struct {
	ID      ID
	Version uint64
	Length  int
}

// Options configure Open. Zero values take the defaults.
type Options struct {
	// CreateSize lays out a file device of this many bytes when the path is
	// absent or shorter (see nvme.OpenOptions).
	CreateSize int64
	// Partitions is the number of core partitions at format time (default
	// 1 per two CPUs, at least 1). An existing store keeps its own count.
	Partitions int
	// SegmentSize in bytes at format time (default DefaultSegmentSize, less
	// on small devices).
	SegmentSize int64
	// Engine selects the I/O engine (default ioengine.Auto).
	Engine ioengine.Kind
	// QueueDepth is each partition's ring size (default 128).
	QueueDepth int
	// CombineBytes flushes a combined append once it holds this many bytes
	// of data (default 1 MiB, at most 4 MiB).
	CombineBytes int
	// CombineDelay is the longest a write waits for others to combine with
	// (default 100µs). Zero-delay writing: set CombineBytes to 1.
	CombineDelay time.Duration
	// SubmitBatch is the most operations a partition prepares from its
	// inbox before it submits them (default 2, at most 4096): a burst of
	// requests reaches the device in small groups, the first while the
	// rest are still being prepared. The kernel holds a multi-operation
	// submission back until all of it is prepared (block plugging; ~4 µs
	// a 4 KiB O_DIRECT read on the project's VM), so one submission of a
	// 30-read burst kept the device waiting ~100 µs for its first read.
	// 4 KiB reads over loopback from 32 clients went from 0.45-0.55 to
	// 0.53-0.63 of fio's IOPS with groups of 2; groups of 1 (a doorbell,
	// a VM exit, per read) were worse (docs/benchmarks.md).
	SubmitBatch int
	// AppendsInFlight is how many combined appends a partition keeps in
	// flight at once (default 2, at most 4): while one is being made
	// durable the next gathers writes.
	AppendsInFlight int
	// CheckpointEvery writes a checkpoint after this many bytes have been
	// appended by a partition since its last one (default 1 GiB), which
	// bounds the log that recovery replays.
	CheckpointEvery int64
	// CPUs, when non-empty, pins partition i's thread to CPUs[i%len(CPUs)].
	CPUs []int
	// OnPartitionThread, when set, is called once by each partition's
	// goroutine, on its own locked OS thread (after any CPUs pinning,
	// before its ring is created), with the partition's index: the place
	// to pin that thread (unix.SchedSetaffinity(0, ...)) or note its id
	// (unix.Gettid). It must return promptly; Open waits for it.
	OnPartitionThread func(partition int)
	// Logf receives notable events (engine choice, recovery figures).
	Logf func(format string, args ...any)
}

func (o *Options) fill() error {
	if o.Engine == "" {
		o.Engine = ioengine.Auto
	}
	if o.QueueDepth == 0 {
		o.QueueDepth = 128
	}
	// A Get of a whole MaxChunkSize chunk is maxGetBufs reads at once.
	if minDepth := maxGetBufs + maxFlying + 1; o.QueueDepth < minDepth || o.QueueDepth > 4096 {
		return fmt.Errorf("chunkstore: queue depth %d out of range [%d, 4096]", o.QueueDepth, minDepth)
	}
	if o.SubmitBatch == 0 {
		o.SubmitBatch = defaultSubmitBatch
	}
	if o.SubmitBatch < 1 || o.SubmitBatch > 4096 {
		return fmt.Errorf("chunkstore: submit batch %d out of range [1, 4096]", o.SubmitBatch)
	}
	if o.AppendsInFlight == 0 {
		o.AppendsInFlight = 2
	}
	if o.AppendsInFlight < 1 || o.AppendsInFlight > maxFlying {
		return fmt.Errorf("chunkstore: appends in flight %d out of range [1, %d]", o.AppendsInFlight, maxFlying)
	}
	if o.CombineBytes == 0 {
		o.CombineBytes = 1 << 20
	}
	if o.CombineBytes < 1 || o.CombineBytes > 4<<20 {
		return fmt.Errorf("chunkstore: combine bytes %d out of range [1, 4 MiB]", o.CombineBytes)
	}
	if o.CombineDelay == 0 {
		o.CombineDelay = 100 * time.Microsecond
	}
	if o.CombineDelay < 0 || o.CombineDelay > time.Second {
		return fmt.Errorf("chunkstore: combine delay %v out of range [0, 1s]", o.CombineDelay)
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 1 << 30
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Store is a log-structured chunk store on one device. Its methods are safe
// for concurrent use; each request is routed to the partition that owns the
// chunk and served by that partition's goroutine.
type Store struct {
	dev   *nvme.Device
	sb    *superblock
	salt  uint32
	parts []*partition
	opts  Options
	// maxChunk is the largest chunk a segment can hold (≤ MaxChunkSize).
	maxChunk int
	// recovery is what each partition's recovery found at Open.
	recovery []recovered
	// nextSeq is the last segment sequence number handed out.
	nextSeq atomic.Uint64
	// t0 is when Open started: requests' t0 are nanoseconds since then
	// (monotonic clock).
	t0 time.Time
	// queueLimit is SetQueueLimit's n.
	queueLimit atomic.Int32

	closeOnce sync.Once
	closeErr  error
}

// Open opens (formatting when the device holds no store) the chunk store on
// path, recovers its index, and starts one goroutine per partition.
func Open(path string, opts Options) (*Store, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	dev, err := nvme.Open(path, nvme.OpenOptions{CreateSize: opts.CreateSize})
	if err != nil {
		return nil, err
	}
	if BlockSize%dev.BlockSize() != 0 {
		dev.Close()
		return nil, fmt.Errorf("chunkstore: device %s has %d-byte blocks; the store needs a block size that divides %d", path, dev.BlockSize(), BlockSize)
	}
	s := &Store{dev: dev, opts: opts, t0: time.Now()}
	if err := s.loadOrFormat(); err != nil {
		dev.Close()
		return nil, err
	}
	s.salt = crc32.Checksum(s.sb.UUID[:], crcTable)
	s.maxChunk = maxChunkFor(int(s.sb.SegmentSize))
	if err := s.start(); err != nil {
		dev.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) loadOrFormat() error {
	buf, err := nvme.AllocAligned(BlockSize)
	if err != nil {
		return err
	}
	defer nvme.FreeAligned(buf)
	if err := s.dev.ReadAt(buf, 0); err != nil {
		return err
	}
	sb, err := decodeSuperblock(buf, s.dev.Size())
	if err == nil {
		s.sb = sb
		return nil
	}
	if !isZero(buf) {
		return fmt.Errorf("chunkstore: device %s holds something that is not a readable chunk store (%v); refusing to format over it: zero its first 4 KiB to reformat", s.dev.Path(), err)
	}
	sb, err = planLayout(s.dev.Size(), s.opts.Partitions, s.opts.SegmentSize)
	if err != nil {
		return fmt.Errorf("chunkstore: device %s: %w", s.dev.Path(), err)
	}
	if _, err := rand.Read(sb.UUID[:]); err != nil {
		return err
	}
	// Zero both checkpoint slots' headers so stale bytes from an earlier
	// use of the device can never pass for a checkpoint.
	for p := 0; p < int(sb.Partitions); p++ {
		for slot := 0; slot < 2; slot++ {
			clear(buf)
			if err := s.dev.WriteAt(buf, ckptSlotOff(sb, p, slot)); err != nil {
				return err
			}
		}
	}
	sb.encode(buf)
	if err := s.dev.WriteAt(buf, 0); err != nil {
		return err
	}
	if err := s.dev.Sync(); err != nil {
		return err
	}
	s.opts.Logf("chunkstore: formatted %s: %d partitions, %d segments of %d MiB, checkpoint slots of %d KiB",
		s.dev.Path(), sb.Partitions, sb.SegmentCount, sb.SegmentSize>>20, sb.CkptSlotSize>>10)
	s.sb = sb
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// planLayout chooses segment size, count and checkpoint slot size for a
// device of size bytes.
func planLayout(size int64, partitions int, segSize int64) (*superblock, error) {
	if partitions <= 0 {
		partitions = max(1, numCPU()/2)
	}
	if partitions > maxPartition {
		return nil, fmt.Errorf("%d partitions: at most %d", partitions, maxPartition)
	}
	if segSize == 0 {
		segSize = DefaultSegmentSize
		// At least 8 segments per partition so cleaning has room.
		for segSize > minSegmentSize && size/segSize < int64(8*partitions) {
			segSize /= 2
		}
	}
	if segSize < minSegmentSize || segSize > maxSegmentSize || segSize%BlockSize != 0 {
		return nil, fmt.Errorf("segment size %d must be a multiple of 4 KiB in [1 MiB, 1 GiB]", segSize)
	}
	for n := size / segSize; n >= int64(2*partitions); n-- {
		perPart := (n + int64(partitions) - 1) / int64(partitions)
		slot := int64(ckptHdrSize) + perPart*(segSize/BlockSize)*ckptEntrySize
		slot = (slot + BlockSize - 1) / BlockSize * BlockSize
		dataOff := int64(BlockSize) + 2*int64(partitions)*slot
		if dataOff+n*segSize <= size {
			return &superblock{
				BlockSize: BlockSize, Partitions: uint32(partitions),
				SegmentSize: uint64(segSize), SegmentCount: uint64(n),
				CkptOff: BlockSize, CkptSlotSize: uint64(slot), DataOff: uint64(dataOff),
				DeviceSize: uint64(size),
			}, nil
		}
	}
	return nil, fmt.Errorf("%d bytes is too small for %d partitions of 2 segments of %d bytes: use a larger device or fewer partitions", size, partitions, segSize)
}

func ckptSlotOff(sb *superblock, part, slot int) int64 {
	return int64(sb.CkptOff) + int64(2*part+slot)*int64(sb.CkptSlotSize)
}

func (s *Store) start() error {
	n := int(s.sb.Partitions)
	s.parts = make([]*partition, n)
	var maxSeq uint64
	for i := 0; i < n; i++ {
		p := newPartition(s, i)
		s.parts[i] = p
		t0 := time.Now()
		rv, err := s.recoverPartition(p)
		if err != nil {
			return fmt.Errorf("chunkstore: partition %d: recovery: %w", i, err)
		}
		maxSeq = max(maxSeq, rv.maxSeq)
		s.recovery = append(s.recovery, rv)
		s.opts.Logf("chunkstore: partition %d recovered in %v: %d entries from the checkpoint, %d batches replayed, %d torn batch dropped",
			i, time.Since(t0).Round(time.Millisecond), rv.loaded, rv.replayed, rv.dropped)
	}
	s.nextSeq.Store(maxSeq)
	ready := make(chan error, n)
	for _, p := range s.parts {
		go p.run(ready)
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-ready; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, p := range s.parts {
			if p.started {
				p.call(&request{kind: opClose, done: make(chan struct{}, 1)})
			}
		}
		return first
	}
	return nil
}

func numCPU() int { return runtime.NumCPU() }

// maxChunkFor is the largest chunk that fits, with its summary, in a
// segment of segSize bytes, capped at MaxChunkSize.
func maxChunkFor(segSize int) int {
	nb := min(segSize, MaxChunkSize) / BlockSize
	for nb > 0 && (blocksFor(summaryBytes(1, nb))+nb)*BlockSize > segSize {
		nb--
	}
	return min(nb*BlockSize, MaxChunkSize)
}

// MaxChunk is the largest chunk this store accepts: MaxChunkSize, or less
// when its segments are smaller than that.
func (s *Store) MaxChunk() int { return s.maxChunk }

// Device is the store's device.
func (s *Store) Device() *nvme.Device { return s.dev }

// Partitions is the number of core partitions.
func (s *Store) Partitions() int { return len(s.parts) }

// Capacity is the bytes of segment space (data plus summaries).
func (s *Store) Capacity() int64 { return int64(s.sb.SegmentCount * s.sb.SegmentSize) }

var reqPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

func getReq(kind opKind, id ID) *request {
	r := reqPool.Get().(*request)
	r.kind = kind
	r.id = id
	return r
}

func putReq(r *request) {
	done := r.done
	*r = request{done: done}
	reqPool.Put(r)
}

func (s *Store) part(id ID) *partition { return s.parts[partitionOf(id, len(s.parts))] }

// Put stores data as chunk id at version and returns once it is durable.
// A version lower than the stored one is refused with ErrStaleVersion; an
// equal version replaces the chunk (a retried Put is idempotent).
func (s *Store) Put(id ID, version uint64, data []byte) error {
	if err := s.checkChunk(data); err != nil {
		return err
	}
	r := getReq(opPut, id)
	r.version = version
	r.data = data
	err := s.part(id).call(r)
	putReq(r)
	return err
}

// checkChunk refuses data no chunk of this store can hold.
func (s *Store) checkChunk(data []byte) error {
	switch {
	case len(data) == 0:
		return ErrEmpty
	case len(data) > s.maxChunk:
		return fmt.Errorf("%w: %d bytes; this store holds chunks of at most %d bytes (its segments are %d bytes)",
			ErrTooLarge, len(data), s.maxChunk, s.sb.SegmentSize)
	}
	return nil
}

// PutAsync is Put that does not wait: done runs on the partition's
// goroutine once the chunk is durable (nil) or failed, and must not block.
// data must stay unchanged until then. It fails at once, without calling
// done, with ErrBusy when the partition's inbox is full, ErrClosed, or a
// size error.
func (s *Store) PutAsync(id ID, version uint64, data []byte, done func(error)) error {
	if err := s.checkChunk(data); err != nil {
		return err
	}
	r := getReq(opPut, id)
	r.version, r.data, r.onPut = version, data, done
	if err := s.part(id).send(r, false); err != nil {
		putReq(r)
		return err
	}
	return nil
}

// Get reads len(buf) bytes of chunk id starting at off into buf and returns
// the bytes read (short at the end of the chunk) and the chunk's version.
// Every 4 KiB block read is verified against its CRC32C; a mismatch is an
// error for which IsCorrupt is true, never wrong bytes.
func (s *Store) Get(id ID, off int64, buf []byte) (n int, version uint64, err error) {
	if err := checkRange(id, off, len(buf)); err != nil {
		return 0, 0, err
	}
	if len(buf) > MaxChunkSize {
		buf = buf[:MaxChunkSize]
	}
	r := getReq(opGet, id)
	r.data = buf
	r.off = off
	err = s.part(id).call(r)
	n, version = r.n, r.info.Version
	putReq(r)
	return n, version, err
}

// GetAsync is Get that does not wait: the bytes are copied into buf, then
// done runs on the partition's goroutine with the result; it must not block
// (hand the result to the caller's goroutine). buf belongs to the store
// until done runs. It fails at once, without calling done, with ErrBusy when
// the partition's inbox is full or ErrClosed.
func (s *Store) GetAsync(id ID, off int64, buf []byte, done func(n int, version uint64, err error)) error {
	if err := checkRange(id, off, len(buf)); err != nil {
		return err
	}
	if len(buf) > MaxChunkSize {
		buf = buf[:MaxChunkSize]
	}
	r := getReq(opGet, id)
	r.data, r.off, r.onGet = buf, off, done
	if err := s.part(id).send(r, false); err != nil {
		putReq(r)
		return err
	}
	return nil
}

// Delete removes chunk id durably. version must be at least the stored one.
func (s *Store) Delete(id ID, version uint64) error {
	r := getReq(opDelete, id)
	r.version = version
	err := s.part(id).call(r)
	putReq(r)
	return err
}

// Stat describes chunk id.
func (s *Store) Stat(id ID) (Info, error) {
	r := getReq(opStat, id)
	err := s.part(id).call(r)
	info := r.info
	putReq(r)
	return info, err
}

// List returns up to limit chunks with ids at or above from, in id order:
// one page of a walk over the whole store. Start at ID{}; continue from the
// last id's Next; an empty page (or a last id without a Next) ends the walk.
func (s *Store) List(from ID, limit int) ([]Info, error) {
	if limit <= 0 || limit > maxListLimit {
		return nil, fmt.Errorf("chunkstore: list limit %d out of range [1, %d]", limit, maxListLimit)
	}
	var all []Info
	for _, p := range s.parts {
		r := getReq(opList, from)
		r.n = limit
		err := p.call(r)
		all = append(all, r.list...)
		putReq(r)
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(all, compareInfo)
	if len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

// Close flushes, writes a checkpoint per partition (so the next Open replays
// nothing) and releases the device.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		for _, p := range s.parts {
			r := &request{kind: opClose, done: make(chan struct{}, 1)}
			if err := p.call(r); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
		if err := s.dev.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}
