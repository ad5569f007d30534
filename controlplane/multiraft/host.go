package multiraft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/claudefs/claudefs/controlplane/raftlog"
	"github.com/claudefs/claudefs/controlplane/raftmux"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Host is one node's set of Raft groups: one transport, one log store and
// one state store shared by all of them.
type Host struct {
	cfg   Config
	mux   *raftmux.Mux
	logs  *raftlog.Store
	state *kvsm.State

	mu     sync.Mutex
	groups map[uint32]*Group // guarded by mu
	closed bool              // guarded by mu

	client *Client

	raftLogOnce sync.Once
	raftLog     hclog.Logger // every group's raft logger is Named from it: they share its level
}

// Open opens the node's stores and starts its Raft listener. No group
// runs until StartGroup.
func Open(cfg Config) (*Host, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	for _, d := range []string{"raftlog", "state", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("multiraft: %w", err)
		}
	}
	h := &Host{cfg: cfg, groups: make(map[uint32]*Group)}
	logs, err := raftlog.Open(filepath.Join(cfg.Dir, "raftlog"), raftlog.Options{WriteCombining: cfg.WriteCombining, Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	state, err := kvsm.OpenState(filepath.Join(cfg.Dir, "state"), kvsm.StateOptions{Logf: cfg.Logf})
	if err != nil {
		logs.Close()
		return nil, err
	}
	mux, err := raftmux.New(raftmux.Config{
		ListenAddr:      cfg.RaftAddr,
		Advertise:       cfg.Advertise,
		LocalID:         cfg.NodeID,
		HeartbeatWindow: cfg.HeartbeatWindow,
		ControlTimeout:  cfg.HeartbeatTimeout,
		Logf:            cfg.Logf,
	})
	if err != nil {
		state.Close()
		logs.Close()
		return nil, err
	}
	h.logs, h.state, h.mux = logs, state, mux
	h.cfg.Advertise = mux.Addr()
	h.client = newClient(mux, h, ClientConfig{})
	mux.SetCallHandler(h.serveCall)
	return h, nil
}

// Config returns the configuration in effect, defaults filled in.
func (h *Host) Config() Config { return h.cfg }

// Addr returns the node's advertised Raft address, its ServerAddress in
// every group.
func (h *Host) Addr() string { return h.cfg.Advertise }

// Server returns this node as a member of a group's configuration.
func (h *Host) Server() raft.Server {
	return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(h.cfg.NodeID), Address: raft.ServerAddress(h.cfg.Advertise)}
}

// Mux returns the node's transport (for its Stats).
func (h *Host) Mux() *raftmux.Mux { return h.mux }

// LogStore returns the node's log store (for its Stats).
func (h *Host) LogStore() *raftlog.Store { return h.logs }

// Client returns a client that reaches any group's leader, this node's
// groups without a network hop.
func (h *Host) Client() *Client { return h.client }

// Group returns a running group, or nil.
func (h *Host) Group(id uint32) *Group {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[id]
}

// StartGroup starts group id on this node with state machine sm. If the
// group has no state on this node and bootstrap is not empty, the group is
// bootstrapped with those servers (every initial member may be given the
// same list; raft tolerates that). A group with state restarts from it and
// bootstrap is ignored.
func (h *Host) StartGroup(id uint32, sm kvsm.Applier, bootstrap []raft.Server) (*Group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if _, ok := h.groups[id]; ok {
		return nil, fmt.Errorf("multiraft: group %d is already running on %s", id, h.cfg.NodeID)
	}
	g, err := h.startGroupLocked(id, sm, bootstrap)
	if err != nil {
		return nil, fmt.Errorf("multiraft: start group %d: %w", id, err)
	}
	h.groups[id] = g
	return g, nil
}

