package chunkstore

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/nvme"
	"github.com/claudefs/claudefs/nvme/ioengine"
)

type opKind uint8

const (
	opPut opKind = iota + 1
	opGet
	opDelete
	opStat
	opList
	opStats
	opCheckpoint
	opClose
	opReloc   // internal: a cleaner relocation of one live record
	opRelease // hand back the buffers of a GetRef
)

const (
	readBufSize  = 64 << 10 // bytes per read slab buffer
	readBufCount = 256      // read slab buffers per partition (16 MiB)
	// maxGetBufs is the most slab buffers one Get uses: its data pieces
	// plus one for the checksums.
	maxGetBufs = MaxChunkSize/readBufSize + 1
	inboxCap   = 4096
	// reapInboxBurst bounds the requests started between two completions
	// of one reaped batch (see reap).
	reapInboxBurst = 64
	// sumArea is the room reserved at the front of a batch buffer for its
	// summary; data starts right after it, and the write begins at the
	// first summary block actually used.
	sumArea = maxSummaryBlocks * BlockSize
)

// request is one operation travelling from a caller to a partition's
// goroutine. Requests are pooled: nothing here is allocated per I/O.
type request struct {
	kind    opKind
	id      ID
	version uint64
	data    []byte // put: the bytes; get: the destination
	off     int64  // get: offset in the chunk
	n       int    // get: bytes read; list: limit
	info    Info
	list    []Info
	core    *CoreStats // opStats: where the partition's figures go
	t0      int64      // data requests: when the partition accepted it (ns since Open)
	err     error
	done    chan struct{}
	next    *request // FIFO link while waiting inside the partition

	// get state, owned by the partition while the read is in flight
	ent     entry
	b0, b1  int // data blocks [b0, b1) being read
	pending int
	bufs    [maxGetBufs]int32
	nbufs   int
	crcBuf  int32 // slab buffer holding checksums, -1 if not needed
	crcSkip int   // offset of block b0's checksum inside crcBuf
	slot    int
	onPut   func(error)                            // PutAsync/DeleteAsync: called on the partition goroutine
	onRef   func(ReadRef, error)                   // GetRefAsync: called on the partition goroutine
	onGet   func(n int, version uint64, err error) // GetAsync: called on the partition goroutine
	ref     bool                                   // opGet from GetRef: keep the verified bytes in the slab
	want    int                                    // GetRef: bytes asked for
	abandon bool                                   // opClose: stop without a checkpoint (tests simulate a crash)
}

// fifo is an intrusive queue of requests.
type fifo struct{ head, tail *request }

func (q *fifo) push(r *request) {
	r.next = nil
	if q.tail == nil {
		q.head = r
	} else {
		q.tail.next = r
	}
	q.tail = r
}

func (q *fifo) pop() *request {
	r := q.head
	if r != nil {
		q.head = r.next
		if q.head == nil {
			q.tail = nil
		}
		r.next = nil
	}
	return r
}

func (q *fifo) empty() bool { return q.head == nil }

// entry is the index's view of one chunk. A tombstone (a durable delete)
// stays in the index until the next checkpoint, so the records it
// supersedes can never come back during replay.
type entry struct {
	version uint64
	stamp   uint64
	dataLoc int64 // device byte offset of the first data block
	crcLoc  int64 // device byte offset of the record's checksum array
	length  uint32
	crc0    uint32 // checksum of block 0, so 4 KiB reads need no extra I/O
	tomb    bool
}

// newer reports whether (v, stamp) supersedes e: higher version, or the same
// version written later.
func (e *entry) olderThan(v, stamp uint64) bool {
	return v > e.version || (v == e.version && stamp >= e.stamp)
}

type segState uint8

const (
	segFree segState = iota
	segOpen
	segUsed
)

// segment is one of a partition's segments.
type segment struct {
	seq       uint64
	state     segState
	live      int32 // index entries pointing here (tombstones included)
	liveBytes int64 // data bytes of live records
	readers   int32 // reads in flight
	writers   int32 // appends in flight
}

