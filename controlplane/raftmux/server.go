package raftmux

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// inConn is one incoming connection: requests come in, responses go back.
type inConn struct {
	m      *Mux
	c      net.Conn
	br     *bufio.Reader
	from   string    // remote address, for messages
	remote peerNames // the far end's hello: defaults for decoding its requests
	sendq  chan []byte
	done   chan struct{}
	once   sync.Once
}

func (ic *inConn) close(err error) {
	ic.once.Do(func() {
		close(ic.done)
		ic.c.Close()
	})
}

// serveConn reads the hello, answers it, and serves the connection's lane.
func (m *Mux) serveConn(c net.Conn) {
	defer m.wg.Done()
	from := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(m.cfg.DialTimeout))
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
		if errors.Is(err, ErrMalformed) {
			m.stats.malformed.Add(1)
		}
		m.logf("connection from %s: %v", from, err)
		c.Close()
		return
	}
	f, start := beginFrame(nil, kindHello)
	f = finishFrame(appendHello(f, &hello{lane: h.lane, id: m.local.id, addr: m.local.addr}), start)
	if _, err := c.Write(f); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	remote := peerNames{id: h.id, addr: h.addr}
	if h.lane == laneSnapshot {
		m.serveSnapshot(c, br, from, &remote)
		return
	}
	ic := &inConn{
		m:      m,
		c:      c,
		br:     br,
		from:   from,
		remote: remote,
		sendq:  make(chan []byte, m.cfg.SendQueueFrames),
		done:   make(chan struct{}),
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		return
	}
	m.inbound[ic] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.inbound, ic)
		m.mu.Unlock()
	}()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		writeFrames(c, ic.sendq, ic.done, m.cfg.WriteTimeout, &m.stats, func(err error) {
			m.logf("write to %s: %v", from, err)
			ic.close(err)
		})
	}()
	ic.readLoop()
}

func (ic *inConn) readLoop() {
	m := ic.m
	defer ic.close(nil)
	var now []respItem
	for {
		kind, body, err := readFrame(ic.br, m.cfg.MaxFrameBytes)
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				m.stats.malformed.Add(1)
				m.logf("from %s: %v; closing", ic.from, err)
			}
			return
		}
		m.stats.framesReceived.Add(1)
		if kind != kindRequests {
			m.stats.malformed.Add(1)
			m.logf("from %s: frame kind %d on an incoming connection; closing", ic.from, kind)
			return
		}
		items, err := decodeRequests(body, maxEntriesPerFrame)
		if err != nil {
			m.stats.malformed.Add(1)
			m.logf("from %s: %v; closing", ic.from, err)
			return
		}
		now = now[:0]
		for _, it := range items {
			if r, answered := ic.dispatch(it); answered {
				now = append(now, r)
			}
		}
		// Everything answered on the spot (heartbeats, refusals) goes back
		// as one frame.
		if len(now) > 0 && !ic.respond(now) {
			return
		}
	}
}

// respond queues one responses frame; false if the connection closed.
func (ic *inConn) respond(items []respItem) bool {
	size := 32
	for i := range items {
		size += len(items[i].body) + 16
	}
	f, start := beginFrame(make([]byte, 0, size), kindResponses)
	f = finishFrame(appendResponses(f, items), start)
	select {
	case ic.sendq <- f:
		return true
	case <-ic.done:
		return false
	}
}

func errItem(id uint64, err error) respItem {
	msg := err.Error()
	if len(msg) > maxErrorBytes {
		msg = msg[:maxErrorBytes]
	}
	return respItem{id: id, status: statusError, body: []byte(msg)}
}

// dispatch serves one request item. Heartbeats, and requests refused on
// the spot, are answered at once (answered true); the rest are answered
// later from a goroutine when raft (or the call handler) responds.
func (ic *inConn) dispatch(it reqItem) (respItem, bool) {
	m := ic.m
	if it.rpc == rpcCall {
		return ic.serveCall(it)
	}
	t := m.group(it.group)
	if t == nil {
		return errItem(it.id, fmt.Errorf("group %d is not served by %s", it.group, m.cfg.Advertise)), true
	}
	if it.rpc == rpcInstallSnapshot {
		return errItem(it.id, errors.New("InstallSnapshot arrives on a snapshot connection only")), true
	}
	cmd, err := decodeCommand(it.rpc, it.body, &ic.remote)
	if err != nil {
		m.stats.malformed.Add(1)
		return errItem(it.id, err), true
	}
	if ae, ok := cmd.(*raft.AppendEntriesRequest); ok && isHeartbeat(ae) {
		if hb := t.hb.Load(); hb != nil {
			ch := make(chan raft.RPCResponse, 1)
			(*hb)(raft.RPC{Command: ae, RespChan: ch})
			select {
			case r := <-ch:
				return ic.encodeResult(it, r), true
			default:
				return errItem(it.id, fmt.Errorf("group %d is shutting down", it.group)), true
			}
		}
	}
	ch, err := t.deliver(cmd, nil)
	if err != nil {
		return errItem(it.id, err), true
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		var out respItem
		select {
		case r := <-ch:
			out = ic.encodeResult(it, r)
		case <-t.closed:
			out = errItem(it.id, fmt.Errorf("group %d closed", it.group))
		case <-ic.done:
			return
		}
		ic.respond([]respItem{out})
	}()
	return respItem{}, false
}

