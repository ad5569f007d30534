package raftmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Errors callers may test for.
var (
	// ErrClosed: the Mux (or the group's transport) is closed.
	ErrClosed = errors.New("raftmux: closed")
	// ErrTimeout: an RPC's deadline passed before its answer came.
	ErrTimeout = errors.New("raftmux: rpc deadline exceeded")
	// ErrUnreachable wraps failures that happened before the request left
	// this node (no connection, send queue full): the far end never saw it,
	// so even a non-idempotent request may be retried.
	ErrUnreachable = errors.New("raftmux: request not sent")
)

// RemoteError is an error the far end answered instead of a response.
type RemoteError struct {
	Addr string
	Msg  string
}

func (e *RemoteError) Error() string { return "raftmux: " + e.Addr + ": " + e.Msg }

// Config configures a Mux. Durations and sizes left zero take the
// defaults named after each field.
type Config struct {
	// ListenAddr is the one TCP address this node's Raft traffic arrives
	// on. Empty: no listener (a client that only calls out).
	ListenAddr string
	// Advertise is the address peers dial and raft uses as this node's
	// ServerAddress in every group. Default: the listener's address.
	Advertise string
	// LocalID is the raft ServerID this node uses in every group. It is
	// announced when a connection opens, and RPC headers carrying it are
	// sent as one byte.
	LocalID string

	// HeartbeatWindow is how long a heartbeat (an AppendEntries without
	// entries) may wait for heartbeats of other groups to the same peer, to
	// leave as one frame. Default 10 ms; negative: no waiting (still
	// combined with whatever is queued).
	HeartbeatWindow time.Duration
	// MaxHeartbeatBatch bounds the heartbeats in one frame. Default 1024.
	MaxHeartbeatBatch int

	// DialTimeout bounds connecting and the hello exchange. Default 1 s.
	DialTimeout time.Duration
	// DialBackoff: after a failed dial, RPCs to that peer fail at once for
	// this long instead of each dialling again. Default 250 ms.
	DialBackoff time.Duration
	// ControlTimeout is the deadline of heartbeats, votes and TimeoutNow.
	// Default 2 s.
	ControlTimeout time.Duration
	// AppendTimeout is the deadline of an AppendEntries with entries.
	// Default 10 s.
	AppendTimeout time.Duration
	// WriteTimeout bounds one write to a connection. Default 10 s.
	WriteTimeout time.Duration
	// SnapshotChunkTimeout bounds sending or receiving one snapshot chunk.
	// Default 10 s.
	SnapshotChunkTimeout time.Duration
	// SnapshotResponseTimeout bounds the wait for the answer to an
	// InstallSnapshot once all of it was sent (the follower restores
	// before it answers). Default 5 min.
	SnapshotResponseTimeout time.Duration

	// MaxFrameBytes bounds one frame, checked before allocating. Default
	// 64 MiB, at most HardMaxFrameBytes.
	MaxFrameBytes int
	// SnapshotChunkBytes is the size of the chunks a snapshot is streamed
	// in. Default 256 KiB.
	SnapshotChunkBytes int
	// SendQueueFrames bounds the frames waiting for a connection's writer.
	// Default 1024.
	SendQueueFrames int
	// InboxDepth bounds the RPCs waiting for one group's raft; one more is
	// refused with an error (raft retries). Default 256.
	InboxDepth int
	// MaxConcurrentCalls bounds forwarded calls being served at once on
	// this node; one more is refused with an error. Default 1024.
	MaxConcurrentCalls int

	// Logf receives connection-level events (failed dials, broken
	// connections, malformed frames). Nil: dropped.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() error {
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	num := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur(&c.HeartbeatWindow, 10*time.Millisecond)
	dur(&c.DialTimeout, time.Second)
	dur(&c.DialBackoff, 250*time.Millisecond)
	dur(&c.ControlTimeout, 2*time.Second)
	dur(&c.AppendTimeout, 10*time.Second)
	dur(&c.WriteTimeout, 10*time.Second)
	dur(&c.SnapshotChunkTimeout, 10*time.Second)
	dur(&c.SnapshotResponseTimeout, 5*time.Minute)
	num(&c.MaxHeartbeatBatch, 1024)
	num(&c.MaxFrameBytes, 64<<20)
	num(&c.SnapshotChunkBytes, 256<<10)
	num(&c.SendQueueFrames, 1024)
	num(&c.InboxDepth, 256)
	num(&c.MaxConcurrentCalls, 1024)
	if c.HeartbeatWindow < 0 {
		c.HeartbeatWindow = 0
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"DialBackoff", c.DialBackoff}, {"ControlTimeout", c.ControlTimeout},
		{"AppendTimeout", c.AppendTimeout}, {"WriteTimeout", c.WriteTimeout},
		{"SnapshotChunkTimeout", c.SnapshotChunkTimeout}, {"SnapshotResponseTimeout", c.SnapshotResponseTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("raftmux: Config.%s is %v, must be positive", d.name, d.v)
		}
	}
	if c.MaxFrameBytes < 64<<10 || c.MaxFrameBytes > HardMaxFrameBytes {
		return fmt.Errorf("raftmux: Config.MaxFrameBytes is %d, must be in [64 KiB, %d]", c.MaxFrameBytes, HardMaxFrameBytes)
	}
	if c.SnapshotChunkBytes < 1 || c.SnapshotChunkBytes > c.MaxFrameBytes/2 {
		return fmt.Errorf("raftmux: Config.SnapshotChunkBytes is %d, must be in [1, MaxFrameBytes/2]", c.SnapshotChunkBytes)
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"MaxHeartbeatBatch", c.MaxHeartbeatBatch}, {"SendQueueFrames", c.SendQueueFrames},
		{"InboxDepth", c.InboxDepth}, {"MaxConcurrentCalls", c.MaxConcurrentCalls},
	} {
		if n.v < 1 {
			return fmt.Errorf("raftmux: Config.%s is %d, must be positive", n.name, n.v)
		}
	}
	if len(c.LocalID) > maxNameBytes || len(c.Advertise) > maxNameBytes {
		return fmt.Errorf("raftmux: LocalID and Advertise must be at most %d bytes", maxNameBytes)
	}
	return nil
}