// batch is one combined append being built or in flight.
type batch struct {
	buf        []byte // sumArea + maxBatchBytes, aligned
	segCap     int    // bytes of a segment: the most one batch may take
	bufIdx     int32
	reqs       []*request // one per record, in order
	recs       []record
	crcs       []uint32 // flat backing of recs[i].CRCs
	dataBlocks int
	dataBytes  int
	users      int // records from callers (not relocations)
	puts       int // callers' puts
	firstAt    int64
	// set by flush
	seq       uint64
	idx       uint32
	done      bool  // its write completed
	res       int32 // the write's result
	seg       int
	off       int64 // byte offset inside the segment
	sumBlocks int
	total     int
}

func (b *batch) reset() {
	clear(b.reqs)
	b.reqs = b.reqs[:0]
	b.recs = b.recs[:0]
	b.crcs = b.crcs[:0]
	b.dataBlocks, b.dataBytes, b.users, b.puts = 0, 0, 0, 0
}

// fits reports whether a record of n data bytes still fits.
// A batch never outgrows a segment: it is one write at one place in one
// segment.
func (b *batch) fits(n int) bool {
	nb := blocksFor(n)
	sum := summaryBytes(len(b.recs)+1, b.dataBlocks+nb)
	return len(b.recs) < maxBatchRecords &&
		(b.dataBlocks+nb)*BlockSize <= maxBatchBytes &&
		sum <= sumArea &&
		blocksFor(sum)*BlockSize+(b.dataBlocks+nb)*BlockSize <= b.segCap
}

// userData tags: kind in the top byte, then piece, then slot.
const (
	udBatch = 1 << 56
	udRead  = 2 << 56
	udCkpt  = 3 << 56
)

// partition owns a share of the segments and of the chunk ids. Everything
// in it is touched only by its own goroutine, except inbox and sleeping.
type partition struct {
	s    *Store
	idx  int
	logf func(string, ...any)

	inbox    chan *request
	sleeping atomic.Bool  // the goroutine is (about to be) blocked in the engine
	stopped  atomic.Bool  // the partition is stopping: send refuses
	senders  atomic.Int32 // callers inside send (between the stopped check and Wake)
	gather   atomic.Int32 // writes the sleeping partition still waits for (gatherNeed)
	started  bool         // setup succeeded (read by Store.start after ready)

	eng     ioengine.Engine
	fixed   bool // buffers registered
	cqes    []ioengine.Completion
	op      ioengine.Op // the operation being prepared
	opsLive int         // operations submitted or prepared, not yet reaped
	unsent  int         // operations prepared since the last submit
	maxSent int         // most operations one submit has started (tests)
	readOps int         // the reads among them (at most Depth-2)

	index    map[ID]entry
	segs     []segment // local index i is global segment idx + i*P
	free     []int
	open     int // local index of the open segment, -1 if none
	openSeq  uint64
	writeOff int64
	batchIdx uint32

	bufs    [maxFlying + 1]batch
	cur     *batch
	fly     []*batch // appends in flight, oldest first; acknowledged in this order
	spare   []*batch // batch buffers neither open nor in flight
	roErr   error    // set after a failed append: the partition refuses writes
	expect  int      // records in the last acknowledged batch: how many to wait for
	waitPut fifo
	waitGet fifo

	slab    *nvme.Slab
	slabIdx int32      // the slab's registered buffer index
	slots   []*request // reads in flight by slot
	freeS   []int

	ckpt    ckptState
	clean   cleanState
	closing *request
	abandon bool // closing without a final checkpoint
	stats   Stats

	// Data requests accepted and not answered (send adds, finish takes),
	// refused at the queue limit, and (partition goroutine only) failed,
	// and the latency histograms (see CoreStats).
	queued            atomic.Int32
	refused           atomic.Uint64
	failed            uint64
	readLat, writeLat Histogram
}

func newPartition(s *Store, idx int) *partition {
	p := &partition{
		s: s, idx: idx, logf: s.opts.Logf,
		inbox: make(chan *request, inboxCap),
		index: make(map[ID]entry),
		open:  -1, expect: 1,
	}
	n := int(s.sb.SegmentCount)
	for g := idx; g < n; g += int(s.sb.Partitions) {
		p.segs = append(p.segs, segment{})
	}
	return p
}

// segBase is the device offset of local segment i.
func (p *partition) segBase(i int) int64 {
	g := int64(p.idx) + int64(i)*int64(p.s.sb.Partitions)
	return int64(p.s.sb.DataOff) + g*int64(p.s.sb.SegmentSize)
}