func (ic *inConn) encodeResult(it reqItem, r raft.RPCResponse) respItem {
	if r.Error != nil {
		return errItem(it.id, r.Error)
	}
	body, err := appendResponse(nil, it.rpc, r.Response, &ic.m.local)
	if err != nil {
		return errItem(it.id, err)
	}
	return respItem{id: it.id, status: statusOK, body: body}
}

// serveCall runs a forwarded call in its own goroutine, within the
// MaxConcurrentCalls bound and the caller's timeout.
func (ic *inConn) serveCall(it reqItem) (respItem, bool) {
	m := ic.m
	h := m.handler.Load()
	if h == nil {
		return errItem(it.id, fmt.Errorf("%s serves no calls", m.cfg.Advertise)), true
	}
	ms, n := binary.Uvarint(it.body)
	if n <= 0 {
		m.stats.malformed.Add(1)
		return errItem(it.id, fmt.Errorf("%w: call without a timeout", ErrMalformed)), true
	}
	req := it.body[n:]
	select {
	case m.calls <- struct{}{}:
	default:
		return errItem(it.id, fmt.Errorf("%s is serving %d calls already", m.cfg.Advertise, cap(m.calls))), true
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() { <-m.calls }()
		ctx, cancel := context.WithTimeout(m.ctx, time.Duration(min(ms, uint64(time.Hour/time.Millisecond)))*time.Millisecond)
		out, err := (*h)(ctx, it.group, req)
		cancel()
		r := respItem{id: it.id, status: statusOK, body: out}
		if err != nil {
			r = errItem(it.id, err)
		}
		ic.respond([]respItem{r})
	}()
	return respItem{}, false
}

// serveSnapshot receives one InstallSnapshot: the request frame, then the
// data in chunk frames that raft reads through rpc.Reader as it spills the
// snapshot to disk, then the answer.
func (m *Mux) serveSnapshot(c net.Conn, br *bufio.Reader, from string, remote *peerNames) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		return
	}
	m.snaps[c] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.snaps, c)
		m.mu.Unlock()
		c.Close()
	}()

	c.SetReadDeadline(time.Now().Add(m.cfg.SnapshotChunkTimeout))
	kind, body, err := readFrame(br, m.cfg.MaxFrameBytes)
	var items []reqItem
	if err == nil && kind != kindRequests {
		err = fmt.Errorf("%w: frame kind %d opening a snapshot stream", ErrMalformed, kind)
	}
	if err == nil {
		items, err = decodeRequests(body, 1)
	}
	if err == nil && (len(items) != 1 || items[0].rpc != rpcInstallSnapshot) {
		err = fmt.Errorf("%w: a snapshot stream must open with one InstallSnapshot", ErrMalformed)
	}
	var req *raft.InstallSnapshotRequest
	if err == nil {
		req, err = decodeInstallSnapshotRequest(items[0].body, remote)
	}
	if err != nil {
		m.stats.malformed.Add(1)
		m.logf("snapshot from %s: %v", from, err)
		return
	}
	it := items[0]
	answer := func(r respItem) {
		f, start := beginFrame(nil, kindResponses)
		f = finishFrame(appendResponses(f, []respItem{r}), start)
		c.SetWriteDeadline(time.Now().Add(m.cfg.WriteTimeout))
		c.Write(f)
	}
	t := m.group(it.group)
	if t == nil {
		answer(errItem(it.id, fmt.Errorf("group %d is not served by %s", it.group, m.cfg.Advertise)))
		return
	}
	cr := &chunkReader{c: c, br: br, max: m.cfg.SnapshotChunkBytes, timeout: m.cfg.SnapshotChunkTimeout}
	ch := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: req, Reader: cr, RespChan: ch}
	deliver := time.NewTimer(m.cfg.ControlTimeout)
	defer deliver.Stop()
	select {
	case t.inbox <- rpc:
	case <-t.closed:
		answer(errItem(it.id, fmt.Errorf("group %d closed", it.group)))
		return
	case <-deliver.C:
		answer(errItem(it.id, fmt.Errorf("group %d: raft did not take the snapshot within %v", it.group, m.cfg.ControlTimeout)))
		return
	}
	wait := time.NewTimer(m.cfg.SnapshotResponseTimeout)
	defer wait.Stop()
	select {
	case r := <-ch:
		var out respItem
		if r.Error != nil {
			out = errItem(it.id, r.Error)
		} else if body, err := appendResponse(nil, rpcInstallSnapshot, r.Response, &m.local); err != nil {
			out = errItem(it.id, err)
		} else {
			out = respItem{id: it.id, status: statusOK, body: body}
		}
		answer(out)
	case <-t.closed:
	case <-m.ctx.Done():
	case <-wait.C:
		m.logf("snapshot from %s for group %d: no answer from raft within %v", from, it.group, m.cfg.SnapshotResponseTimeout)
	}
}

// chunkReader is the io.Reader raft gets for an incoming snapshot: it reads
// chunk frames from the connection as raft asks for bytes, so a slow disk
// on this side slows the sender through TCP, and nothing else waits.
type chunkReader struct {
	c       net.Conn
	br      *bufio.Reader
	max     int
	timeout time.Duration
	cur     []byte
	err     error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.c.SetReadDeadline(time.Now().Add(r.timeout))
		kind, body, err := readFrame(r.br, r.max+1)
		switch {
		case err != nil:
			r.err = fmt.Errorf("raftmux: snapshot stream: %w", err)
		case kind != kindSnapChunk:
			r.err = fmt.Errorf("%w: frame kind %d inside a snapshot stream", ErrMalformed, kind)
		case len(body) == 0:
			r.err = io.EOF
		default:
			r.cur = body
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
