package netio

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// ServerOptions configures a Server. Zero values take the defaults noted.
type ServerOptions struct {
	// Addr is the TCP listen address, "host:port" (port 0 picks a free one).
	Addr string
	// EventLoops is the number of gnet event loops, one per dataplane core
	// (default runtime.NumCPU()). Each is locked to its OS thread unless
	// NoLockOSThread. Locking is what lets a loop be pinned to a CPU, but
	// it has a price with gnet v2.9.7: its poller calls runtime.Gosched
	// each time a poll finds nothing, which on a locked thread hands the
	// P to another thread and back (two futex wakeups and two context
	// switches per idle turn of the loop). Lock only loops you pin.
	EventLoops     int
	NoLockOSThread bool
	// MaxPayload bounds a request's payload (default DefaultMaxPayload,
	// capped at HardMaxPayload).
	MaxPayload int
	// MaxInFlightPerConn is how many requests of one connection may be
	// outstanding before the server stops dispatching its frames (default 128).
	MaxInFlightPerConn int
	// MaxBufferedPerConn bounds the bytes buffered for a connection that is
	// at its in-flight limit; a peer exceeding it is disconnected (default
	// 2*(HeaderSize+MaxPayload)).
	MaxBufferedPerConn int
	// NoDelay false leaves TCP_NODELAY on (the default); true turns it off.
	DisableNoDelay bool
	// SocketRecvBuffer and SocketSendBuffer set SO_RCVBUF / SO_SNDBUF when > 0.
	SocketRecvBuffer int
	SocketSendBuffer int
	// ReadBufferCap is the size of each event loop's read buffer (default 1 MiB; one per loop).
	ReadBufferCap int
}