// segOf maps a device offset inside this partition's segments to the local
// segment index.
func (p *partition) segOf(loc int64) int {
	g := (loc - int64(p.s.sb.DataOff)) / int64(p.s.sb.SegmentSize)
	return int(g / int64(p.s.sb.Partitions))
}

// send hands r to the partition. With block false it fails with ErrBusy
// rather than wait for room in the inbox. Once the partition is stopping
// it answers ErrClosed; a request it accepted is always answered (stop
// waits for senders in flight, then fails what is left in the inbox).
func (p *partition) send(r *request, block bool) error {
	p.senders.Add(1)
	defer p.senders.Add(-1)
	if p.stopped.Load() {
		return ErrClosed
	}
	write := r.isWrite() // r belongs to the partition once sent
	if r.isData() {
		if err := p.admit(); err != nil {
			return err
		}
		r.t0 = int64(time.Since(p.s.t0))
	}
	if block {
		p.inbox <- r
	} else {
		select {
		case p.inbox <- r:
		default:
			if r.isData() {
				p.queued.Add(-1)
			}
			return ErrBusy
		}
	}
	if p.sleeping.Load() && (!write || p.gather.Add(-1) <= 0) {
		p.eng.Wake()
	}
	return nil
}

// call sends r to the partition and waits for its answer.
func (p *partition) call(r *request) error {
	if err := p.send(r, true); err != nil {
		return err
	}
	<-r.done
	return r.err
}

// finish answers r: its callback for asynchronous calls (run here, on the
// partition's goroutine), its channel otherwise.
func (p *partition) finish(r *request, err error) {
	r.err = err
	if r.isData() {
		p.account(r, err)
	}
	switch {
	case r.onPut != nil:
		f := r.onPut
		putReq(r)
		f(err)
	case r.onGet != nil:
		f, n, v := r.onGet, r.n, r.info.Version
		putReq(r)
		f(n, v, err)
	case r.onRef != nil:
		f := r.onRef
		if err != nil {
			putReq(r)
			f(ReadRef{}, err)
			return
		}
		f(p.refOf(r), nil)
	default:
		r.done <- struct{}{}
	}
}

// run is the partition goroutine: it locks its OS thread, creates the ring
// on it, reports readiness on ready and serves requests until closed.
func (p *partition) run(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the ring belongs to this thread
	if cpus := p.s.opts.CPUs; len(cpus) > 0 {
		var set unix.CPUSet
		set.Set(cpus[p.idx%len(cpus)])
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			p.logf("chunkstore: partition %d: pinning to CPU %d failed: %v (running unpinned)", p.idx, cpus[p.idx%len(cpus)], err)
		}
	}
	if f := p.s.opts.OnPartitionThread; f != nil {
		f(p.idx)
	}
	if err := p.setup(); err != nil {
		p.teardown()
		p.stopped.Store(true)
		ready <- fmt.Errorf("chunkstore: partition %d: %w", p.idx, err)
		return
	}
	p.started = true
	ready <- nil
	p.loop()
	p.stop()
	p.finish(p.closing, p.closeErr())
}

// stop fails every request that reached the inbox after the close request
// and closes the engine, once no sender can still be sending or waking it.
func (p *partition) stop() {
	p.stopped.Store(true)
	for {
		for drained := false; !drained; {
			select {
			case r := <-p.inbox:
				p.finish(r, ErrClosed)
			default:
				drained = true
			}
		}
		if p.senders.Load() == 0 && len(p.inbox) == 0 {
			break
		}
		runtime.Gosched()
	}
	p.teardown()
}

func (p *partition) closeErr() error {
	if p.ckpt.err != nil {
		return fmt.Errorf("chunkstore: partition %d: final checkpoint: %w (the next open replays the log instead)", p.idx, p.ckpt.err)
	}
	return nil
}

