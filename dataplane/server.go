package dataplane

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	// Net configures the netio server (listen address, event loops, ...).
	Net netio.ServerOptions
	// Workers is the number of goroutines that call the store (default
	// 32 per CPU): store calls block until the I/O is done, so this bounds
	// the store I/Os in flight from the network.
	Workers int
	// QueueDepth bounds the requests waiting for a worker (default 4096);
	// a request arriving at a full queue gets a CodeBusy error reply.
	QueueDepth int
	// Epoch is the initial placement epoch (see SetEpoch).
	Epoch uint64
	// OnConnThread, when set, is called on an event loop with the loop's
	// index (netio's Request.Loop) when a connection's first request is
	// served (and, rarely, again for a connection seen long ago): the
	// place to pin the loop's thread or label its goroutine. It runs on
	// the event loop, so it must not block; it is not called for later
	// requests.
	OnConnThread func(loop int)
	// OnStoreError, when set, is called with each store failure answered
	// to a client that is not the client's own doing (corruption, a full
	// store, a device error; not "not found", a stale version or "busy").
	// It may run on a partition's goroutine and must not block.
	OnStoreError func(err error)
}

// Server serves the shard operations over netio on a chunk store. The
// event loops only decode the frame and queue the request; workers call the
// store synchronously and reply from their own goroutines.
type Server struct {
	store *chunkstore.Store
	net   *netio.Server
	queue chan *netio.Request
	wg    sync.WaitGroup

	// epoch is the placement epoch; fence is held shared by each write and
	// delete from its epoch check until its store call returns, and
	// exclusively by SetEpoch, so that once SetEpoch returns no operation
	// admitted under an older epoch is still running.
	epoch atomic.Uint64
	fence sync.RWMutex

	busy    atomic.Uint64
	started atomic.Bool
	stopped atomic.Bool

	onConn    func(int)
	onErr     func(error)
	connsSeen [connCacheSize]atomic.Uint64 // connection ids already passed to onConn, by id mod size
}

// connCacheSize is the number of connection ids Serve remembers having
// passed to OnConnThread (a power of two).
const connCacheSize = 1024

// NewServer returns a server for store; Start it. The store stays the
// caller's to close, after Stop.
func NewServer(store *chunkstore.Store, cfg Config) (*Server, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 32 * runtime.NumCPU()
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 4096
	}
	s := &Server{store: store, queue: make(chan *netio.Request, cfg.QueueDepth), onConn: cfg.OnConnThread, onErr: cfg.OnStoreError}
	s.epoch.Store(cfg.Epoch)
	s.net = netio.NewServer(cfg.Net, s)
	if err := s.net.Register(Ops...); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.Workers; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	return s, nil
}

// Start listens and serves; it returns once the listener is up.
func (s *Server) Start() error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("dataplane: server already started")
	}
	if err := s.net.Start(); err != nil {
		s.stopWorkers()
		return err
	}
	return nil
}

// Addr is the listen address (after Start).
func (s *Server) Addr() net.Addr { return s.net.Addr() }

// Counters are netio's counts of bad input.
func (s *Server) Counters() *netio.Counters { return &s.net.Counters }

// InFlight is the number of requests received and not yet answered.
func (s *Server) InFlight() int64 { return s.net.InFlight() }

// Busy is the number of requests refused with CodeBusy so far.
func (s *Server) Busy() uint64 { return s.busy.Load() }

// Epoch is the current placement epoch.
func (s *Server) Epoch() uint64 { return s.epoch.Load() }

// SetEpoch raises the placement epoch to e (a lower e leaves it unchanged:
// epochs only move forward) and returns the epoch now in force. Writes and
// deletes carrying an older epoch are refused with CodeStaleEpoch from then
// on; SetEpoch waits for those already admitted to finish, so on return
// none of them can still land. It is how the control process fences a
// dataplane after a placement change (the sidecar channel's epoch.set).
func (s *Server) SetEpoch(e uint64) uint64 {
	s.fence.Lock()
	defer s.fence.Unlock()
	if e > s.epoch.Load() {
		s.epoch.Store(e)
	}
	return s.epoch.Load()
}