// Handler is implemented by the dataplane. Serve is called on an event
// loop goroutine for each well-formed request of a registered opcode and
// must not block: it hands the request on (typically to a storage core) and
// answers later, from any goroutine, with exactly one of req.Reply or
// req.ReplyError.
type Handler interface {
	Serve(req *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(req *Request)

// Serve calls f(req).
func (f HandlerFunc) Serve(req *Request) { f(req) }

// Request is one request handed to a Handler. Its fields and Payload belong
// to the handler from Serve until its reply has completed; netio reuses it
// afterwards.
type Request struct {
	ConnID uint64
	// Loop identifies the event loop that read the request: 0, 1, … in the
	// order the loops first opened a connection. It is the loop's identity
	// whether or not the loop is locked to an OS thread.
	Loop    int
	Opcode  Opcode
	ID      uint64
	Payload []byte
	// Scratch is room for a small part of the reply (a version, a length)
	// that must stay valid until the reply is written: pass a slice of it
	// to ReplyParts. netio does not touch it.
	Scratch [16]byte

	srv     *Server
	st      *connState
	next    *Request // in st.replies
	hdr     [HeaderSize]byte
	iov     [][]byte // header, then the payload's parts; capacity kept across reuse
	buf     []byte
	ebuf    []byte
	done    func(error)
	replied atomic.Bool
}

// MaxReplyParts bounds the slices of one ReplyParts (a 4 MiB chunk read
// from 64 KiB buffers, and a header, take 65).
const MaxReplyParts = 128

// ErrAlreadyReplied is returned by a second reply to one request.
var ErrAlreadyReplied = errors.New("netio: request already replied to")

// ErrTooManyParts is returned by ReplyParts given more than MaxReplyParts slices.
var ErrTooManyParts = errors.New("netio: reply of more than MaxReplyParts slices")

// Reply sends payload as the response, written with writev straight from
// the caller's buffer (netio does not copy it). done, if not nil, is called
// exactly once — on an event loop goroutine (or, when the connection has
// failed, on the goroutine replying), so it must not block — when the
// payload has been written to the socket or to gnet's outbound buffer, or
// the connection has failed; only then may payload be reused. After
// Reply the handler must not touch req. An error is returned (and done is
// not called) only on a second reply.
//
// Replies are queued to the connection's event loop, which writes all the
// replies ready at once with one writev: a reply costs no syscall of its
// own, and at most one wakeup of the loop per batch.
func (r *Request) Reply(payload []byte, done func(err error)) error {
	if !r.replied.CompareAndSwap(false, true) {
		return ErrAlreadyReplied
	}
	r.iov = append(r.iov[:0], nil, payload)
	return r.send(0, done)
}

// ReplyParts is Reply with a payload made of the concatenation of parts
// (at most MaxReplyParts of them), each written from where it lies: a
// header of the handler's and bytes still in a storage buffer, say. The
// CRC32C covers the whole. done is called as for Reply; until then no part
// may be reused.
func (r *Request) ReplyParts(done func(err error), parts ...[]byte) error {
	if len(parts) > MaxReplyParts {
		return ErrTooManyParts
	}
	if !r.replied.CompareAndSwap(false, true) {
		return ErrAlreadyReplied
	}
	r.iov = append(append(r.iov[:0], nil), parts...)
	return r.send(0, done)
}

// ReplyError answers with an error reply carrying code and msg, which the
// client returns as a *RemoteError.
func (r *Request) ReplyError(code uint16, msg string) error {
	if !r.replied.CompareAndSwap(false, true) {
		return ErrAlreadyReplied
	}
	r.ebuf = AppendErrorPayload(r.ebuf[:0], code, msg)
	r.iov = append(r.iov[:0], nil, r.ebuf)
	return r.send(FlagError, nil)
}

// send queues r.iov[1:] as the payload of the reply; the caller has won
// r.replied.
func (r *Request) send(flags Flags, done func(error)) error {
	var size int
	var crc uint32
	for _, p := range r.iov[1:] {
		size += len(p)
		crc = crc32.Update(crc, castagnoli, p)
	}
	if size > HardMaxPayload {
		clear(r.iov)
		r.ebuf = AppendErrorPayload(r.ebuf[:0], CodeTooLarge, "reply payload too large")
		if done != nil {
			done(ErrPayloadTooBig)
		}
		r.iov, flags, done = append(r.iov[:0], nil, r.ebuf), FlagError, nil
		size, crc = len(r.ebuf), Checksum(r.ebuf)
	}
	r.done = done
	EncodeHeader(r.hdr[:], Header{Opcode: r.Opcode, Flags: FlagResponse | flags, ID: r.ID,
		PayloadLen: uint32(size), PayloadCRC: crc})
	r.iov[0] = r.hdr[:]
	if r.srv.stopped.Load() {
		r.complete(ErrServerClosed)
		return nil
	}
	r.st.push(r)
	return nil
}

func (r *Request) complete(err error) {
	if r.done != nil {
		r.done(err)
	}
	st, s := r.st, r.srv
	clear(r.iov)
	r.iov = r.iov[:0]
	r.done, r.st, r.Payload, r.next = nil, nil, nil, nil
	s.reqPool.Put(r)
	s.inflight.Add(-1)
	st.inflight.Add(-1)
}

type connState struct {
	id       uint64
	loop     int // Request.Loop
	conn     gnet.Conn
	inflight atomic.Int64
	// replies is the stack of replies waiting for the event loop, pushed
	// from any goroutine, taken whole by the loop (flush).
	replies atomic.Pointer[Request]
	// looking is true while the event loop is sure to look at replies
	// again (it is in OnTraffic, or a Wake is on its way): a reply pushed
	// then needs no Wake of its own.
	looking atomic.Bool
	closed  atomic.Bool
	// scratch for replies written synchronously on the event loop
	hdr  [HeaderSize]byte
	iov  [2][]byte
	ebuf []byte
	// flush's batch, owned by the event loop
	wiov  [][]byte
	batch []*Request
}

// maxFlushIov bounds the slices of one writev of a flush (the kernel's
// IOV_MAX is 1024).
const maxFlushIov = 512

// maxFlushBytes bounds the bytes of one writev of a flush, so a run of big
// replies does not hold many megabytes in one call.
const maxFlushBytes = 4 << 20

// push queues a reply for the event loop and wakes it unless it is sure to
// look anyway. A reply pushed to a closed connection completes here with
// net.ErrClosed.
func (st *connState) push(r *Request) {
	for {
		old := st.replies.Load()
		r.next = old
		if st.replies.CompareAndSwap(old, r) {
			break
		}
	}
	if !st.looking.Swap(true) {
		if err := st.conn.Wake(nil); err != nil {
			st.looking.Store(false)
			st.failReplies(err)
			return
		}
	}
	if st.closed.Load() {
		st.failReplies(net.ErrClosed)
	}
}

// failReplies completes every queued reply with err (the connection is
// gone).
func (st *connState) failReplies(err error) {
	for r := st.replies.Swap(nil); r != nil; {
		next := r.next
		r.complete(err)
		r = next
	}
}

// flush writes every queued reply, a batch of them per writev, and
// completes them. It runs on the event loop and reports whether it found
// any.
func (st *connState) flush() bool {
	head := st.replies.Swap(nil)
	if head == nil {
		return false
	}
	// The stack holds the newest first: reverse it so replies go out in
	// the order they were made.
	var fifo *Request
	for head != nil {
		next := head.next
		head.next = fifo
		fifo, head = head, next
	}
	bytes := 0
	for r := fifo; r != nil; {
		next := r.next
		if len(st.wiov)+len(r.iov) > maxFlushIov || bytes > maxFlushBytes {
			st.writeBatch()
			bytes = 0
		}
		for _, p := range r.iov {
			bytes += len(p)
		}
		st.wiov = append(st.wiov, r.iov...)
		st.batch = append(st.batch, r)
		r = next
	}
	st.writeBatch()
	return true
}

// writeBatch writes the gathered replies with one writev (gnet keeps what
// the socket does not take at once in its outbound buffer, copied) and
// completes them.
func (st *connState) writeBatch() {
	if len(st.batch) == 0 {
		return
	}
	var err error
	if st.closed.Load() {
		err = net.ErrClosed
	} else {
		_, err = st.conn.Writev(st.wiov)
	}
	clear(st.wiov)
	st.wiov = st.wiov[:0]
	for i, r := range st.batch {
		st.batch[i] = nil
		r.complete(err)
	}
	st.batch = st.batch[:0]
}

// Server serves the framed protocol on gnet event loops.
type Server struct {
	// Counters counts bad input from all connections.
	Counters Counters

	opts    ServerOptions
	handler Handler
	ops     [256]bool

	eng      gnet.Engine
	addr     net.Addr
	booted   chan struct{}
	runDone  chan struct{}
	runErr   error
	started  atomic.Bool
	draining atomic.Bool
	stopped  atomic.Bool
	inflight atomic.Int64
	connIDs  atomic.Uint64
	reqPool  sync.Pool
	loopsMu  sync.Mutex
	loops    map[gnet.EventLoop]int // Request.Loop of each loop seen
}

// NewServer returns a server that hands requests to h. Register the
// opcodes it serves, then Start it.
func NewServer(opts ServerOptions, h Handler) *Server {
	if opts.EventLoops <= 0 {
		opts.EventLoops = runtime.NumCPU()
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	opts.MaxPayload = clampMax(opts.MaxPayload)
	if opts.MaxInFlightPerConn <= 0 {
		opts.MaxInFlightPerConn = 128
	}
	if opts.MaxBufferedPerConn <= 0 {
		opts.MaxBufferedPerConn = 2 * (HeaderSize + opts.MaxPayload)
	}
	if opts.ReadBufferCap <= 0 {
		opts.ReadBufferCap = 1 << 20
	}
	s := &Server{opts: opts, handler: h, booted: make(chan struct{}), runDone: make(chan struct{})}
	s.reqPool.New = func() any { return &Request{srv: s} }
	return s
}

// Register declares opcodes the handler serves; requests with any other
// opcode get a CodeUnknownOpcode error reply. Call it before Start.
func (s *Server) Register(ops ...Opcode) error {
	if s.started.Load() {
		return errors.New("netio: Register after Start")
	}
	for _, op := range ops {
		if op < OpFirstUser {
			return fmt.Errorf("netio: opcode %d is reserved for the protocol", op)
		}
		s.ops[op] = true
	}
	return nil
}

// Start begins listening and serving; it returns once the listener is up.
func (s *Server) Start() error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("netio: server already started")
	}
	nd := gnet.TCPNoDelay
	if s.opts.DisableNoDelay {
		nd = gnet.TCPDelay
	}
	opts := []gnet.Option{
		gnet.WithMulticore(s.opts.EventLoops > 1),
		gnet.WithNumEventLoop(s.opts.EventLoops),
		gnet.WithLockOSThread(!s.opts.NoLockOSThread),
		gnet.WithTCPNoDelay(nd),
		gnet.WithReadBufferCap(s.opts.ReadBufferCap),
		gnet.WithReuseAddr(true),
		gnet.WithLogger(quietLogger{}),
	}
	if s.opts.SocketRecvBuffer > 0 {
		opts = append(opts, gnet.WithSocketRecvBuffer(s.opts.SocketRecvBuffer))
	}
	if s.opts.SocketSendBuffer > 0 {
		opts = append(opts, gnet.WithSocketSendBuffer(s.opts.SocketSendBuffer))
	}
	go func() {
		s.runErr = gnet.Run(&engine{s: s}, "tcp://"+s.opts.Addr, opts...)
		close(s.runDone)
	}()
	select {
	case <-s.booted:
		return nil
	case <-s.runDone:
		if s.runErr == nil {
			s.runErr = ErrServerClosed
		}
		return s.runErr
	}
}

// Addr is the address the server listens on (valid after Start).
func (s *Server) Addr() net.Addr { return s.addr }

// InFlight is the number of requests handed to the handler and not yet
// completed.
func (s *Server) InFlight() int64 { return s.inflight.Load() }

// Stop stops dispatching new requests (they get CodeShuttingDown error
// replies), waits until every request in flight has been replied to and
// its reply written, or ctx is done, then closes all connections and the
// listener. It returns ctx's error if the drain did not finish in time.
func (s *Server) Stop(ctx context.Context) error {
	if !s.started.Load() {
		return nil
	}
	s.draining.Store(true)
	var drainErr error
	tick := time.NewTicker(time.Millisecond)
	for s.inflight.Load() > 0 && drainErr == nil {
		select {
		case <-ctx.Done():
			drainErr = ctx.Err()
		case <-tick.C:
		}
	}
	tick.Stop()
	s.stopped.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.eng.Stop(sctx)
	<-s.runDone
	if drainErr != nil {
		return drainErr
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// engine adapts Server to gnet's EventHandler without exporting its methods.
type engine struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (e *engine) OnBoot(eng gnet.Engine) gnet.Action {
	s := e.s
	s.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
			case *unix.SockaddrInet6:
				s.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
			}
		}
		_ = unix.Close(fd)
	}
	close(s.booted)
	return gnet.None
}

