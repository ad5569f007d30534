package netio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ClientOptions configures a Client. Zero values take the defaults noted.
type ClientOptions struct {
	// ConnsPerAddr is the size of each address's connection pool (default 2).
	ConnsPerAddr int
	// MaxInFlight bounds the calls in flight on the whole client (default 1024).
	MaxInFlight int
	// MaxInFlightPerConn bounds the calls outstanding on one connection
	// (default 128); keep it at most the server's MaxInFlightPerConn.
	MaxInFlightPerConn int
	// MaxPayload bounds response payloads (default DefaultMaxPayload).
	MaxPayload int
	// DialTimeout bounds connecting (default 2s).
	DialTimeout time.Duration
	// AttemptTimeout, when > 0, bounds each attempt of a call; an expired
	// attempt of an idempotent call is retried while the context allows.
	AttemptTimeout time.Duration
	// MaxRetries bounds the retries of an idempotent call (default 3;
	// negative means none).
	MaxRetries int
	// BackoffBase and BackoffMax shape the exponential backoff with jitter
	// between retries (defaults 2ms and 200ms).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// SocketRecvBuffer and SocketSendBuffer set SO_RCVBUF / SO_SNDBUF when > 0.
	SocketRecvBuffer int
	SocketSendBuffer int
	// ReadBufferSize is each connection's read buffer (default 64 KiB).
	ReadBufferSize int
}

// Client calls servers over a small pool of connections per address, many
// calls in flight per connection, multiplexed by request id.
type Client struct {
	// Counters counts bad input from all connections.
	Counters Counters

	opts     ClientOptions
	sem      chan struct{}
	mu       sync.RWMutex
	pools    map[string]*connPool
	closed   atomic.Bool
	callPool sync.Pool
}

type connPool struct {
	slots []poolSlot
	next  atomic.Uint32
}

type poolSlot struct {
	mu sync.Mutex // held while dialing
	cc atomic.Pointer[cconn]
}

type call struct {
	done  chan struct{}
	resp  []byte
	err   error
	timer *time.Timer
	// unverified: the reply's payload CRC is left to the caller (crc
	// receives it); error replies are verified all the same.
	unverified bool
	crc        uint32
}

// NewClient returns a client; it dials lazily.
func NewClient(opts ClientOptions) *Client {
	if opts.ConnsPerAddr <= 0 {
		opts.ConnsPerAddr = 2
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 1024
	}
	if opts.MaxInFlightPerConn <= 0 {
		opts.MaxInFlightPerConn = 128
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	opts.MaxPayload = clampMax(opts.MaxPayload)
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 3
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 2 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 200 * time.Millisecond
	}
	if opts.ReadBufferSize <= 0 {
		opts.ReadBufferSize = 64 << 10
	}
	c := &Client{opts: opts, sem: make(chan struct{}, opts.MaxInFlight), pools: map[string]*connPool{}}
	c.callPool.New = func() any { return &call{done: make(chan struct{}, 1)} }
	return c
}

// Call sends a request with opcode op and payload to addr and waits for its
// response, or for ctx to end. The response payload is read into respBuf
// when its capacity suffices (otherwise into a new buffer) and returned.
// An error reply from the server is returned as a *RemoteError. When
// idempotent is true, connection failures and attempt timeouts are retried
// with backoff, at most MaxRetries times; otherwise they are returned
// (wrapping ErrConnBroken or ErrAttemptTimeout), and the request may or may
// not have been executed. payload is not retained after Call returns.
func (c *Client) Call(ctx context.Context, addr string, op Opcode, payload, respBuf []byte, idempotent bool) ([]byte, error) {
	resp, _, err := c.call(ctx, addr, op, outgoing{body: payload}, respBuf, idempotent, false)
	return resp, err
}

// CallParts is Call with the request payload in two parts, head‖body,
// sent without joining them (writev), and bodyCRC, the CRC32C of body,
// which the caller computed for its own end-to-end check: the frame's
// payload CRC is made from it and the head's (CombineCRC) instead of
// another pass over body. A wrong bodyCRC makes the server refuse the
// frame (a bad payload CRC), never store other bytes.
func (c *Client) CallParts(ctx context.Context, addr string, op Opcode, head, body []byte, bodyCRC uint32, respBuf []byte, idempotent bool) ([]byte, error) {
	resp, _, err := c.call(ctx, addr, op, outgoing{head: head, body: body, bodyCRC: bodyCRC, crcKnown: true}, respBuf, idempotent, false)
	return resp, err
}

