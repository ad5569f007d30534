package raftmux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// peer holds this node's outgoing connections to one address: one per
// lane, dialled on first use and again after a failure.
type peer struct {
	m    *Mux
	addr string

	mu       sync.Mutex
	conns    [numLanes]*outConn  // guarded by mu
	dialing  [numLanes]*dialWait // guarded by mu
	failedAt [numLanes]time.Time // last failed dial, guarded by mu
	failErr  [numLanes]error     // guarded by mu
	closed   bool                // guarded by mu
}

type dialWait struct {
	done chan struct{}
	conn *outConn
	err  error
}

func (m *Mux) peer(addr string) (*peer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	p, ok := m.peers[addr]
	if !ok {
		p = &peer{m: m, addr: addr}
		m.peers[addr] = p
	}
	return p, nil
}

// conn returns the open connection of lane, dialling if there is none.
// Concurrent callers share one dial; after a failed dial, callers fail at
// once for DialBackoff.
func (p *peer) conn(lane byte, deadline time.Time) (*outConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if c := p.conns[lane]; c != nil && !c.isDone() {
		p.mu.Unlock()
		return c, nil
	}
	if w := p.dialing[lane]; w != nil {
		p.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-w.done:
			return w.conn, w.err
		case <-t.C:
			return nil, fmt.Errorf("%w: %w: waiting for a connection to %s", ErrUnreachable, ErrTimeout, p.addr)
		}
	}
	if err := p.failErr[lane]; err != nil && time.Since(p.failedAt[lane]) < p.m.cfg.DialBackoff {
		p.mu.Unlock()
		return nil, err
	}
	w := &dialWait{done: make(chan struct{})}
	p.dialing[lane] = w
	p.mu.Unlock()

	c, err := p.m.dialOut(p.addr, lane)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUnreachable, err)
	}

	p.mu.Lock()
	p.dialing[lane] = nil
	if err == nil && p.closed {
		c.close(ErrClosed)
		c, err = nil, ErrClosed
	}
	if err != nil {
		p.failErr[lane], p.failedAt[lane] = err, time.Now()
	} else {
		p.conns[lane], p.failErr[lane] = c, nil
	}
	p.mu.Unlock()
	w.conn, w.err = c, err
	close(w.done)
	return c, err
}

func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.close(ErrClosed)
		}
	}
}