func (e *engine) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&connState{id: e.s.connIDs.Add(1), loop: e.s.loopIndex(c.EventLoop()), conn: c})
	return nil, gnet.None
}

// loopIndex numbers event loops in the order they first open a connection
// (Request.Loop). It runs once per connection, so a mutex is cheap enough.
func (s *Server) loopIndex(l gnet.EventLoop) int {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	i, ok := s.loops[l]
	if !ok {
		if s.loops == nil {
			s.loops = make(map[gnet.EventLoop]int)
		}
		i = len(s.loops)
		s.loops[l] = i
	}
	return i
}

// OnClose fails the replies still queued for the connection; replies made
// later fail as they are pushed (connState.push).
func (e *engine) OnClose(c gnet.Conn, _ error) gnet.Action {
	if st, ok := c.Context().(*connState); ok {
		st.closed.Store(true)
		st.failReplies(net.ErrClosed)
	}
	return gnet.None
}

// OnTraffic writes the replies that are ready, then parses and dispatches
// the frames buffered, until neither is left. It runs for bytes read and
// for Wakes (a reply queued from another goroutine).
func (e *engine) OnTraffic(c gnet.Conn) gnet.Action {
	st, ok := c.Context().(*connState)
	if !ok {
		return gnet.Close
	}
	st.looking.Store(true)
	for {
		st.flush()
		if st.closed.Load() { // a failed write closed it
			return gnet.None
		}
		if act := e.parse(c, st); act != gnet.None {
			return act
		}
		st.looking.Store(false)
		// A reply queued before the store above sent no Wake: write it now
		// (and parse on, since it may have reopened the window).
		if st.replies.Load() == nil || st.looking.Swap(true) {
			return gnet.None
		}
	}
}

