package multiraft

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/claudefs/claudefs/controlplane/raftmux"
	"github.com/hashicorp/raft"
)

// Group is one Raft group running on a Host.
type Group struct {
	h     *Host
	id    uint32
	raft  *raft.Raft
	fsm   *kvsm.FSM
	trans *raftmux.Transport
	sm    kvsm.Applier

	// barrierTerm is the term in which this node, as leader, saw a Barrier
	// complete: from then on its state machine holds every entry committed
	// before that term began. barrierMu keeps concurrent reads from each
	// issuing one.
	barrierTerm atomic.Uint64
	barrierMu   sync.Mutex

	// The read lease (see Read): reads in leaseTerm before leaseUntil
	// (monoNow) are answered from the local state without a quorum round.
	// fencing counts leadership transfers and membership changes under way,
	// during which no lease is taken or used; fenceGen changes at each
	// one's start and end, so a round that overlapped one takes no lease.
	leaseUntil atomic.Int64
	leaseTerm  atomic.Uint64
	fencing    atomic.Int32
	fenceGen   atomic.Uint64

	stopOnce sync.Once
	stopErr  error
}

// ID returns the group id.
func (g *Group) ID() uint32 { return g.id }

// Raft returns the group's raft instance, for observers and statistics.
// Do not shut it down; use (*Host).StopGroup.
func (g *Group) Raft() *raft.Raft { return g.raft }

// FSM returns the group's state machine.
func (g *Group) FSM() *kvsm.FSM { return g.fsm }

// State returns the group's raft state on this node.
func (g *Group) State() raft.RaftState { return g.raft.State() }

// Leader returns the group's leader as this node knows it (empty if none).
func (g *Group) Leader() (id, addr string) {
	a, i := g.raft.LeaderWithID()
	return string(i), string(a)
}

// Stats returns raft's statistics of the group (raft.Raft.Stats).
func (g *Group) Stats() map[string]string { return g.raft.Stats() }

// Status returns the group's summary.
func (g *Group) Status() GroupStatus {
	id, addr := g.Leader()
	return GroupStatus{
		ID:           g.id,
		State:        g.raft.State().String(),
		LeaderID:     id,
		LeaderAddr:   addr,
		Term:         g.raft.CurrentTerm(),
		LastIndex:    g.raft.LastIndex(),
		CommitIndex:  g.raft.CommitIndex(),
		AppliedIndex: g.fsm.AppliedIndex(),
	}
}

func (g *Group) notLeader() *NotLeaderError {
	id, addr := g.Leader()
	if id == g.h.cfg.NodeID {
		id, addr = "", ""
	}
	return &NotLeaderError{Group: g.id, LeaderID: id, LeaderAddr: addr}
}

// wait waits for f, or for ctx.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Group) opContext(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel := context.WithTimeout(ctx, g.h.cfg.OpTimeout)
		return ctx, cancel, g.h.cfg.OpTimeout
	}
	dl, _ := ctx.Deadline()
	return ctx, func() {}, time.Until(dl)
}

// mapErr turns raft's errors into this package's.
func (g *Group) mapErr(err error, applying bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return g.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		if applying {
			return fmt.Errorf("multiraft: group %d: %w (leadership lost)", g.id, ErrOutcomeUnknown)
		}
		return g.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("multiraft: group %d: %w", g.id, ErrClosed)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Not enqueued, so not applied.
		return fmt.Errorf("multiraft: group %d: raft too busy to take the command: %w", g.id, context.DeadlineExceeded)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if applying {
			return fmt.Errorf("multiraft: group %d: %w (%v)", g.id, ErrOutcomeUnknown, err)
		}
		return err
	}
	return fmt.Errorf("multiraft: group %d: %w", g.id, err)
}

// Apply proposes cmd and returns the state machine's result once it is
// committed and applied on this node. On a follower it returns a
// *NotLeaderError at once (nothing was proposed). If leadership is lost
// or ctx ends while the command is in flight the error wraps
// ErrOutcomeUnknown.
func (g *Group) Apply(ctx context.Context, cmd []byte) (_ []byte, err error) {
	if len(cmd) > g.h.cfg.MaxCommandBytes {
		return nil, fmt.Errorf("multiraft: group %d: %w: %d bytes, limit %d", g.id, ErrTooLarge, len(cmd), g.h.cfg.MaxCommandBytes)
	}
	if g.raft.State() != raft.Leader {
		return nil, g.notLeader()
	}
	ctx, cancel, left := g.opContext(ctx)
	defer cancel()
	if on := g.h.cfg.OnApply; on != nil {
		start := time.Now()
		defer func() { on(g.id, cmd, time.Since(start), err) }()
	}
	f := g.raft.Apply(cmd, left)
	if err := wait(ctx, f); err != nil {
		return nil, g.mapErr(err, true)
	}
	switch r := f.Response().(type) {
	case []byte:
		return r, nil
	case error:
		return nil, fmt.Errorf("multiraft: group %d: %w", g.id, r)
	case nil:
		return nil, nil
	default:
		return nil, fmt.Errorf("multiraft: group %d: state machine answered %T", g.id, r)
	}
}