// Stop stops accepting requests (new ones get netio's shutting-down
// reply), waits until every request in flight has been answered or ctx is
// done, closes the connections and stops the workers. It does not close
// the store. It returns ctx's error when the drain did not finish in time.
func (s *Server) Stop(ctx context.Context) error {
	if !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if s.started.Load() {
		err = s.net.Stop(ctx)
	}
	// The engine has stopped: Serve is no longer called, so the queue can
	// be closed; workers finish what it still holds.
	s.stopWorkers()
	return err
}

func (s *Server) stopWorkers() {
	close(s.queue)
	s.wg.Wait()
}

// Serve implements netio.Handler. It runs on an event loop and never
// blocks: the request goes to the worker queue or, when that is full, is
// refused with CodeBusy.
func (s *Server) Serve(req *netio.Request) {
	if s.onConn != nil {
		if seen := &s.connsSeen[req.ConnID&(connCacheSize-1)]; seen.Load() != req.ConnID {
			seen.Store(req.ConnID)
			s.onConn(req.Loop)
		}
	}
	// Reads and writes go straight from the event loop to the partition
	// that owns the shard and are answered from its callback: no worker
	// hop, so no extra thread wakeup per request. The rest (and anything
	// the partition cannot take right now) goes through the workers.
	switch req.Opcode {
	case OpWriteShard:
		if s.writeAsync(req) {
			return
		}
	case OpReadShard:
		if s.readAsync(req) {
			return
		}
	}
	select {
	case s.queue <- req:
	default:
		s.busy.Add(1)
		_ = req.ReplyError(CodeBusy, fmt.Sprintf("dataplane busy: %d requests already queued; retry later", cap(s.queue)))
	}
}

func (s *Server) worker() {
	defer s.wg.Done()
	pprof.SetGoroutineLabels(idleWorker)
	for req := range s.queue {
		labelWorker(req.Opcode)
		s.handle(req)
	}
}

// handle runs one request on a worker and replies to it.
func (s *Server) handle(req *netio.Request) {
	var err error
	switch req.Opcode {
	case OpWriteShard:
		err = s.write(req)
	case OpReadShard:
		err = s.read(req)
	case OpDeleteShard:
		err = s.delete(req)
	case OpStatShard:
		err = s.stat(req)
	case OpListShards:
		err = s.list(req)
	case OpStats:
		err = s.stats(req)
	default: // netio only hands registered opcodes on
		err = badf("unknown opcode %d", req.Opcode)
	}
	if err != nil {
		_ = req.ReplyError(codeOf(err), err.Error())
	}
}

// admit checks a write's or delete's epoch and, when it is current, holds
// the fence shared: the caller releases it (s.fence.RUnlock) when the
// store call has returned.
func (s *Server) admit(what string, id chunkstore.ID, epoch uint64) error {
	s.fence.RLock()
	if cur := s.epoch.Load(); epoch < cur {
		s.fence.RUnlock()
		return fmt.Errorf("%w: %s of shard %v carries placement epoch %d, older than the dataplane's epoch %d", ErrStaleEpoch, what, id, epoch, cur)
	}
	return nil
}

func (s *Server) write(req *netio.Request) error {
	r, err := decodeWriteReq(req.Payload)
	if err != nil {
		return err
	}
	if err := s.admit("write", r.ID, r.Epoch); err != nil {
		return err
	}
	err = s.store.Put(r.ID, r.Version, r.Data)
	s.fence.RUnlock()
	if err != nil {
		return s.storeErr("write", r.ID, r.Version, err)
	}
	return req.Reply(nil, nil)
}

// asyncOp carries one request through a partition's asynchronous call.
// Its callbacks are method values bound once, when the op is made, so a
// request allocates nothing on its way (the ops are pooled).
type asyncOp struct {
	s       *Server
	req     *netio.Request
	id      chunkstore.ID
	version uint64
	ref     chunkstore.ReadRef
	parts   [][]byte

	onPut     func(error)
	onRef     func(chunkstore.ReadRef, error)
	onWritten func(error)
}