// parse dispatches the whole frames buffered, while the connection's
// window allows.
func (e *engine) parse(c gnet.Conn, st *connState) gnet.Action {
	s := e.s
	max := int64(s.opts.MaxInFlightPerConn)
	for {
		n := c.InboundBuffered()
		if st.inflight.Load() >= max {
			// Every completion passes through this loop (flush), which
			// parses on: nothing else to arrange for resuming.
			if n > s.opts.MaxBufferedPerConn {
				s.Counters.WindowOverrun.Add(1)
				return gnet.Close
			}
			return gnet.None
		}
		if n < HeaderSize {
			return gnet.None
		}
		hb, err := c.Peek(HeaderSize)
		if err != nil {
			return gnet.None
		}
		h, err := DecodeHeader(hb, s.opts.MaxPayload)
		if err != nil && err != ErrBadFlags {
			s.Counters.Count(err)
			if err == ErrTooLarge {
				// The header is authentic (its CRC held), so say why before closing.
				h.Opcode, h.ID = Opcode(hb[5]), leUint64(hb[8:])
				st.writeError(h, CodeTooLarge, "payload length over the server's maximum of "+strconv.Itoa(s.opts.MaxPayload))
			}
			return gnet.Close
		}
		total := HeaderSize + int(h.PayloadLen)
		if n < total {
			return gnet.None
		}
		frame, err := c.Peek(total)
		if err != nil {
			return gnet.None
		}
		payload := frame[HeaderSize:]
		switch {
		case err == ErrBadFlags || h.Flags&FlagResponse != 0:
			s.Counters.BadFlags.Add(1)
			st.writeError(h, CodeBadFlags, "request with reserved or response flags set")
		case VerifyPayload(&h, payload) != nil:
			s.Counters.BadPayloadCRC.Add(1)
			st.writeError(h, CodeBadPayloadCRC, "payload CRC32C mismatch")
		case s.draining.Load():
			st.writeError(h, CodeShuttingDown, "server is shutting down")
		case h.Opcode == OpPing:
			PutHeader(st.hdr[:], OpPing, FlagResponse, h.ID, payload)
			st.iov[0], st.iov[1] = st.hdr[:], payload
			_, _ = c.Writev(st.iov[:])
			st.iov[1] = nil
		case !s.ops[h.Opcode]:
			s.Counters.UnknownOpcode.Add(1)
			st.writeError(h, CodeUnknownOpcode, "unknown opcode "+strconv.Itoa(int(h.Opcode)))
		default:
			r := s.reqPool.Get().(*Request)
			if cap(r.buf) < len(payload) {
				r.buf = make([]byte, len(payload))
			}
			r.Payload = r.buf[:copy(r.buf[:len(payload)], payload)]
			r.ConnID, r.Loop, r.Opcode, r.ID, r.st = st.id, st.loop, h.Opcode, h.ID, st
			r.replied.Store(false)
			st.inflight.Add(1)
			s.inflight.Add(1)
			_, _ = c.Discard(total)
			s.handler.Serve(r)
			continue
		}
		_, _ = c.Discard(total)
	}
}

// writeError writes an error reply synchronously; it runs on the event loop.
func (st *connState) writeError(h Header, code uint16, msg string) {
	st.ebuf = AppendErrorPayload(st.ebuf[:0], code, msg)
	PutHeader(st.hdr[:], h.Opcode, FlagResponse|FlagError, h.ID, st.ebuf)
	st.iov[0], st.iov[1] = st.hdr[:], st.ebuf
	_, _ = st.conn.Writev(st.iov[:])
}

// quietLogger drops gnet's chatter and keeps its errors.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)          {}
func (quietLogger) Infof(string, ...any)           {}
func (quietLogger) Warnf(string, ...any)           {}
func (quietLogger) Errorf(format string, a ...any) { log.Printf("netio: gnet: "+format, a...) }
func (quietLogger) Fatalf(format string, a ...any) { log.Fatalf("netio: gnet: "+format, a...) }

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
