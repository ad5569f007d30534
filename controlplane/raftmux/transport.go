package raftmux

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Transport is one group's raft.Transport on a Mux.
type Transport struct {
	m     *Mux
	id    uint32
	inbox chan raft.RPC
	hb    atomic.Pointer[func(raft.RPC)]
	// urgent counts callers waiting on this group's heartbeats (see
	// Expedite); while it is above zero they skip HeartbeatWindow.
	urgent atomic.Int32
	// lastEntries is when (monoNow) the group last sent an append with
	// entries; see AppendEntries.
	lastEntries atomic.Int64

	once   sync.Once
	closed chan struct{}
}

// recentEntries: a group that sent entries this recently is busy, and its
// entry-less appends skip HeartbeatWindow (see AppendEntries).
const recentEntries = time.Second

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is a monotonic clock reading in ns.
func monoNow() int64 { return int64(time.Since(monoBase)) }

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

// ID returns the group id.
func (t *Transport) ID() uint32 { return t.id }

// Consumer returns the channel raft takes this group's incoming RPCs from.
func (t *Transport) Consumer() <-chan raft.RPC { return t.inbox }

// LocalAddr returns the node's advertised address.
func (t *Transport) LocalAddr() raft.ServerAddress { return raft.ServerAddress(t.m.cfg.Advertise) }

// AppendEntriesPipeline is not supported: raft falls back to one
// AppendEntries at a time per follower, and throughput comes from the many
// groups replicating in parallel over the shared connection.
func (t *Transport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries sends an append. One with entries goes out at once on the
// data connection. One without waits up to HeartbeatWindow to share a frame
// with those of other groups to the same node — unless it is not a pure
// heartbeat and the group sent entries within the last recentEntries: then
// it comes from raft's replication goroutine for that follower in a busy
// group (after a trigger whose entries an earlier append already carried),
// which sends nothing else until it is answered, so the window would hold
// the group's next entries to that follower with it; it leaves at once on
// the control connection. An idle group's entry-less appends (the
// commit-index update raft sends every CommitTimeout, ~50 a second per node
// at 256 shards) keep sharing frames: sent alone they cost ~2 % of a core
// per node at idle (docs/benchmarks.md).
func (t *Transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.check(); err != nil {
		return err
	}
	m := t.m
	body := appendAppendEntriesRequest(nil, args, &m.local)
	var (
		out    []byte
		remote *peerNames
		err    error
	)
	switch {
	case len(args.Entries) == 0 && !isHeartbeat(args) && monoNow()-t.lastEntries.Load() < int64(recentEntries):
		out, remote, err = m.roundTrip(string(target), laneControl, t.id, rpcAppendEntries, body, m.cfg.ControlTimeout, nil)
	case len(args.Entries) == 0:
		hb := hbWindow
		if t.urgent.Load() > 0 {
			hb = hbNow
		}
		out, remote, err = m.exchange(string(target), laneControl, t.id, rpcAppendEntries, body, time.Now().Add(m.cfg.ControlTimeout), hb, nil)
		if err != nil {
			m.stats.rpcErrors.Add(1)
		}
	default:
		t.lastEntries.Store(monoNow())
		out, remote, err = m.roundTrip(string(target), laneData, t.id, rpcAppendEntries, body, m.cfg.AppendTimeout, nil)
	}
	if err != nil {
		return err
	}
	return decodeAppendEntriesResponse(out, remote, resp)
}

// Expedite makes this group's heartbeats leave without waiting for
// HeartbeatWindow until release is called (and flushes whatever other
// heartbeats are waiting to the same peers with them). Linearizable reads
// use it around raft's VerifyLeader, whose answer is one heartbeat round:
// idle heartbeats can wait to share a frame, a read should not.
func (t *Transport) Expedite() (release func()) {
	t.urgent.Add(1)
	var once sync.Once
	return func() { once.Do(func() { t.urgent.Add(-1) }) }
}

// RequestVote sends a vote request on the control connection.
func (t *Transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.check(); err != nil {
		return err
	}
	out, remote, err := t.m.roundTrip(string(target), laneControl, t.id, rpcRequestVote, appendRequestVoteRequest(nil, args, &t.m.local), t.m.cfg.ControlTimeout, nil)
	if err != nil {
		return err
	}
	return decodeRequestVoteResponse(out, remote, resp)
}

// RequestPreVote sends a pre-vote request on the control connection.
func (t *Transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.check(); err != nil {
		return err
	}
	out, remote, err := t.m.roundTrip(string(target), laneControl, t.id, rpcRequestPreVote, appendPreVoteRequest(nil, args, &t.m.local), t.m.cfg.ControlTimeout, nil)
	if err != nil {
		return err
	}
	return decodePreVoteResponse(out, remote, resp)
}

// TimeoutNow asks target to start an election (leadership transfer).
func (t *Transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := t.check(); err != nil {
		return err
	}
	out, remote, err := t.m.roundTrip(string(target), laneControl, t.id, rpcTimeoutNow, appendTimeoutNowRequest(nil, args, &t.m.local), t.m.cfg.ControlTimeout, nil)
	if err != nil {
		return err
	}
	return decodeTimeoutNowResponse(out, remote, resp)
}

// InstallSnapshot streams a snapshot to target on a connection of its own,
// in chunks of SnapshotChunkBytes, so that a large transfer never delays
// the heartbeats and appends of other groups to the same node.
func (t *Transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.check(); err != nil {
		return err
	}
	m := t.m
	err := m.sendSnapshot(string(target), t.id, args, resp, data)
	if err != nil {
		m.stats.rpcErrors.Add(1)
	}
	return err
}

func (m *Mux) sendSnapshot(target string, group uint32, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c, br, h, err := m.dial(target, laneSnapshot)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		return ErrClosed
	}
	m.snaps[c] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.snaps, c)
		m.mu.Unlock()
		c.Close()
	}()
	fail := func(what string, err error) error {
		return fmt.Errorf("raftmux: snapshot for group %d to %s: %s: %w", group, target, what, err)
	}

	item := reqItem{id: m.nextID.Add(1), group: group, rpc: rpcInstallSnapshot, body: appendInstallSnapshotRequest(nil, args, &m.local)}
	f, start := beginFrame(nil, kindRequests)
	f = finishFrame(appendRequests(f, []reqItem{item}), start)
	bw := bufio.NewWriterSize(c, m.cfg.SnapshotChunkBytes+16)
	c.SetWriteDeadline(time.Now().Add(m.cfg.WriteTimeout))
	if _, err := bw.Write(f); err != nil {
		return fail("request", err)
	}
	chunk := make([]byte, frameHeaderLen+1+m.cfg.SnapshotChunkBytes)
	var sent int64
	for {
		n, rerr := io.ReadFull(data, chunk[frameHeaderLen+1:])
		if n > 0 {
			binary.BigEndian.PutUint32(chunk, uint32(1+n))
			chunk[frameHeaderLen] = kindSnapChunk
			c.SetWriteDeadline(time.Now().Add(m.cfg.SnapshotChunkTimeout))
			if _, err := bw.Write(chunk[:frameHeaderLen+1+n]); err != nil {
				return fail("chunk", err)
			}
			sent += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fail("reading the snapshot", rerr)
		}
		if sent > args.Size {
			return fail("data", fmt.Errorf("more than the announced %d bytes", args.Size))
		}
	}
	if sent != args.Size {
		return fail("data", fmt.Errorf("%d bytes, %d announced", sent, args.Size))
	}
	end, start := beginFrame(nil, kindSnapChunk)
	c.SetWriteDeadline(time.Now().Add(m.cfg.SnapshotChunkTimeout))
	if _, err := bw.Write(finishFrame(end, start)); err != nil {
		return fail("end", err)
	}
	if err := bw.Flush(); err != nil {
		return fail("flush", err)
	}
	m.stats.snapshotsSent.Add(1)
	m.stats.snapshotBytesSent.Add(uint64(sent))

	c.SetReadDeadline(time.Now().Add(m.cfg.SnapshotResponseTimeout))
	kind, body, err := readFrame(br, m.cfg.MaxFrameBytes)
	if err != nil {
		return fail("answer", err)
	}
	if kind != kindResponses {
		return fail("answer", fmt.Errorf("%w: frame kind %d", ErrMalformed, kind))
	}
	items, err := decodeResponses(body, 1)
	if err != nil || len(items) != 1 || items[0].id != item.id {
		return fail("answer", fmt.Errorf("%w: not the answer to this request (%v)", ErrMalformed, err))
	}
	if items[0].status != statusOK {
		return &RemoteError{Addr: target, Msg: string(items[0].body)}
	}
	return decodeInstallSnapshotResponse(items[0].body, &peerNames{id: h.id, addr: h.addr}, resp)
}