func (p *partition) setup() error {
	eng, err := ioengine.New(p.s.opts.Engine, p.s.opts.QueueDepth, p.logf)
	if err != nil {
		return err
	}
	p.eng = eng
	p.cqes = make([]ioengine.Completion, 4*eng.Depth())
	if err := eng.RegisterFiles([]int{p.s.dev.Fd()}); err != nil {
		return fmt.Errorf("register device with the I/O engine: %w", err)
	}
	var regs [][]byte
	for i := range p.bufs {
		b := &p.bufs[i]
		if b.buf, err = nvme.AllocAligned(sumArea + maxBatchBytes); err != nil {
			return err
		}
		b.bufIdx = int32(i)
		b.segCap = int(p.s.sb.SegmentSize)
		b.reqs = make([]*request, 0, maxBatchRecords)
		b.recs = make([]record, 0, maxBatchRecords)
		b.crcs = make([]uint32, 0, maxBatchBytes/BlockSize)
		regs = append(regs, b.buf)
	}
	if p.slab, err = nvme.NewSlab(readBufCount, readBufSize); err != nil {
		return err
	}
	p.slabIdx = int32(len(regs))
	regs = append(regs, p.slab.Memory())
	if err := eng.RegisterBuffers(regs); err != nil {
		// Registration pins memory against RLIMIT_MEMLOCK; without it
		// the plain opcodes work the same, a little slower.
		p.logf("chunkstore: partition %d: registering I/O buffers failed (%v): using unregistered buffers", p.idx, err)
	} else {
		p.fixed = true
	}
	p.slots = make([]*request, readBufCount)
	p.freeS = make([]int, 0, readBufCount)
	for i := readBufCount - 1; i >= 0; i-- {
		p.freeS = append(p.freeS, i)
	}
	p.cur = &p.bufs[0]
	p.fly = make([]*batch, 0, maxFlying)
	for i := 1; i < len(p.bufs); i++ {
		p.spare = append(p.spare, &p.bufs[i])
	}
	return nil
}

func (p *partition) teardown() {
	if p.eng != nil {
		p.eng.Close()
		p.eng = nil
	}
	for i := range p.bufs {
		nvme.FreeAligned(p.bufs[i].buf)
		p.bufs[i].buf = nil
	}
	if p.slab != nil {
		p.slab.Close()
		p.slab = nil
	}
	p.ckpt.release()
}

func (p *partition) bufIndex(b int32) int32 {
	if !p.fixed {
		return -1
	}
	return b
}

func nanotime() int64 { return time.Now().UnixNano() }

// loop serves requests until a close request has been fully handled.
func (p *partition) loop() {
	for {
		progressed := p.takeInbox(256)
		now := nanotime()
		if p.shouldFlush(now) {
			p.flush()
		}
		p.background()
		if p.closing != nil && p.idle() {
			return
		}
		if p.opsLive > 0 || progressed {
			p.submit()
		}
		if p.reap() > 0 || progressed {
			continue
		}
		// Nothing to do right now: sleep until a completion, a request
		// (Wake) or the combine deadline.
		timeout := time.Second
		if len(p.fly) < p.s.opts.AppendsInFlight && len(p.cur.recs) > 0 {
			timeout = time.Duration(p.cur.firstAt + int64(p.s.opts.CombineDelay) - now)
			if timeout <= 0 {
				continue
			}
		}
		p.gather.Store(p.gatherNeed())
		p.sleeping.Store(true)
		if len(p.inbox) > 0 {
			p.sleeping.Store(false)
			continue
		}
		n, err := p.eng.Submit(1, timeout)
		if err != nil && !errors.Is(err, unix.ETIME) && !errors.Is(err, unix.EINTR) {
			p.logf("chunkstore: partition %d: wait: %v", p.idx, err)
		}
		p.sent(n)
		p.sleeping.Store(false)
	}
}

// gatherNeed is how many more writes the partition, about to sleep, waits
// for before a writer should wake it: the rest of the open batch's expected
// writers when only the count holds the flush back, none to wait for when
// idle, and all of them (a completion will wake it) while no append may
// start. Each writer but the one that completes the batch thus skips the
// wakeup syscall; CombineDelay still bounds the wait.
func (p *partition) gatherNeed() int32 {
	switch {
	case len(p.fly) >= p.s.opts.AppendsInFlight:
		return math.MaxInt32
	case len(p.cur.recs) == 0:
		return 0
	}
	return int32(max(p.expect-len(p.cur.recs), 0))
}

func (r *request) isWrite() bool { return r.kind == opPut || r.kind == opDelete }

// idle reports whether nothing is pending or in flight.
func (p *partition) idle() bool {
	return p.opsLive == 0 && len(p.fly) == 0 && len(p.cur.recs) == 0 &&
		p.waitPut.empty() && p.waitGet.empty() && !p.ckpt.active && !p.ckpt.want && !p.clean.active &&
		(p.closing == nil || p.abandon || p.ckpt.final)
}