// outgoing is a request's payload: head‖body, and body's CRC32C when known.
type outgoing struct {
	head, body []byte
	bodyCRC    uint32
	crcKnown   bool
}

func (o *outgoing) len() int { return len(o.head) + len(o.body) }

// crc is the CRC32C of the whole payload.
func (o *outgoing) crc() uint32 {
	h := Checksum(o.head)
	if o.crcKnown {
		return CombineCRC(h, o.bodyCRC, len(o.body))
	}
	return crc32.Update(h, castagnoli, o.body)
}

// CallUnverified is Call for a caller that checks the response payload's
// bytes with CRC32C end to end anyway: the payload's frame CRC is not
// computed here but returned, and the caller must check the payload
// against it (CombineCRC joins the CRC of a part it does not check itself
// with the CRC it computes), so one pass over the bytes serves both
// checks. A payload that fails it must be treated as never received. An
// error reply's payload is checked here as by Call.
func (c *Client) CallUnverified(ctx context.Context, addr string, op Opcode, payload, respBuf []byte, idempotent bool) (resp []byte, payloadCRC uint32, err error) {
	return c.call(ctx, addr, op, outgoing{body: payload}, respBuf, idempotent, true)
}

func (c *Client) call(ctx context.Context, addr string, op Opcode, payload outgoing, respBuf []byte, idempotent, unverified bool) ([]byte, uint32, error) {
	if payload.len() > HardMaxPayload {
		return nil, 0, ErrPayloadTooBig
	}
	if c.closed.Load() {
		return nil, 0, ErrClientClosed
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	cl := c.callPool.Get().(*call)
	cl.unverified = unverified
	var resp []byte
	var err error
	for attempt := 0; ; attempt++ {
		resp, err = c.attempt(ctx, cl, addr, op, payload, respBuf)
		if err == nil || !idempotent || attempt >= c.opts.MaxRetries || !retryable(err) || ctx.Err() != nil || c.closed.Load() {
			break
		}
		if berr := c.backoff(ctx, attempt); berr != nil {
			break
		}
	}
	crc := cl.crc
	cl.resp, cl.err, cl.crc, cl.unverified = nil, nil, 0, false
	c.callPool.Put(cl)
	<-c.sem
	return resp, crc, err
}

func retryable(err error) bool {
	return errors.Is(err, ErrConnBroken) || errors.Is(err, ErrAttemptTimeout)
}

func (c *Client) backoff(ctx context.Context, attempt int) error {
	d := c.opts.BackoffBase << attempt
	if d <= 0 || d > c.opts.BackoffMax {
		d = c.opts.BackoffMax
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) attempt(ctx context.Context, cl *call, addr string, op Opcode, payload outgoing, respBuf []byte) ([]byte, error) {
	cc, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	select {
	case cc.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-cc.slots }()

	cl.resp, cl.err, cl.crc = respBuf[:0], nil, 0
	id, err := cc.register(cl)
	if err != nil {
		return nil, err
	}
	if err := cc.write(op, id, payload); err != nil {
		cc.fail(err) // completes cl with ErrConnBroken
	}
	var expired <-chan time.Time
	if c.opts.AttemptTimeout > 0 {
		if cl.timer == nil {
			cl.timer = time.NewTimer(c.opts.AttemptTimeout)
		} else {
			cl.timer.Reset(c.opts.AttemptTimeout)
		}
		defer cl.timer.Stop()
		expired = cl.timer.C
	}
	select {
	case <-cl.done:
		return cl.resp, cl.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = ErrAttemptTimeout
	}
	if cc.unregister(id) {
		return nil, err
	}
	// The reader took the call and is completing it: wait for that, so
	// that respBuf is no longer written once Call returns.
	<-cl.done
	return cl.resp, cl.err
}

func (c *Client) pool(addr string) *connPool {
	c.mu.RLock()
	p := c.pools[addr]
	c.mu.RUnlock()
	if p != nil {
		return p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p = c.pools[addr]; p == nil {
		p = &connPool{slots: make([]poolSlot, c.opts.ConnsPerAddr)}
		c.pools[addr] = p
	}
	return p
}

// conn returns a healthy connection of addr's pool, dialing if the chosen
// slot is empty or broken.
func (c *Client) conn(ctx context.Context, addr string) (*cconn, error) {
	p := c.pool(addr)
	s := &p.slots[int(p.next.Add(1))%len(p.slots)]
	if cc := s.cc.Load(); cc != nil && !cc.broken.Load() {
		return cc, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc := s.cc.Load(); cc != nil && !cc.broken.Load() {
		return cc, nil
	}
	if c.closed.Load() {
		return nil, ErrClientClosed
	}
	d := net.Dialer{Timeout: c.opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: dial %s: %v", ErrConnBroken, addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		if c.opts.SocketRecvBuffer > 0 {
			_ = tc.SetReadBuffer(c.opts.SocketRecvBuffer)
		}
		if c.opts.SocketSendBuffer > 0 {
			_ = tc.SetWriteBuffer(c.opts.SocketSendBuffer)
		}
	}
	cc := &cconn{
		c:     c,
		nc:    nc,
		calls: make(map[uint64]*call, c.opts.MaxInFlightPerConn),
		slots: make(chan struct{}, c.opts.MaxInFlightPerConn),
		wq:    make([]byte, 0, 64<<10),
		spare: make([]byte, 0, 64<<10),
	}
	cc.fr = NewFrameReader(bufio.NewReaderSize(nc, c.opts.ReadBufferSize), c.opts.MaxPayload, &c.Counters)
	s.cc.Store(cc)
	go cc.readLoop()
	if c.closed.Load() { // raced with Close
		cc.fail(ErrClientClosed)
	}
	return cc, nil
}

// Close fails every call in flight with ErrConnBroken and closes all
// connections; later calls return ErrClientClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, p := range c.pools {
		for i := range p.slots {
			p.slots[i].mu.Lock()
			if cc := p.slots[i].cc.Load(); cc != nil {
				cc.fail(ErrClientClosed)
			}
			p.slots[i].mu.Unlock()
		}
	}
	return nil
}

// smallWrite is the largest payload copied next to its header to go out in
// one write; larger ones go out with writev straight from the caller's buffer.
const smallWrite = 64 << 10

type cconn struct {
	c      *Client
	nc     net.Conn
	fr     *FrameReader
	slots  chan struct{}
	broken atomic.Bool

	// Small frames are combined: a caller appends its frame to wq and, if
	// no one is writing, becomes the writer and sends everything queued,
	// over and over until wq is empty, so frames queued meanwhile by other
	// callers go out in one write. wmu guards wq, spare and writing.
	wmu     sync.Mutex
	wq      []byte
	spare   []byte
	writing bool
	// sockmu is held by whoever writes to the socket, so frames never
	// interleave.
	sockmu sync.Mutex
	hbuf   [HeaderSize]byte
	iov    net.Buffers
	iova   [3][]byte

	mu     sync.Mutex
	calls  map[uint64]*call
	nextID uint64
	err    error
}

func (cc *cconn) register(cl *call) (uint64, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil {
		return 0, fmt.Errorf("%w: %v", ErrConnBroken, cc.err)
	}
	cc.nextID++
	cc.calls[cc.nextID] = cl
	return cc.nextID, nil
}

// unregister removes a call whose caller gives up; false means the reader
// (or a failure) already took it and will signal its completion.
func (cc *cconn) unregister(id uint64) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.calls[id]; !ok {
		return false
	}
	delete(cc.calls, id)
	return true
}