// dial connects to addr and exchanges hellos. The returned net.Conn has no
// deadline set.
func (m *Mux) dial(addr string, lane byte) (net.Conn, *bufio.Reader, *hello, error) {
	m.stats.dials.Add(1)
	d := net.Dialer{Timeout: m.cfg.DialTimeout}
	c, err := d.DialContext(m.ctx, "tcp", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("raftmux: dial %s: %w", addr, err)
	}
	c.SetDeadline(time.Now().Add(m.cfg.DialTimeout))
	f, start := beginFrame(nil, kindHello)
	f = finishFrame(appendHello(f, &hello{lane: lane, id: m.local.id, addr: m.local.addr}), start)
	if _, err := c.Write(f); err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("raftmux: hello to %s: %w", addr, err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	kind, body, err := readFrame(br, 1024)
	if err == nil && kind != kindHello {
		err = fmt.Errorf("%w: first frame of kind %d, want hello", ErrMalformed, kind)
	}
	var h *hello
	if err == nil {
		h, err = decodeHello(body)
	}
	if err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("raftmux: hello from %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, br, h, nil
}

func (m *Mux) dialOut(addr string, lane byte) (*outConn, error) {
	c, br, h, err := m.dial(addr, lane)
	if err != nil {
		m.logf("%v", err)
		return nil, err
	}
	oc := &outConn{
		m:       m,
		addr:    addr,
		lane:    lane,
		c:       c,
		br:      br,
		remote:  peerNames{id: h.id, addr: h.addr},
		sendq:   make(chan []byte, m.cfg.SendQueueFrames),
		pending: make(map[uint64]chan result),
		done:    make(chan struct{}),
	}
	m.wg.Add(2)
	go oc.writeLoop()
	go oc.readLoop()
	return oc, nil
}

// result is what a pending request gets: the response body, or an error.
type result struct {
	body []byte
	err  error
}

// outConn is one outgoing connection: requests go out, responses come back
// matched by request id.
type outConn struct {
	m      *Mux
	addr   string
	lane   byte
	c      net.Conn
	br     *bufio.Reader
	remote peerNames // the far end's hello: defaults for decoding its responses
	sendq  chan []byte
	done   chan struct{}

	mu      sync.Mutex
	pending map[uint64]chan result // guarded by mu
	err     error                  // why the connection closed, guarded by mu
	// Heartbeats waiting for the window to close (control lane only).
	hbItems []reqItem   // guarded by mu
	hbTimer *time.Timer // guarded by mu
}

func (oc *outConn) isDone() bool {
	select {
	case <-oc.done:
		return true
	default:
		return false
	}
}

// close fails every pending request with err and stops the goroutines.
func (oc *outConn) close(err error) {
	oc.mu.Lock()
	if oc.err != nil {
		oc.mu.Unlock()
		return
	}
	oc.err = err
	pending := oc.pending
	oc.pending = nil
	if oc.hbTimer != nil {
		oc.hbTimer.Stop()
	}
	oc.hbItems = nil
	close(oc.done)
	oc.mu.Unlock()
	oc.c.Close()
	for _, ch := range pending {
		ch <- result{err: fmt.Errorf("raftmux: connection to %s: %w", oc.addr, err)}
	}
}

// register adds a pending request; its answer arrives on the returned
// channel (buffered, written once).
func (oc *outConn) register(id uint64) (chan result, error) {
	ch := make(chan result, 1)
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.err != nil {
		return nil, fmt.Errorf("raftmux: connection to %s: %w", oc.addr, oc.err)
	}
	oc.pending[id] = ch
	return ch, nil
}

func (oc *outConn) unregister(id uint64) {
	oc.mu.Lock()
	if oc.pending != nil {
		delete(oc.pending, id)
	}
	oc.mu.Unlock()
}

// send queues an encoded frame, waiting at most until deadline.
func (oc *outConn) send(frame []byte, deadline time.Time) error {
	select {
	case oc.sendq <- frame:
		return nil
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case oc.sendq <- frame:
		return nil
	case <-oc.done:
		return fmt.Errorf("%w: connection to %s closed", ErrUnreachable, oc.addr)
	case <-t.C:
		return fmt.Errorf("%w: %w: send queue to %s full", ErrUnreachable, ErrTimeout, oc.addr)
	}
}

// writeLoop writes queued frames, as many as are ready per flush.
func (oc *outConn) writeLoop() {
	defer oc.m.wg.Done()
	writeFrames(oc.c, oc.sendq, oc.done, oc.m.cfg.WriteTimeout, &oc.m.stats, func(err error) {
		oc.m.logf("write to %s: %v", oc.addr, err)
		oc.close(err)
	})
}

// writeFrames is the writer shared by both directions: it blocks for one
// frame, then takes whatever else is queued (up to 64 frames or 1 MiB)
// before one flush, so frames produced together leave in one write.
func writeFrames(c net.Conn, q <-chan []byte, done <-chan struct{}, timeout time.Duration, st *counters, fail func(error)) {
	bw := bufio.NewWriterSize(c, 64<<10)
	for {
		var f []byte
		select {
		case f = <-q:
		case <-done:
			return
		}
		c.SetWriteDeadline(time.Now().Add(timeout))
		n, size := 0, 0
		for {
			if _, err := bw.Write(f); err != nil {
				fail(err)
				return
			}
			n++
			size += len(f)
			if n == 64 || size >= 1<<20 {
				break
			}
			select {
			case f = <-q:
				continue
			default:
			}
			break
		}
		if err := bw.Flush(); err != nil {
			fail(err)
			return
		}
		st.framesSent.Add(uint64(n))
	}
}

// readLoop delivers responses to their pending requests.
func (oc *outConn) readLoop() {
	defer oc.m.wg.Done()
	for {
		kind, body, err := readFrame(oc.br, oc.m.cfg.MaxFrameBytes)
		if err != nil {
			if !errors.Is(err, io.EOF) && !oc.isDone() {
				oc.m.logf("read from %s: %v", oc.addr, err)
			}
			if errors.Is(err, ErrMalformed) {
				oc.m.stats.malformed.Add(1)
			}
			oc.close(fmt.Errorf("read: %w", err))
			return
		}
		oc.m.stats.framesReceived.Add(1)
		if kind != kindResponses {
			oc.m.stats.malformed.Add(1)
			oc.close(fmt.Errorf("%w: frame kind %d on an outgoing connection", ErrMalformed, kind))
			return
		}
		items, err := decodeResponses(body, maxEntriesPerFrame)
		if err != nil {
			oc.m.stats.malformed.Add(1)
			oc.m.logf("from %s: %v", oc.addr, err)
			oc.close(err)
			return
		}
		oc.mu.Lock()
		for _, it := range items {
			ch, ok := oc.pending[it.id]
			if !ok {
				continue // its caller gave up
			}
			delete(oc.pending, it.id)
			if it.status == statusOK {
				ch <- result{body: it.body}
			} else {
				ch <- result{err: &RemoteError{Addr: oc.addr, Msg: string(it.body)}}
			}
		}
		oc.mu.Unlock()
	}
}

// roundTrip sends one request on lane and waits for its response until
// timeout or until cancel (nil: never) is closed. body is encoded with this node's names as header defaults; the
// response is to be decoded with the returned remote names.
func (m *Mux) roundTrip(target string, lane byte, group uint32, rpc byte, body []byte, timeout time.Duration, cancel <-chan struct{}) ([]byte, *peerNames, error) {
	deadline := time.Now().Add(timeout)
	res, remote, err := m.exchange(target, lane, group, rpc, body, deadline, false, cancel)
	if err != nil {
		m.stats.rpcErrors.Add(1)
	}
	return res, remote, err
}

func (m *Mux) exchange(target string, lane byte, group uint32, rpc byte, body []byte, deadline time.Time, heartbeat bool, cancel <-chan struct{}) ([]byte, *peerNames, error) {
	p, err := m.peer(target)
	if err != nil {
		return nil, nil, err
	}
	oc, err := p.conn(lane, deadline)
	if err != nil {
		return nil, nil, err
	}
	id := m.nextID.Add(1)
	ch, err := oc.register(id)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	item := reqItem{id: id, group: group, rpc: rpc, body: body}
	if heartbeat {
		oc.queueHeartbeat(item)
	} else {
		f, start := beginFrame(make([]byte, 0, len(body)+32), kindRequests)
		f = finishFrame(appendRequests(f, []reqItem{item}), start)
		if err := oc.send(f, deadline); err != nil {
			oc.unregister(id)
			return nil, nil, err
		}
		m.stats.requestsSent.Add(1)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case r := <-ch:
		return r.body, &oc.remote, r.err
	case <-cancel:
		oc.unregister(id)
		return nil, nil, fmt.Errorf("raftmux: rpc %d to %s for group %d: cancelled", rpc, target, group)
	case <-t.C:
		oc.unregister(id)
		// The answer may have been delivered just now.
		select {
		case r := <-ch:
			return r.body, &oc.remote, r.err
		default:
		}
		return nil, nil, fmt.Errorf("%w: rpc %d to %s for group %d", ErrTimeout, rpc, target, group)
	}
}

// queueHeartbeat adds a heartbeat to the batch waiting for the window;
// the first one arms the timer, a full batch leaves at once.
func (oc *outConn) queueHeartbeat(it reqItem) {
	oc.mu.Lock()
	if oc.err != nil {
		oc.mu.Unlock()
		return // register failed it already, or close did
	}
	oc.hbItems = append(oc.hbItems, it)
	n := len(oc.hbItems)
	window := oc.m.cfg.HeartbeatWindow
	full := n >= oc.m.cfg.MaxHeartbeatBatch
	if n == 1 && !full && window > 0 {
		if oc.hbTimer == nil {
			oc.hbTimer = time.AfterFunc(window, oc.flushHeartbeats)
		} else {
			oc.hbTimer.Reset(window)
		}
	}
	oc.mu.Unlock()
	if full || window == 0 {
		oc.flushHeartbeats()
	}
}

// flushHeartbeats sends the waiting heartbeats as one requests frame.
func (oc *outConn) flushHeartbeats() {
	oc.mu.Lock()
	items := oc.hbItems
	oc.hbItems = nil
	if oc.hbTimer != nil {
		oc.hbTimer.Stop()
	}
	oc.mu.Unlock()
	if len(items) == 0 {
		return
	}
	size := 32
	for i := range items {
		size += len(items[i].body) + 24
	}
	f, start := beginFrame(make([]byte, 0, size), kindRequests)
	f = finishFrame(appendRequests(f, items), start)
	if err := oc.send(f, time.Now().Add(oc.m.cfg.ControlTimeout)); err != nil {
		// The callers time out; say why once.
		oc.m.logf("heartbeats to %s: %v", oc.addr, err)
		return
	}
	oc.m.stats.heartbeatsSent.Add(uint64(len(items)))
	oc.m.stats.heartbeatFramesSent.Add(1)
	oc.m.stats.requestsSent.Add(uint64(len(items)))
}
