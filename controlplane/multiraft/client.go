package multiraft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/claudefs/claudefs/controlplane/raftmux"
)

// Forwarded operations ride raftmux's call frames on the data lane of the
// Raft connections, so a node needs no second listener for them:
//
//	request  op (1 Apply, 2 Query) | payload
//	answer   status | rest:
//	  0 ok             | result
//	  1 not leader     | bytes leader id | bytes leader addr
//	  2 no group       |
//	  3 outcome unknown| message
//	  4 error          | message
//
// The serving node never forwards further: it answers "not leader" with
// the leader it knows, and the client follows.
const (
	opApply byte = 1
	opQuery byte = 2

	ansOK        byte = 0
	ansNotLeader byte = 1
	ansNoGroup   byte = 2
	ansUnknown   byte = 3
	ansError     byte = 4
)

func (h *Host) serveCall(ctx context.Context, group uint32, req []byte) ([]byte, error) {
	if len(req) == 0 {
		return nil, errors.New("multiraft: empty call")
	}
	g := h.Group(group)
	if g == nil {
		return []byte{ansNoGroup}, nil
	}
	var (
		out []byte
		err error
	)
	switch req[0] {
	case opApply:
		out, err = g.Apply(ctx, req[1:])
	case opQuery:
		out, err = g.Query(ctx, req[1:])
	default:
		return nil, fmt.Errorf("multiraft: call op %d", req[0])
	}
	return encodeAnswer(out, err), nil
}

func encodeAnswer(out []byte, err error) []byte {
	var nl *NotLeaderError
	var ng *NoGroupError
	switch {
	case err == nil:
		return append([]byte{ansOK}, out...)
	case errors.As(err, &nl):
		b := binary.AppendUvarint([]byte{ansNotLeader}, uint64(len(nl.LeaderID)))
		b = append(b, nl.LeaderID...)
		b = binary.AppendUvarint(b, uint64(len(nl.LeaderAddr)))
		return append(b, nl.LeaderAddr...)
	case errors.As(err, &ng):
		return []byte{ansNoGroup}
	case errors.Is(err, ErrOutcomeUnknown):
		return append([]byte{ansUnknown}, err.Error()...)
	default:
		return append([]byte{ansError}, err.Error()...)
	}
}

// decodeAnswer turns an answer back into (result, error) for group, as
// seen from node addr.
func decodeAnswer(b []byte, group uint32, addr string) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("multiraft: empty answer from %s", addr)
	}
	rest := b[1:]
	switch b[0] {
	case ansOK:
		return rest, nil
	case ansNotLeader:
		id, n1 := readField(rest)
		a, n2 := readField(rest[max(n1, 0):])
		if n1 < 0 || n2 < 0 || n1+n2 != len(rest) || len(id) > 256 || len(a) > 256 {
			return nil, fmt.Errorf("multiraft: malformed not-leader answer from %s", addr)
		}
		return nil, &NotLeaderError{Group: group, LeaderID: string(id), LeaderAddr: string(a)}
	case ansNoGroup:
		return nil, &NoGroupError{Group: group, Node: addr}
	case ansUnknown:
		return nil, fmt.Errorf("%w (at %s: %s)", ErrOutcomeUnknown, addr, rest)
	case ansError:
		return nil, fmt.Errorf("multiraft: %s: %s", addr, rest)
	}
	return nil, fmt.Errorf("multiraft: answer status %d from %s", b[0], addr)
}

// readField reads a uvarint-length-prefixed field; n < 0 if malformed.
func readField(b []byte) ([]byte, int) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, -1
	}
	return b[n : n+int(l)], n + int(l)
}

// ClientConfig configures a Client. Zero fields take defaults.
type ClientConfig struct {
	// MaxAttempts bounds the nodes tried for one operation (redirects
	// included). Default 16: with the pauses below, about 5 s of retrying,
	// enough to ride out an election.
	MaxAttempts int
	// Timeout bounds an operation whose context has no deadline.
	// Default 10 s.
	Timeout time.Duration
	// RetryDelay is the first pause after a failed attempt that did not
	// name the leader (no leader known, node unreachable); it doubles up to
	// 8×. Redirects to a named leader are followed at once. Default 50 ms.
	RetryDelay time.Duration
	// Logf receives the client's transport messages. Nil: dropped.
	Logf func(format string, args ...any)
}

// Client applies commands to and queries any group, on any node, through
// its leader: it starts from the leader it last saw for the group (or the
// addresses it is given), and follows "not leader" answers, within
// MaxAttempts and the operation's deadline.
type Client struct {
	mux    *raftmux.Mux
	ownMux bool
	host   *Host // nil for a standalone client
	cfg    ClientConfig

	mu      sync.Mutex
	leaders map[uint32]string // last known leader address per group, guarded by mu
}