// takeInbox handles up to limit requests waiting in the inbox and reports
// whether there were any.
func (p *partition) takeInbox(limit int) bool {
	for i := 0; i < limit; i++ {
		select {
		case r := <-p.inbox:
			p.handle(r)
			if p.unsent >= p.s.opts.SubmitBatch {
				p.submit()
			}
			continue
		default:
		}
		return i > 0
	}
	return true
}

// reap handles the completions the engine has. After each one whose
// callback queued requests (an asynchronous caller's next I/O, typically),
// it starts them and submits at once, so they reach the device while the
// rest of the batch is handled instead of after it: a chain's next read no
// longer waits for its neighbours' checksums, copies and callbacks. With 32
// get chains in flight this took the store from 60–82k to 88–108k IOPS on
// the project's machine, fio's level (docs/benchmarks.md).
func (p *partition) reap() int {
	total := 0
	for {
		n := p.eng.Reap(p.cqes)
		for i := 0; i < n; i++ {
			p.opsLive--
			p.complete(p.cqes[i])
			if i+1 < n && len(p.inbox) > 0 && p.takeInbox(reapInboxBurst) {
				p.submit()
			}
		}
		total += n
		if n < len(p.cqes) {
			return total
		}
	}
}

// defaultSubmitBatch is Options.SubmitBatch's default.
const defaultSubmitBatch = 2

// submit starts the prepared operations without waiting.
func (p *partition) submit() {
	n, err := p.eng.Submit(0, 0)
	if err != nil {
		p.logf("chunkstore: partition %d: submit: %v", p.idx, err)
	}
	p.sent(n)
}

// sent notes that a submit started n operations.
func (p *partition) sent(n int) {
	p.maxSent = max(p.maxSent, n)
	p.unsent = max(p.unsent-n, 0)
}

func (p *partition) complete(c ioengine.Completion) {
	switch c.UserData & (0xff << 56) {
	case udBatch:
		p.batchDone(int(c.UserData&0xff), c.Res)
	case udRead:
		p.readDone(c)
	case udCkpt:
		p.ckptDone(c)
	}
}

// handle starts one request.
func (p *partition) handle(r *request) {
	switch r.kind {
	case opPut, opDelete:
		p.admitWrite(r)
	case opGet:
		p.startGet(r)
	case opRelease:
		p.releaseRead(r)
		p.finish(r, nil)
		p.drainGets()
	case opStat:
		e, ok := p.index[r.id]
		if !ok || e.tomb {
			p.finish(r, ErrNotFound)
			return
		}
		r.info = Info{ID: r.id, Version: e.version, Length: int(e.length)}
		p.finish(r, nil)
	case opList:
		r.list = p.list(r.id, r.n, r.list[:0])
		p.finish(r, nil)
	case opStats:
		p.coreStats(r.core)
		p.finish(r, nil)
	case opCheckpoint:
		p.ckpt.waiters.push(r)
		p.ckpt.want = true
	case opClose:
		if p.closing != nil {
			p.finish(r, ErrClosed)
			return
		}
		// The final checkpoint is taken once everything else is done
		// (background), so the next open replays nothing.
		p.closing = r
		p.abandon = r.abandon
	}
}

// list returns up to limit live ids at or above from, sorted. One pass
// over the index keeps the limit smallest in a bounded max-heap, so a page
// costs O(n log limit) time and O(limit) memory.
func (p *partition) list(from ID, limit int, out []Info) []Info {
	h := out[:0]
	for id, e := range p.index {
		if e.tomb || id.less(from) {
			continue
		}
		in := Info{ID: id, Version: e.version, Length: int(e.length)}
		if len(h) < limit {
			h = append(h, in)
			siftUp(h, len(h)-1)
		} else if in.ID.less(h[0].ID) {
			h[0] = in
			siftDown(h, 0)
		}
	}
	slices.SortFunc(h, compareInfo)
	return h
}

// siftUp and siftDown keep h a max-heap by ID.
func siftUp(h []Info, i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h[parent].ID.less(h[i].ID) {
			return
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

func siftDown(h []Info, i int) {
	for {
		big, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[big].ID.less(h[l].ID) {
			big = l
		}
		if r < len(h) && h[big].ID.less(h[r].ID) {
			big = r
		}
		if big == i {
			return
		}
		h[big], h[i] = h[i], h[big]
		i = big
	}
}