// EncodePeer encodes a server's address (its ID is not needed: every
// group on a node shares the node's address).
func (t *Transport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer decodes what EncodePeer made.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler installs raft's fast path for heartbeats: incoming
// pure heartbeats are answered by it directly from the connection's reader,
// never waiting behind this group's disk-bound RPCs.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.hb.Store(nil)
		return
	}
	t.hb.Store(&cb)
}

// Close detaches the group from the Mux: incoming RPCs for it are refused
// and its outgoing calls fail with ErrClosed.
func (t *Transport) Close() error {
	t.once.Do(func() {
		close(t.closed)
		t.m.dropGroup(t)
	})
	return nil
}

func (t *Transport) check() error {
	select {
	case <-t.closed:
		return fmt.Errorf("raftmux: group %d: %w", t.id, ErrClosed)
	default:
		return nil
	}
}

// deliver hands an incoming RPC to raft without blocking: a full inbox is
// refused (raft's sender backs off and retries).
func (t *Transport) deliver(cmd any, r io.Reader) (chan raft.RPCResponse, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	ch := make(chan raft.RPCResponse, 1)
	select {
	case t.inbox <- raft.RPC{Command: cmd, Reader: r, RespChan: ch}:
		return ch, nil
	default:
		return nil, fmt.Errorf("group %d: %d RPCs already waiting for raft", t.id, cap(t.inbox))
	}
}