// CallHandler serves a forwarded call (see (*Mux).Call) for group. It
// must honour ctx, which is cancelled when the Mux closes.
type CallHandler func(ctx context.Context, group uint32, req []byte) ([]byte, error)

// Mux is a node's Raft transport: one listener, a few connections per
// peer, the RPCs of every group multiplexed over them.
type Mux struct {
	cfg    Config
	ln     net.Listener
	local  peerNames // what this node announces
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop, connection goroutines, call handlers

	nextID atomic.Uint64 // request ids, unique per Mux

	mu      sync.Mutex
	closed  bool                  // guarded by mu
	groups  map[uint32]*Transport // guarded by mu
	peers   map[string]*peer      // guarded by mu
	inbound map[*inConn]struct{}  // guarded by mu
	snaps   map[net.Conn]struct{} // in-flight snapshot connections, guarded by mu
	handler atomic.Pointer[CallHandler]

	calls chan struct{} // semaphore of forwarded calls being served

	stats counters
}

type counters struct {
	heartbeatsSent      atomic.Uint64
	heartbeatFramesSent atomic.Uint64
	requestsSent        atomic.Uint64
	framesSent          atomic.Uint64
	framesReceived      atomic.Uint64
	rpcErrors           atomic.Uint64
	dials               atomic.Uint64
	malformed           atomic.Uint64
	snapshotsSent       atomic.Uint64
	snapshotBytesSent   atomic.Uint64
}

// Stats are cumulative counters since New.
type Stats struct {
	// HeartbeatsSent and HeartbeatFramesSent: entry-less AppendEntries sent
	// and the frames that carried them (their ratio is the coalescing).
	HeartbeatsSent      uint64
	HeartbeatFramesSent uint64
	// RequestsSent counts every request item sent (heartbeats included).
	RequestsSent uint64
	// FramesSent and FramesReceived count frames of every kind.
	FramesSent     uint64
	FramesReceived uint64
	// RPCErrors counts outgoing RPCs that failed (timeouts, broken
	// connections, errors answered by the far end).
	RPCErrors uint64
	// Dials counts outgoing connections opened.
	Dials uint64
	// Malformed counts frames or items that did not decode.
	Malformed uint64
	// SnapshotsSent and SnapshotBytesSent count InstallSnapshot streams.
	SnapshotsSent     uint64
	SnapshotBytesSent uint64
}