func (cc *cconn) take(id uint64) *call {
	cc.mu.Lock()
	cl := cc.calls[id]
	if cl != nil {
		delete(cc.calls, id)
	}
	cc.mu.Unlock()
	return cl
}

// zeroHeader makes room for a frame header in the combined-write queue.
var zeroHeader [HeaderSize]byte

// maxSpare bounds the combined-write buffer kept for reuse. The queue is
// bounded anyway: at most MaxInFlightPerConn frames of at most smallWrite.
const maxSpare = 4 << 20

// write sends one request frame, payload.head‖payload.body. A small one is
// copied into the queue of combined writes: if another caller is writing,
// it will send it, and write returns at once; otherwise this caller writes
// the queue, and goes on while others fill it. A large one is written
// alone, header and parts in one writev. A write error fails the
// connection (the caller that got it calls fail), which completes every
// call waiting on it, those whose frames were queued included. The
// payload is never retained.
func (cc *cconn) write(op Opcode, id uint64, payload outgoing) error {
	h := Header{Opcode: op, ID: id, PayloadLen: uint32(payload.len()), PayloadCRC: payload.crc()}
	if payload.len() > smallWrite {
		cc.sockmu.Lock()
		defer cc.sockmu.Unlock()
		cc.iova[0] = EncodeHeader(cc.hbuf[:], h)
		cc.iova[1], cc.iova[2] = payload.head, payload.body
		cc.iov = cc.iova[:]
		_, err := cc.iov.WriteTo(cc.nc)
		cc.iova[1], cc.iova[2] = nil, nil
		return err
	}
	cc.wmu.Lock()
	n := len(cc.wq)
	cc.wq = append(cc.wq, zeroHeader[:]...) // room for the header
	EncodeHeader(cc.wq[n:], h)
	cc.wq = append(cc.wq, payload.head...)
	cc.wq = append(cc.wq, payload.body...)
	if cc.writing {
		cc.wmu.Unlock()
		return nil
	}
	cc.writing = true
	// Let the goroutines that are ready to run (callers the reader has
	// just answered, typically, about to send their next request) queue
	// their frames first, so they go out in this write: one syscall, and
	// one pass of the loopback or NIC path, for the lot. When nothing else
	// is runnable this returns at once.
	cc.wmu.Unlock()
	runtime.Gosched()
	cc.wmu.Lock()
	var err error
	for len(cc.wq) > 0 && err == nil {
		buf := cc.wq
		cc.wq = cc.spare[:0]
		cc.wmu.Unlock()
		cc.sockmu.Lock()
		_, err = cc.nc.Write(buf)
		cc.sockmu.Unlock()
		cc.wmu.Lock()
		if cap(buf) <= maxSpare {
			cc.spare = buf[:0]
		}
	}
	cc.writing = false
	cc.wmu.Unlock()
	return err
}