var opPool sync.Pool

func init() {
	opPool.New = func() any {
		op := &asyncOp{}
		op.onPut, op.onRef, op.onWritten = op.putDone, op.refDone, op.replyWritten
		return op
	}
}

func getOp(s *Server, req *netio.Request) *asyncOp {
	op := opPool.Get().(*asyncOp)
	op.s, op.req = s, req
	return op
}

func (op *asyncOp) free() {
	clear(op.parts)
	op.s, op.req, op.ref, op.parts = nil, nil, chunkstore.ReadRef{}, op.parts[:0]
	opPool.Put(op)
}

// writeAsync starts a write on its partition; false when the partition's
// inbox is full (the caller falls back to a worker, which waits).
func (s *Server) writeAsync(req *netio.Request) bool {
	r, err := decodeWriteReq(req.Payload)
	if err != nil {
		_ = req.ReplyError(codeOf(err), err.Error())
		return true
	}
	if err := s.admit("write", r.ID, r.Epoch); err != nil {
		_ = req.ReplyError(codeOf(err), err.Error())
		return true
	}
	op := getOp(s, req)
	op.id, op.version = r.ID, r.Version
	err = s.store.PutAsync(r.ID, r.Version, r.Data, op.onPut)
	if err != nil {
		s.fence.RUnlock()
		op.free()
		if errors.Is(err, chunkstore.ErrBusy) {
			return false
		}
		err = s.storeErr("write", r.ID, r.Version, err)
		_ = req.ReplyError(codeOf(err), err.Error())
	}
	return true
}

// putDone answers a write once the partition has made it durable (or
// failed it). It runs on the partition's goroutine.
func (op *asyncOp) putDone(err error) {
	s, req, id, version := op.s, op.req, op.id, op.version
	s.fence.RUnlock()
	op.free()
	if err == nil {
		_ = req.Reply(nil, nil)
		return
	}
	err = s.storeErr("write", id, version, err)
	_ = req.ReplyError(codeOf(err), err.Error())
}

// readAsync starts a read on its partition, which verifies the bytes in
// its registered read buffers; the reply is written from those buffers
// (refDone), with no copy in between. false when the partition's inbox is
// full.
func (s *Server) readAsync(req *netio.Request) bool {
	r, err := decodeReadReq(req.Payload)
	if err != nil {
		_ = req.ReplyError(codeOf(err), err.Error())
		return true
	}
	op := getOp(s, req)
	op.id = r.ID
	err = s.store.GetRefAsync(r.ID, int64(r.Offset), int(r.Length), op.onRef)
	if err != nil {
		op.free()
		if errors.Is(err, chunkstore.ErrBusy) {
			return false
		}
		err = s.storeErr("read", r.ID, 0, err)
		_ = req.ReplyError(codeOf(err), err.Error())
	}
	return true
}

// refDone replies to a read with the version (in the request's scratch)
// and the verified bytes where they lie; the buffers go back to the store
// once netio has written them (replyWritten). It runs on the partition's
// goroutine.
func (op *asyncOp) refDone(ref chunkstore.ReadRef, err error) {
	req := op.req
	if err != nil {
		s, id := op.s, op.id
		op.free()
		err = s.storeErr("read", id, 0, err)
		_ = req.ReplyError(codeOf(err), err.Error())
		return
	}
	op.ref = ref
	le.PutUint64(req.Scratch[:readHdrSize], ref.Version())
	op.parts = ref.Buffers(append(op.parts[:0], req.Scratch[:readHdrSize]))
	if err := req.ReplyParts(op.onWritten, op.parts...); err != nil {
		// Only a read of more parts than netio takes gets here: a bug.
		msg := fmt.Sprintf("read of shard %v: %v", op.id, err)
		op.replyWritten(err)
		_ = req.ReplyError(CodeStoreError, msg)
	}
}

// replyWritten releases a read's buffers once its reply is written.
func (op *asyncOp) replyWritten(error) {
	op.ref.Release()
	op.free()
}