// Read runs fn against the group's state so that what fn sees is
// linearizable: it reflects every command whose Apply returned before Read
// was called, and no read that starts later sees older state.
//
// Why this is linearizable (the read-index argument of the Raft thesis,
// §6.4, with hashicorp/raft's primitives):
//
//  1. Only a leader serves reads. On its first read in a term it applies a
//     Barrier and waits for it: a leader's Barrier commits only once an
//     entry of its own term is committed, and returns only once the local
//     state machine has applied everything before it — so every command
//     committed by any earlier leader is in the local state. Commands
//     committed in this term were applied here before their Apply returned.
//  2. VerifyLeader, issued after the read arrived, succeeds only if a
//     quorum still acknowledges this leader's term at that point. So no
//     newer leader had committed anything when the read was ordered: the
//     local state includes every command that completed before Read began.
//  3. fn then reads the local state, which only moves forward.
//
// The lease: a successful quorum round started at t0 lets reads until
// t0 + HeartbeatTimeout/2, in the same term, skip their own round. It is
// safe because every follower that answered heard from this leader at or
// after t0, and hashicorp/raft's followers refuse votes (and pre-votes)
// while they have a leader heard from within HeartbeatTimeout (at least):
// no other leader can be elected before the lease ends. Leadership
// transfers make followers vote at once, and membership changes change the
// quorum, so neither takes nor uses a lease while it runs (fencing).
//
// On a follower (or after losing leadership) Read returns a
// *NotLeaderError. fn must not retain r past its return.
func (g *Group) Read(ctx context.Context, fn func(r kvsm.Reader) error) error {
	ctx, cancel, left := g.opContext(ctx)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		if g.raft.State() != raft.Leader {
			return g.notLeader()
		}
		term := g.raft.CurrentTerm()
		if g.barrierTerm.Load() != term {
			g.barrierMu.Lock()
			if g.barrierTerm.Load() != term {
				if err := wait(ctx, g.raft.Barrier(left)); err != nil {
					g.barrierMu.Unlock()
					return g.mapErr(err, false)
				}
				if g.raft.CurrentTerm() == term {
					g.barrierTerm.Store(term)
				}
			}
			g.barrierMu.Unlock()
		}
		if g.fencing.Load() == 0 && g.leaseTerm.Load() == term && monoNow() < g.leaseUntil.Load() {
			return fn(g.fsm.Reader())
		}
		gen := g.fenceGen.Load()
		t0 := monoNow()
		release := g.trans.Expedite() // the verify round should not wait for HeartbeatWindow
		err := wait(ctx, g.raft.VerifyLeader())
		release()
		if err != nil {
			return g.mapErr(err, false)
		}
		if g.raft.CurrentTerm() != term || g.barrierTerm.Load() != term {
			continue // a new term began meanwhile: redo its barrier
		}
		if g.fencing.Load() == 0 && g.fenceGen.Load() == gen {
			g.leaseUntil.Store(0)
			g.leaseTerm.Store(term)
			g.leaseUntil.Store(t0 + int64(g.h.cfg.HeartbeatTimeout/2))
			if g.fenceGen.Load() != gen {
				g.leaseUntil.Store(0) // a fence began while storing
			}
		}
		return fn(g.fsm.Reader())
	}
	return g.notLeader()
}

// Query answers q with the group's Applier under Read's guarantees.
func (g *Group) Query(ctx context.Context, q []byte) ([]byte, error) {
	var out []byte
	err := g.Read(ctx, func(r kvsm.Reader) error {
		var err error
		out, err = g.sm.Query(r, q)
		return err
	})
	return out, err
}

// AddVoter adds (or promotes) a voting member. Leader only.
func (g *Group) AddVoter(ctx context.Context, id, addr string) error {
	defer g.fence()()
	ctx, cancel, left := g.opContext(ctx)
	defer cancel()
	return g.mapErr(wait(ctx, g.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, left)), false)
}

// RemoveServer removes a member. Leader only.
func (g *Group) RemoveServer(ctx context.Context, id string) error {
	defer g.fence()()
	ctx, cancel, left := g.opContext(ctx)
	defer cancel()
	return g.mapErr(wait(ctx, g.raft.RemoveServer(raft.ServerID(id), 0, left)), false)
}

// Configuration returns the group's latest membership.
func (g *Group) Configuration(ctx context.Context) ([]raft.Server, error) {
	ctx, cancel, _ := g.opContext(ctx)
	defer cancel()
	f := g.raft.GetConfiguration()
	if err := wait(ctx, f); err != nil {
		return nil, g.mapErr(err, false)
	}
	return f.Configuration().Servers, nil
}

// LeadershipTransfer hands leadership to the most up-to-date follower, or
// to id at addr if id is not empty. Leader only.
func (g *Group) LeadershipTransfer(ctx context.Context, id, addr string) error {
	defer g.fence()()
	ctx, cancel, _ := g.opContext(ctx)
	defer cancel()
	var f raft.Future
	if id == "" {
		f = g.raft.LeadershipTransfer()
	} else {
		f = g.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	return g.mapErr(wait(ctx, f), false)
}

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is a monotonic clock reading in ns (wall-clock steps do not
// move it), for the read lease.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// fence ends the read lease and keeps reads from taking one until the
// returned function is called.
func (g *Group) fence() func() {
	g.fencing.Add(1)
	g.fenceGen.Add(1)
	g.leaseUntil.Store(0)
	return func() {
		g.fenceGen.Add(1)
		g.leaseUntil.Store(0)
		g.fencing.Add(-1)
	}
}

// Snapshot makes the group take a snapshot now (and compact its log).
func (g *Group) Snapshot(ctx context.Context) error {
	ctx, cancel, _ := g.opContext(ctx)
	defer cancel()
	return g.mapErr(wait(ctx, g.raft.Snapshot()), false)
}

func (g *Group) stop() error {
	g.stopOnce.Do(func() {
		g.stopErr = g.raft.Shutdown().Error()
		g.trans.Close()
	})
	return g.stopErr
}
