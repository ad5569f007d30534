package netio

import (
	"context"
	"errors"
	"fmt"
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
	// NoLockOSThread.
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
	ConnID  uint64
	Opcode  Opcode
	ID      uint64
	Payload []byte

	srv     *Server
	st      *connState
	hdr     [HeaderSize]byte
	iov     [2][]byte
	buf     []byte
	ebuf    []byte
	done    func(error)
	cb      gnet.AsyncCallback
	replied atomic.Bool
}

// ErrAlreadyReplied is returned by a second reply to one request.
var ErrAlreadyReplied = errors.New("netio: request already replied to")

// Reply sends payload as the response, written with writev straight from
// the caller's buffer (netio does not copy it). done, if not nil, is called
// exactly once — on an event loop goroutine, so it must not block — when
// the payload has been written to the socket or to gnet's outbound buffer,
// or the connection has failed; only then may payload be reused. After
// Reply the handler must not touch req. An error is returned (and done is
// not called) only on a second reply.
func (r *Request) Reply(payload []byte, done func(err error)) error {
	return r.reply(0, payload, done)
}

// ReplyError answers with an error reply carrying code and msg, which the
// client returns as a *RemoteError.
func (r *Request) ReplyError(code uint16, msg string) error {
	r.ebuf = AppendErrorPayload(r.ebuf[:0], code, msg)
	return r.reply(FlagError, r.ebuf, nil)
}

func (r *Request) reply(flags Flags, payload []byte, done func(error)) error {
	if !r.replied.CompareAndSwap(false, true) {
		return ErrAlreadyReplied
	}
	if len(payload) > HardMaxPayload {
		r.ebuf = AppendErrorPayload(r.ebuf[:0], CodeTooLarge, "reply payload too large")
		if done != nil {
			done(ErrPayloadTooBig)
		}
		payload, flags, done = r.ebuf, FlagError, nil
	}
	r.done = done
	PutHeader(r.hdr[:], r.Opcode, FlagResponse|flags, r.ID, payload)
	r.iov[0], r.iov[1] = r.hdr[:], payload
	if r.srv.stopped.Load() {
		r.complete(ErrServerClosed)
		return nil
	}
	if err := r.st.conn.AsyncWritev(r.iov[:], r.cb); err != nil {
		r.complete(err)
	}
	return nil
}

func (r *Request) written(_ gnet.Conn, err error) error {
	r.complete(err)
	return nil
}

func (r *Request) complete(err error) {
	if r.done != nil {
		r.done(err)
	}
	st, s := r.st, r.srv
	r.iov[0], r.iov[1] = nil, nil
	r.done, r.st, r.Payload = nil, nil, nil
	s.reqPool.Put(r)
	s.inflight.Add(-1)
	if st.inflight.Add(-1) < int64(s.opts.MaxInFlightPerConn) && st.paused.CompareAndSwap(true, false) {
		_ = st.conn.Wake(nil) // resume parsing what was buffered meanwhile
	}
}

type connState struct {
	id       uint64
	conn     gnet.Conn
	inflight atomic.Int64
	paused   atomic.Bool
	// scratch for replies written synchronously on the event loop
	hdr  [HeaderSize]byte
	iov  [2][]byte
	ebuf []byte
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
	s.reqPool.New = func() any {
		r := &Request{srv: s}
		r.cb = r.written
		return r
	}
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
	c.SetContext(&connState{id: e.s.connIDs.Add(1), conn: c})
	return nil, gnet.None
}

func (e *engine) OnTraffic(c gnet.Conn) gnet.Action {
	s := e.s
	st, ok := c.Context().(*connState)
	if !ok {
		return gnet.Close
	}
	max := int64(s.opts.MaxInFlightPerConn)
	for {
		n := c.InboundBuffered()
		if st.inflight.Load() >= max {
			st.paused.Store(true)
			// A reply may have completed between the load and the store;
			// re-check so the Wake it would have sent is not lost.
			if st.inflight.Load() >= max || !st.paused.CompareAndSwap(true, false) {
				if n > s.opts.MaxBufferedPerConn {
					s.Counters.WindowOverrun.Add(1)
					return gnet.Close
				}
				return gnet.None
			}
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
			r.ConnID, r.Opcode, r.ID, r.st = st.id, h.Opcode, h.ID, st
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