func (s *Server) delete(req *netio.Request) error {
	r, err := decodeDeleteReq(req.Payload)
	if err != nil {
		return err
	}
	if err := s.admit("delete", r.ID, r.Epoch); err != nil {
		return err
	}
	err = s.store.Delete(r.ID, r.Version)
	s.fence.RUnlock()
	if err != nil {
		return s.storeErr("delete", r.ID, r.Version, err)
	}
	return req.Reply(nil, nil)
}

func (s *Server) read(req *netio.Request) error {
	r, err := decodeReadReq(req.Payload)
	if err != nil {
		return err
	}
	buf := getBuf(readHdrSize + int(r.Length))
	b := (*buf)[:readHdrSize+int(r.Length)]
	n, version, err := s.store.Get(r.ID, int64(r.Offset), b[readHdrSize:])
	if err != nil {
		putBuf(buf)
		return s.storeErr("read", r.ID, 0, err)
	}
	le.PutUint64(b, version)
	return req.Reply(b[:readHdrSize+n], func(error) { putBuf(buf) })
}

func (s *Server) stat(req *netio.Request) error {
	id, err := decodeStatReq(req.Payload)
	if err != nil {
		return err
	}
	info, err := s.store.Stat(id)
	if err != nil {
		return s.storeErr("stat", id, 0, err)
	}
	buf := getBuf(statRespSize)
	return req.Reply(appendStatResp((*buf)[:0], info), func(error) { putBuf(buf) })
}

func (s *Server) list(req *netio.Request) error {
	r, err := decodeListReq(req.Payload)
	if err != nil {
		return err
	}
	page, err := s.store.List(r.From, int(r.Limit))
	if err != nil {
		return s.storeErr("list from", r.From, 0, err)
	}
	buf := getBuf(listRespSize(len(page)))
	return req.Reply(appendListResp((*buf)[:0], page), func(error) { putBuf(buf) })
}

func (s *Server) stats(req *netio.Request) error {
	if len(req.Payload) != 0 {
		return badf("stats: payload of %d bytes, want none", len(req.Payload))
	}
	st, err := s.store.Stats()
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return req.Reply(appendStatsResp(nil, Stats{Stats: st, Epoch: s.epoch.Load()}), nil)
}

// storeErr words a store error for the error reply; a stale version names
// the version the store holds.
func (s *Server) storeErr(what string, id chunkstore.ID, version uint64, err error) error {
	if errors.Is(err, chunkstore.ErrStaleVersion) {
		held := "a newer version"
		var sv *chunkstore.StaleVersionError
		if errors.As(err, &sv) {
			held = fmt.Sprintf("version %d", sv.Held)
		}
		return fmt.Errorf("%w: %s of shard %v at version %d refused: the store holds %s", chunkstore.ErrStaleVersion, what, id, version, held)
	}
	err = fmt.Errorf("%s shard %v: %w", what, id, err)
	if s.onErr != nil {
		switch codeOf(err) {
		case CodeCorrupt, CodeNoSpace, CodeStoreError:
			s.onErr(err)
		}
	}
	return err
}

// Reply buffers come from size classes of 2^k + bufSlack bytes (so a read
// of 2^k bytes and its version header share one class), from 64 B to
// MaxChunkSize; larger ones are allocated and dropped.
const (
	bufSlack    = 64
	minBufShift = 6
	maxBufShift = 22 // chunkstore.MaxChunkSize
)

var bufPools [maxBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift+bufSlack {
		return minBufShift
	}
	return bits.Len(uint(n - bufSlack - 1))
}

func getBuf(n int) *[]byte {
	c := bufClass(n)
	if c > maxBufShift {
		b := make([]byte, n)
		return &b
	}
	if b, ok := bufPools[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 1<<c+bufSlack)
	return &b
}

func putBuf(b *[]byte) {
	c := bufClass(cap(*b))
	if c > maxBufShift || cap(*b) != 1<<c+bufSlack {
		return
	}
	*b = (*b)[:cap(*b)]
	bufPools[c].Put(b)
}