// New starts a Mux: it listens on cfg.ListenAddr (unless empty).
func New(cfg Config) (*Mux, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m := &Mux{
		cfg:     cfg,
		groups:  make(map[uint32]*Transport),
		peers:   make(map[string]*peer),
		inbound: make(map[*inConn]struct{}),
		snaps:   make(map[net.Conn]struct{}),
		calls:   make(chan struct{}, cfg.MaxConcurrentCalls),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if cfg.ListenAddr != "" {
		ln, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("raftmux: listen on %s: %w", cfg.ListenAddr, err)
		}
		m.ln = ln
		if m.cfg.Advertise == "" {
			m.cfg.Advertise = ln.Addr().String()
		}
	}
	m.local = peerNames{id: []byte(m.cfg.LocalID), addr: []byte(m.cfg.Advertise)}
	if m.ln != nil {
		m.wg.Add(1)
		go m.acceptLoop()
	}
	return m, nil
}

// Addr returns the advertised address (what raft knows this node by).
func (m *Mux) Addr() string { return m.cfg.Advertise }

// Config returns the configuration in effect, defaults filled in.
func (m *Mux) Config() Config { return m.cfg }

// Stats returns the cumulative counters.
func (m *Mux) Stats() Stats {
	s := &m.stats
	return Stats{
		HeartbeatsSent:      s.heartbeatsSent.Load(),
		HeartbeatFramesSent: s.heartbeatFramesSent.Load(),
		RequestsSent:        s.requestsSent.Load(),
		FramesSent:          s.framesSent.Load(),
		FramesReceived:      s.framesReceived.Load(),
		RPCErrors:           s.rpcErrors.Load(),
		Dials:               s.dials.Load(),
		Malformed:           s.malformed.Load(),
		SnapshotsSent:       s.snapshotsSent.Load(),
		SnapshotBytesSent:   s.snapshotBytesSent.Load(),
	}
}

func (m *Mux) logf(format string, args ...any) {
	if m.cfg.Logf != nil {
		m.cfg.Logf("raftmux: "+format, args...)
	}
}

// SetCallHandler installs the handler for forwarded calls (nil removes it;
// calls are then refused).
func (m *Mux) SetCallHandler(h CallHandler) {
	if h == nil {
		m.handler.Store(nil)
		return
	}
	m.handler.Store(&h)
}

// Group returns the raft.Transport of group id, creating it if needed. The
// same *Transport is returned until it is closed; after that a new one.
func (m *Mux) Group(id uint32) (*Transport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if t, ok := m.groups[id]; ok {
		return t, nil
	}
	t := &Transport{
		m:      m,
		id:     id,
		inbox:  make(chan raft.RPC, m.cfg.InboxDepth),
		closed: make(chan struct{}),
	}
	m.groups[id] = t
	return t, nil
}

func (m *Mux) group(id uint32) *Transport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.groups[id]
}

func (m *Mux) dropGroup(t *Transport) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups[t.id] == t {
		delete(m.groups, t.id)
	}
}

// Close stops the listener, closes every connection and every group
// transport, and waits for the Mux's goroutines.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	groups := make([]*Transport, 0, len(m.groups))
	for _, t := range m.groups {
		groups = append(groups, t)
	}
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	in := make([]*inConn, 0, len(m.inbound))
	for c := range m.inbound {
		in = append(in, c)
	}
	for c := range m.snaps {
		c.Close()
	}
	m.mu.Unlock()

	m.cancel()
	if m.ln != nil {
		m.ln.Close()
	}
	for _, t := range groups {
		t.Close()
	}
	for _, p := range peers {
		p.close()
	}
	for _, c := range in {
		c.close(ErrClosed)
	}
	m.wg.Wait()
	return nil
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.logf("accept: %v; retrying in %v", err, backoff)
				time.Sleep(backoff)
				continue
			}
			m.logf("accept: %v; listener stopped", err)
			return
		}
		backoff = 0
		m.wg.Add(1)
		go m.serveConn(c)
	}
}