func (h *Host) startGroupLocked(id uint32, sm kvsm.Applier, bootstrap []raft.Server) (*Group, error) {
	lg, err := h.logs.Group(id)
	if err != nil {
		return nil, err
	}
	fsm, err := kvsm.NewFSM(h.state, id, sm)
	if err != nil {
		return nil, err
	}
	logger := h.raftLogger(id)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(h.cfg.Dir, "snapshots", fmt.Sprint(id)), h.cfg.SnapshotsRetained, logger)
	if err != nil {
		return nil, err
	}
	// The FSM persists its own state with the applied index, so raft must
	// not restore the latest snapshot at start, unless the state is behind
	// that snapshot (an interrupted restore, or state lost in a crash):
	// then raft restores it and replays the log from there.
	metas, err := snaps.List()
	if err != nil {
		return nil, err
	}
	restore := len(metas) > 0 && fsm.AppliedIndex() < metas[0].Index
	if restore {
		h.logf("group %d: state applied up to %d, behind snapshot %d: restoring the snapshot", id, fsm.AppliedIndex(), metas[0].Index)
	}
	trans, err := h.mux.Group(id)
	if err != nil {
		return nil, err
	}
	var store raft.LogStore = lg
	if h.cfg.LogCacheEntries > 0 {
		if store, err = raft.NewLogCache(h.cfg.LogCacheEntries, lg); err != nil {
			trans.Close()
			return nil, err
		}
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(h.cfg.NodeID)
	rc.HeartbeatTimeout = h.cfg.HeartbeatTimeout
	rc.ElectionTimeout = h.cfg.ElectionTimeout
	rc.CommitTimeout = h.cfg.CommitTimeout
	rc.LeaderLeaseTimeout = h.cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = h.cfg.SnapshotThreshold
	rc.SnapshotInterval = h.cfg.SnapshotInterval
	rc.TrailingLogs = h.cfg.TrailingLogs
	rc.MaxAppendEntries = h.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = !restore
	rc.Logger = logger
	rc.NoLegacyTelemetry = true

	existing, err := raft.HasExistingState(store, lg, snaps)
	if err != nil {
		trans.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, fsm, store, lg, snaps, trans)
	if err != nil {
		trans.Close()
		return nil, err
	}
	if !existing && len(bootstrap) > 0 {
		if err := r.BootstrapCluster(raft.Configuration{Servers: bootstrap}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			r.Shutdown()
			trans.Close()
			return nil, err
		}
	}
	return &Group{h: h, id: id, raft: r, fsm: fsm, trans: trans, sm: sm}, nil
}

// StopGroup shuts a group down on this node (its state stays on disk).
func (h *Host) StopGroup(id uint32) error {
	h.mu.Lock()
	g, ok := h.groups[id]
	delete(h.groups, id)
	h.mu.Unlock()
	if !ok {
		return &NoGroupError{Group: id, Node: h.cfg.NodeID}
	}
	return g.stop()
}

// GroupStatus is one group's state as this node sees it.
type GroupStatus struct {
	ID    uint32
	State string // Leader, Follower, Candidate, Shutdown
	// LeaderID and LeaderAddr are empty while no leader is known.
	LeaderID   string
	LeaderAddr string
	Term       uint64
	// LastIndex is the last log index, CommitIndex the last known
	// committed one, AppliedIndex the last one the state machine holds.
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64
}

// Groups returns the status of every group on this node, by id.
func (h *Host) Groups() []GroupStatus {
	h.mu.Lock()
	gs := make([]*Group, 0, len(h.groups))
	for _, g := range h.groups {
		gs = append(gs, g)
	}
	h.mu.Unlock()
	out := make([]GroupStatus, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close shuts every group down, then the transport and both stores.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	gs := make([]*Group, 0, len(h.groups))
	for _, g := range h.groups {
		gs = append(gs, g)
	}
	h.groups = map[uint32]*Group{}
	h.mu.Unlock()

	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.stop()
		}()
	}
	wg.Wait()
	errs = append(errs, h.mux.Close(), h.logs.Close(), h.state.Close())
	return errors.Join(errs...)
}

func (h *Host) logf(format string, args ...any) {
	if h.cfg.Logf != nil {
		h.cfg.Logf("multiraft: "+h.cfg.NodeID+": "+format, args...)
	}
}

// raftLogger adapts raft's hclog output to Logf, one call per line. Every group's logger
// derives from one root, so SetRaftLogLevel changes all of them at once.
func (h *Host) raftLogger(group uint32) hclog.Logger {
	if h.cfg.Logf == nil {
		return hclog.NewNullLogger()
	}
	h.raftLogOnce.Do(func() {
		level := hclog.LevelFromString(h.cfg.RaftLogLevel)
		if h.cfg.RaftLogLevel == "OFF" {
			level = hclog.Off
		}
		h.raftLog = hclog.New(&hclog.LoggerOptions{
			Name:        "raft " + h.cfg.NodeID,
			Level:       level,
			Output:      logfWriter{h.cfg.Logf},
			DisableTime: true,
		})
	})
	return h.raftLog.Named(fmt.Sprintf("group %d", group))
}

// SetRaftLogLevel changes the log level of every group's raft library logger (TRACE,
// DEBUG, INFO, WARN, ERROR or OFF) until the host is reopened.
func (h *Host) SetRaftLogLevel(level string) error {
	level = strings.ToUpper(level)
	l := hclog.LevelFromString(level)
	if level == "OFF" {
		l = hclog.Off
	} else if l == hclog.NoLevel {
		return fmt.Errorf("multiraft: raft log level %q: want TRACE, DEBUG, INFO, WARN, ERROR or OFF", level)
	}
	h.raftLogger(0) // make the root if no group has yet
	if h.raftLog != nil {
		h.raftLog.SetLevel(l)
	}
	return nil
}

type logfWriter struct {
	logf func(string, ...any)
}

func (w logfWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.logf("%s", line)
	}
	return len(p), nil
}
