// Package membership is the failure detector: SWIM gossip through hashicorp/memberlist,
// tuned so a dead node is declared within about 2.5 s on a LAN, while idle traffic stays at
// a few small UDP packets per second per node.
//
// Membership only observes. What the cluster believes (a node's recorded state) lives in
// the cluster group; its leader reconciles the record with Alive() (package node).
package membership

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node tells its peers about itself through gossip. Its JSON form must fit
// memberlist's 512-byte meta limit.
type Meta struct {
	ClientAddr    string `json:"c,omitempty"`
	RaftAddr      string `json:"r,omitempty"`
	DataplaneAddr string `json:"d,omitempty"`
}

// Config configures a member.
type Config struct {
	NodeID string // unique name in the cluster, e.g. "node-2"
	Bind   string // HOST:PORT for gossip (TCP and UDP); port 0 picks one
	Meta   Meta
	// ProbeInterval is how often each node probes a random peer (default 500 ms);
	// a node is declared dead about 5 probe intervals after it stops answering.
	ProbeInterval time.Duration
	Logf          func(format string, args ...any)
}

// Member is a live peer as gossip sees it.
type Member struct {
	NodeID string
	Addr   string // gossip address
	Meta   Meta
}

// Membership is one node's gossip member.
type Membership struct {
	list *memberlist.Memberlist
	meta []byte

	mu    sync.Mutex
	alive map[string]Member
	// changed is closed and replaced whenever alive changes.
	changed chan struct{}
}

// Start binds the gossip listener and starts probing. Call Join to meet peers.
func Start(cfg Config) (*Membership, error) {
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("membership: --gossip-listen %q: %v", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip port %q: %v", portStr, err)
	}
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, err
	}
	if len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("membership: node meta is %d bytes, memberlist carries at most %d", len(meta), memberlist.MetaMaxSize)
	}
	m := &Membership{meta: meta, alive: map[string]Member{}, changed: make(chan struct{})}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	mc.ProbeInterval = cfg.ProbeInterval
	if mc.ProbeInterval <= 0 {
		mc.ProbeInterval = 500 * time.Millisecond
	}
	mc.ProbeTimeout = mc.ProbeInterval * 2 / 5
	mc.SuspicionMult = 3
	// Without confirmations from other members a suspicion would last up to
	// SuspicionMaxTimeoutMult × the minimum; small clusters rarely get them, so keep it flat.
	mc.SuspicionMaxTimeoutMult = 1
	mc.GossipInterval = 200 * time.Millisecond
	mc.PushPullInterval = 30 * time.Second
	mc.Delegate = delegate{m}
	mc.Events = events{m}
	mc.Logger = log.New(&filter{logf: cfg.Logf}, "", 0)
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: starting gossip on %s: %w", cfg.Bind, err)
	}
	m.list = list
	return m, nil
}

// Join contacts seeds (gossip addresses) and returns how many answered.
func (m *Membership) Join(seeds []string) (int, error) {
	if len(seeds) == 0 {
		return 0, nil
	}
	n, err := m.list.Join(seeds)
	if err != nil {
		return n, fmt.Errorf("membership: joining %v: %w", seeds, err)
	}
	return n, nil
}

// Addr is the gossip address peers reach this node at.
func (m *Membership) Addr() string {
	n := m.list.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Alive returns the live members, this node included, by node id.
func (m *Membership) Alive() map[string]Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Member, len(m.alive))
	for k, v := range m.alive {
		out[k] = v
	}
	return out
}

// Changed returns a channel closed at the next change of the alive set.
func (m *Membership) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Leave tells peers this node is leaving (they see it gone at once, not after probing),
// then stops gossip.
func (m *Membership) Leave(timeout time.Duration) error {
	err := m.list.Leave(timeout)
	if serr := m.list.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Shutdown stops gossip without telling anyone, as a crash would.
func (m *Membership) Shutdown() error { return m.list.Shutdown() }

func (m *Membership) update(n *memberlist.Node, alive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if alive {
		var meta Meta
		_ = json.Unmarshal(n.Meta, &meta) // a peer's bad meta leaves its addresses empty
		m.alive[n.Name] = Member{NodeID: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), Meta: meta}
	} else {
		delete(m.alive, n.Name)
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

type events struct{ m *Membership }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.update(n, true) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.m.update(n, false) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.update(n, true) }

// delegate publishes this node's meta; it carries no user messages.
type delegate struct{ m *Membership }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.m.meta) > limit {
		return nil
	}
	return d.m.meta
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// filter passes memberlist's WARN and ERR lines to logf and drops DEBUG and INFO chatter.
type filter struct {
	logf func(string, ...any)
}

func (f *filter) Write(p []byte) (int, error) {
	if f.logf != nil && (bytes.Contains(p, []byte("[WARN]")) || bytes.Contains(p, []byte("[ERR]"))) {
		f.logf("gossip: %s", bytes.TrimSpace(p))
	}
	return len(p), nil
}

var _ io.Writer = (*filter)(nil)