// fail marks the connection broken, closes it and completes every call
// waiting on it with ErrConnBroken.
func (cc *cconn) fail(cause error) {
	cc.broken.Store(true)
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = cause
	}
	calls := cc.calls
	cc.calls = map[uint64]*call{}
	cc.mu.Unlock()
	_ = cc.nc.Close()
	if len(calls) == 0 {
		return
	}
	err := fmt.Errorf("%w: %v", ErrConnBroken, cause)
	for _, cl := range calls {
		cl.resp, cl.err = nil, err
		cl.done <- struct{}{}
	}
}

func (cc *cconn) readLoop() {
	for {
		h, err := cc.fr.ReadHeader()
		if err == nil && h.Flags&FlagResponse == 0 {
			cc.c.Counters.BadFlags.Add(1)
			err = ErrBadFlags
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			cc.fail(err)
			return
		}
		cl := cc.take(h.ID)
		if cl == nil {
			cc.c.Counters.UnknownResponse.Add(1)
			if _, err := io.CopyN(io.Discard, cc.fr.r, int64(h.PayloadLen)); err != nil {
				cc.fail(err)
				return
			}
			continue
		}
		var p []byte
		if cl.unverified && h.Flags&FlagError == 0 {
			p, err = cc.fr.readPayload(&h, cl.resp, false)
			cl.crc = h.PayloadCRC
		} else {
			p, err = cc.fr.ReadPayload(&h, cl.resp)
		}
		switch {
		case err == ErrBadPayloadCRC:
			cl.resp, cl.err = nil, err // the stream is still framed
		case err != nil:
			cl.resp, cl.err = nil, fmt.Errorf("%w: %v", ErrConnBroken, err)
			cl.done <- struct{}{}
			cc.fail(err)
			return
		case h.Flags&FlagError != 0:
			cl.resp, cl.err = nil, ParseErrorPayload(p)
		default:
			cl.resp, cl.err = p, nil
		}
		cl.done <- struct{}{}
	}
}