func newClient(mux *raftmux.Mux, h *Host, cfg ClientConfig) *Client {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 50 * time.Millisecond
	}
	return &Client{mux: mux, host: h, cfg: cfg, leaders: make(map[uint32]string)}
}

// NewClient returns a standalone client (a process that runs no group): it
// opens its own outgoing connections to the nodes it calls. Close it.
func NewClient(cfg ClientConfig) (*Client, error) {
	mux, err := raftmux.New(raftmux.Config{Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	c := newClient(mux, nil, cfg)
	c.ownMux = true
	return c, nil
}

// Close closes a standalone client's connections (a host's client closes
// with the host).
func (c *Client) Close() error {
	if c.ownMux {
		return c.mux.Close()
	}
	return nil
}

// Apply applies cmd to group through its leader. addrs are Raft addresses
// of nodes that run the group (any order; the leader is found). Only
// failures that prove the command was not applied are retried; an
// outcome-unknown error is returned as is.
func (c *Client) Apply(ctx context.Context, group uint32, cmd []byte, addrs []string) ([]byte, error) {
	return c.do(ctx, opApply, group, cmd, addrs)
}

// Query answers q from group's leader with Read's linearizability.
func (c *Client) Query(ctx context.Context, group uint32, q []byte, addrs []string) ([]byte, error) {
	return c.do(ctx, opQuery, group, q, addrs)
}

func (c *Client) do(ctx context.Context, op byte, group uint32, payload []byte, addrs []string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req := make([]byte, 0, 1+len(payload))
	req = append(append(req, op), payload...)

	// Candidates: the cached leader first, then the given addresses.
	var queue []string
	c.mu.Lock()
	if l := c.leaders[group]; l != "" {
		queue = append(queue, l)
	}
	c.mu.Unlock()
	queue = append(queue, addrs...)
	if c.host != nil {
		if g := c.host.Group(group); g != nil {
			if _, l := g.Leader(); l != "" {
				queue = append([]string{l}, queue...)
			}
			queue = append(queue, c.host.Addr())
		}
	}
	if len(queue) == 0 {
		return nil, fmt.Errorf("multiraft: group %d: no node to ask", group)
	}

	delay := c.cfg.RetryDelay
	var lastErr error
	pos := 0
	redirect := ""
	for attempt := 0; attempt < c.cfg.MaxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			break
		}
		addr := redirect
		if addr == "" {
			addr = queue[pos%len(queue)]
			pos++
		}
		redirect = ""
		out, err := c.once(ctx, op, group, addr, req)
		if err == nil {
			c.mu.Lock()
			c.leaders[group] = addr
			c.mu.Unlock()
			return out, nil
		}
		lastErr = err
		var nl *NotLeaderError
		var ng *NoGroupError
		switch {
		case errors.As(err, &nl) && nl.LeaderAddr != "" && nl.LeaderAddr != addr:
			redirect = nl.LeaderAddr // ask the named leader next
			continue
		case errors.As(err, &nl), errors.As(err, &ng):
			// Election under way, or not a member: pause before the next node.
		case errors.Is(err, raftmux.ErrUnreachable), errors.As(err, new(*raftmux.RemoteError)):
			// Not sent, or refused by the far end's transport before any
			// handler ran (busy, closing): nothing was applied.
		case op == opQuery && !errors.Is(err, ErrOutcomeUnknown):
			// A read may be retried after any failure.
		default:
			return nil, err
		}
		c.mu.Lock()
		if c.leaders[group] == addr {
			delete(c.leaders, group)
		}
		c.mu.Unlock()
		// Pause before the next node: an election takes a heartbeat
		// timeout or two, and unreachable nodes fail in microseconds.
		{
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			delay = min(2*delay, 8*c.cfg.RetryDelay)
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, fmt.Errorf("multiraft: group %d: gave up after %d attempts: %w", group, c.cfg.MaxAttempts, lastErr)
}

// once asks one node: this host's own group directly, others over raftmux.
func (c *Client) once(ctx context.Context, op byte, group uint32, addr string, req []byte) ([]byte, error) {
	if c.host != nil && addr == c.host.Addr() {
		g := c.host.Group(group)
		if g == nil {
			return nil, &NoGroupError{Group: group, Node: addr}
		}
		if op == opApply {
			return g.Apply(ctx, req[1:])
		}
		return g.Query(ctx, req[1:])
	}
	ans, err := c.mux.Call(ctx, addr, group, req)
	var re *raftmux.RemoteError
	if err != nil {
		if op == opApply && !errors.Is(err, raftmux.ErrUnreachable) && !errors.As(err, &re) {
			// Sent, but no answer: it may have been applied.
			return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return nil, err
	}
	return decodeAnswer(ans, group, addr)
}
