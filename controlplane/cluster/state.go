// Package cluster is the cluster group's state machine: the members and their states, the
// placement map and its epoch, the metadata shards' replica sets, live configuration, join
// tokens and maintenance windows.
//
// State changes only through Apply of a Command, on every replica in log order. Apply is a
// pure function of the state and the command: time comes from the command (stamped by the
// proposer), never from the clock, so every replica reaches the same state.
package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/claudefs/claudefs/controlplane/placement"
)

// NodeState is a member's lifecycle state, as the runbook names them.
type NodeState string

// The node states. PENDING: joined, not yet serving. HEALTHY: serving. DOWN: missed by
// the failure detector. DRAINING/DRAINED: being emptied / empty, before removal.
const (
	Pending  NodeState = "PENDING"
	Healthy  NodeState = "HEALTHY"
	Down     NodeState = "DOWN"
	Draining NodeState = "DRAINING"
	Drained  NodeState = "DRAINED"
)

func (s NodeState) valid() bool {
	switch s {
	case Pending, Healthy, Down, Draining, Drained:
		return true
	}
	return false
}

// Node is one member of the cluster.
type Node struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"` // "storage"
	State         NodeState `json:"state"`
	Since         time.Time `json:"since"` // when State was entered
	RaftAddr      string    `json:"raft_addr"`
	GossipAddr    string    `json:"gossip_addr"`
	ClientAddr    string    `json:"client_addr"`
	DataplaneAddr string    `json:"dataplane_addr"`
	Devices       []string  `json:"devices"` // device ids, e.g. "node-1/dev0"
}

// Token is a join token as stored: only its hash, never the secret.
type Token struct {
	Hash     string    `json:"hash"` // hex SHA-256 of the token text
	NodeType string    `json:"node_type"`
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
	UsedBy   string    `json:"used_by,omitempty"`
	UsedAt   time.Time `json:"used_at,omitempty"`
}

// Window is a maintenance window: alerts that would page are held during it.
type Window struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
}

// State is the whole cluster group state. It is small (kilobytes per node) and kept in
// memory; the persistence layer stores it whole with the applied index.
type State struct {
	Name         string `json:"name"`
	InitialNodes int    `json:"initial_nodes"` // shards are placed once this many have joined
	Shards       int    `json:"shards"`        // metadata shards (Raft groups 1..Shards)
	Replicas     int    `json:"replicas"`      // replicas per metadata shard
	K            int    `json:"k"`
	M            int    `json:"m"`
	PGs          int    `json:"pgs"`

	Nodes    map[string]*Node    `json:"nodes"`
	NextNode int                 `json:"next_node"` // number of the next node id handed out
	Epoch    uint64              `json:"epoch"`     // placement epoch: bumped on every map change
	ShardMap map[uint32][]string `json:"shard_map"` // shard → node ids, first is the preferred leader
	Config   map[string]string   `json:"config"`
	Tokens   map[string]*Token   `json:"tokens"` // by hash
	Window   *Window             `json:"window,omitempty"`
}

// Limits on what the state may hold; commands past them are refused.
const (
	MaxNodes      = 4096
	MaxShards     = 65536
	MaxTokens     = 1024 // unexpired, unused tokens at once
	MaxConfigKeys = 512
	MaxStringLen  = 256
	// TokenTTL is how long a join token is valid unless its maker says otherwise;
	// MaxTokenTTL bounds what it may say.
	TokenTTL    = time.Hour
	MaxTokenTTL = 24 * time.Hour
)

// Op names a command.
type Op string

// The commands.
const (
	OpBootstrap   Op = "bootstrap"
	OpAddToken    Op = "add_token"
	OpJoin        Op = "join"
	OpSetState    Op = "set_state"
	OpSetAddrs    Op = "set_addrs"
	OpPlaceShards Op = "place_shards"
	OpSetConfig   Op = "set_config"
	OpSetWindow   Op = "set_window"
	OpClearWin    Op = "clear_window"
)

// Command is one change to the state. Now is stamped by the proposer.
type Command struct {
	Op    Op        `json:"op"`
	Now   time.Time `json:"now"`
	Name  string    `json:"name,omitempty"`
	Nodes int       `json:"nodes,omitempty"`
	// Shards, Replicas, K, M, PGs: for bootstrap.
	Shards   int `json:"shards,omitempty"`
	Replicas int `json:"replicas,omitempty"`
	K        int `json:"k,omitempty"`
	M        int `json:"m,omitempty"`
	PGs      int `json:"pgs,omitempty"`

	Node   *Node     `json:"node,omitempty"`    // bootstrap, join, set_addrs
	NodeID string    `json:"node_id,omitempty"` // set_state
	State  NodeState `json:"state,omitempty"`
	Token  *Token    `json:"token,omitempty"`  // add_token
	Secret string    `json:"secret,omitempty"` // join: the token text, hashed on apply
	Key    string    `json:"key,omitempty"`
	Value  string    `json:"value,omitempty"`
	Window *Window   `json:"window,omitempty"`
}

// MaxCommandBytes bounds an encoded command.
const MaxCommandBytes = 64 << 10

// Encode returns the command's wire form.
func (c *Command) Encode() ([]byte, error) { return json.Marshal(c) }

// DecodeCommand parses a command, refusing oversize input.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > MaxCommandBytes {
		return nil, fmt.Errorf("cluster: command of %d bytes, at most %d", len(b), MaxCommandBytes)
	}
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("cluster: bad command: %w", err)
	}
	return &c, nil
}

// Result is what Apply answers.
type Result struct {
	NodeID string `json:"node_id,omitempty"` // join: the id given to the new node
	Epoch  uint64 `json:"epoch"`
}

// Errors Apply answers; callers match them with errors.Is.
var (
	ErrNotBootstrapped = errors.New("cluster: not bootstrapped yet")
	ErrBootstrapped    = errors.New("cluster: already bootstrapped")
	ErrTokenUnknown    = errors.New("join token not known to this cluster")
	ErrTokenUsed       = errors.New("join token already used")
	ErrTokenExpired    = errors.New("join token expired")
	ErrNoSuchNode      = errors.New("no such node")
)

// HashToken is the stored form of a token's text.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewState returns an empty (not bootstrapped) state.
func NewState() *State {
	return &State{Nodes: map[string]*Node{}, ShardMap: map[uint32][]string{}, Config: map[string]string{}, Tokens: map[string]*Token{}}
}

// Bootstrapped reports whether the cluster has a name yet.
func (s *State) Bootstrapped() bool { return s.Name != "" }

// Apply applies c to s. On error s is unchanged.
func (s *State) Apply(c *Command) (*Result, error) {
	if c.Op != OpBootstrap && !s.Bootstrapped() {
		return nil, ErrNotBootstrapped
	}
	if err := checkStrings(c); err != nil {
		return nil, err
	}
	switch c.Op {
	case OpBootstrap:
		return s.bootstrap(c)
	case OpAddToken:
		return s.addToken(c)
	case OpJoin:
		return s.join(c)
	case OpSetState:
		n := s.Nodes[c.NodeID]
		if n == nil {
			return nil, fmt.Errorf("%w %q", ErrNoSuchNode, c.NodeID)
		}
		if !c.State.valid() {
			return nil, fmt.Errorf("cluster: unknown node state %q", c.State)
		}
		if n.State != c.State {
			n.State, n.Since = c.State, c.Now
			s.Epoch++ // the usable device set changed
		}
		return &Result{Epoch: s.Epoch}, nil
	case OpSetAddrs:
		if c.Node == nil || s.Nodes[c.Node.ID] == nil {
			return nil, fmt.Errorf("%w", ErrNoSuchNode)
		}
		n := s.Nodes[c.Node.ID]
		n.RaftAddr, n.GossipAddr, n.ClientAddr, n.DataplaneAddr = c.Node.RaftAddr, c.Node.GossipAddr, c.Node.ClientAddr, c.Node.DataplaneAddr
		return &Result{Epoch: s.Epoch}, nil
	case OpPlaceShards:
		return s.placeShards()
	case OpSetConfig:
		if _, ok := s.Config[c.Key]; !ok && len(s.Config) >= MaxConfigKeys {
			return nil, fmt.Errorf("cluster: %d configuration keys already set, at most %d", len(s.Config), MaxConfigKeys)
		}
		if c.Key == "" {
			return nil, errors.New("cluster: empty configuration key")
		}
		s.Config[c.Key] = c.Value
		return &Result{Epoch: s.Epoch}, nil
	case OpSetWindow:
		if c.Window == nil || c.Window.Duration <= 0 || c.Window.Duration > 7*24*time.Hour {
			return nil, errors.New("cluster: a maintenance window needs a duration between 1s and 7 days")
		}
		w := *c.Window
		s.Window = &w
		return &Result{Epoch: s.Epoch}, nil
	case OpClearWin:
		s.Window = nil
		return &Result{Epoch: s.Epoch}, nil
	}
	return nil, fmt.Errorf("cluster: unknown command %q", c.Op)
}

func checkStrings(c *Command) error {
	long := func(v string) bool { return len(v) > MaxStringLen }
	if long(c.Name) || long(c.NodeID) || long(c.Key) || long(c.Value) || long(c.Secret) {
		return fmt.Errorf("cluster: a field of the command is longer than %d bytes", MaxStringLen)
	}
	if n := c.Node; n != nil {
		if long(n.ID) || long(n.RaftAddr) || long(n.GossipAddr) || long(n.ClientAddr) || long(n.DataplaneAddr) || len(n.Devices) > 64 {
			return fmt.Errorf("cluster: node description too long (fields ≤ %d bytes, ≤ 64 devices)", MaxStringLen)
		}
	}
	return nil
}

func (s *State) bootstrap(c *Command) (*Result, error) {
	if s.Bootstrapped() {
		return nil, fmt.Errorf("%w as %q", ErrBootstrapped, s.Name)
	}
	switch {
	case c.Name == "":
		return nil, errors.New("cluster: bootstrap needs a cluster name")
	case c.Nodes < 1 || c.Nodes > MaxNodes:
		return nil, fmt.Errorf("cluster: %d initial nodes: want 1..%d", c.Nodes, MaxNodes)
	case c.Shards < 1 || c.Shards > MaxShards:
		return nil, fmt.Errorf("cluster: %d shards: want 1..%d", c.Shards, MaxShards)
	case c.Replicas < 1 || c.Replicas > 7:
		return nil, fmt.Errorf("cluster: %d replicas: want 1..7", c.Replicas)
	case c.Node == nil || c.Node.ID == "":
		return nil, errors.New("cluster: bootstrap needs the first node")
	}
	m := placement.Map{K: c.K, M: c.M, PGs: c.PGs}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	s.Name, s.InitialNodes, s.Shards, s.Replicas = c.Name, c.Nodes, c.Shards, c.Replicas
	s.K, s.M, s.PGs = c.K, c.M, c.PGs
	n := *c.Node
	n.Devices = deviceIDs(n.ID, len(c.Node.Devices))
	n.State, n.Since = Pending, c.Now
	if n.Type == "" {
		n.Type = "storage"
	}
	s.Nodes[n.ID] = &n
	s.NextNode = 2
	s.Epoch = 1
	return &Result{NodeID: n.ID, Epoch: s.Epoch}, nil
}

func (s *State) addToken(c *Command) (*Result, error) {
	t := c.Token
	if t == nil || len(t.Hash) != 64 {
		return nil, errors.New("cluster: add_token needs a token hash")
	}
	if !t.Expires.IsZero() && (!t.Expires.After(c.Now) || t.Expires.Sub(c.Now) > MaxTokenTTL) {
		return nil, fmt.Errorf("cluster: a join token must expire within %s of being made", MaxTokenTTL)
	}
	if t.NodeType != "storage" {
		return nil, fmt.Errorf("cluster: node type %q: only \"storage\" nodes exist", t.NodeType)
	}
	live := 0
	for _, old := range s.Tokens {
		if old.UsedBy == "" && c.Now.Before(old.Expires) {
			live++
		}
	}
	if live >= MaxTokens {
		return nil, fmt.Errorf("cluster: %d unused join tokens are live, at most %d: use or let some expire", live, MaxTokens)
	}
	// Forget tokens a day past their expiry (kept that long to say "expired", not "unknown").
	for h, old := range s.Tokens {
		if !c.Now.Before(old.Expires.Add(24 * time.Hour)) {
			delete(s.Tokens, h)
		}
	}
	tok := *t
	if tok.Expires.IsZero() {
		tok.Expires = c.Now.Add(TokenTTL)
	}
	tok.Issued, tok.UsedBy = c.Now, ""
	s.Tokens[tok.Hash] = &tok
	return &Result{Epoch: s.Epoch}, nil
}

func (s *State) join(c *Command) (*Result, error) {
	if c.Node == nil {
		return nil, errors.New("cluster: join needs the node's addresses")
	}
	t := s.Tokens[HashToken(c.Secret)]
	switch {
	case t == nil:
		return nil, fmt.Errorf("%w (ask this cluster for one: cfs admin cluster-token --node-type storage)", ErrTokenUnknown)
	case t.UsedBy != "":
		return nil, fmt.Errorf("%w by %s at %s: each token admits one node; make a new one with cfs admin cluster-token", ErrTokenUsed, t.UsedBy, t.UsedAt.UTC().Format(time.RFC3339))
	case !c.Now.Before(t.Expires):
		return nil, fmt.Errorf("%w at %s (issued %s, valid %s): make a new one with cfs admin cluster-token", ErrTokenExpired, t.Expires.UTC().Format(time.RFC3339), t.Issued.UTC().Format(time.RFC3339), t.Expires.Sub(t.Issued))
	}
	if len(s.Nodes) >= MaxNodes {
		return nil, fmt.Errorf("cluster: %d nodes, at most %d", len(s.Nodes), MaxNodes)
	}
	n := *c.Node
	n.ID = fmt.Sprintf("node-%d", s.NextNode)
	for s.Nodes[n.ID] != nil { // ids are never reused
		s.NextNode++
		n.ID = fmt.Sprintf("node-%d", s.NextNode)
	}
	s.NextNode++
	n.Type, n.State, n.Since = t.NodeType, Pending, c.Now
	n.Devices = deviceIDs(n.ID, len(c.Node.Devices))
	s.Nodes[n.ID] = &n
	t.UsedBy, t.UsedAt = n.ID, c.Now
	s.Epoch++
	return &Result{NodeID: n.ID, Epoch: s.Epoch}, nil
}

// placeShards assigns the metadata shards' replicas once the initial nodes are members.
// It is idempotent: a cluster whose shards are placed answers with no change.
func (s *State) placeShards() (*Result, error) {
	if len(s.ShardMap) > 0 {
		return &Result{Epoch: s.Epoch}, nil
	}
	if len(s.Nodes) < s.InitialNodes {
		return nil, fmt.Errorf("cluster: %d of %d initial nodes have joined; shards are placed when all have", len(s.Nodes), s.InitialNodes)
	}
	ids := s.NodeIDs()
	m, err := placement.Replicas(1, s.Shards, ids, s.Replicas)
	if err != nil {
		return nil, err
	}
	s.ShardMap = m
	s.Epoch++
	return &Result{Epoch: s.Epoch}, nil
}

// NodeIDs returns the members' ids in order.
func (s *State) NodeIDs() []string {
	ids := make([]string, 0, len(s.Nodes))
	for id := range s.Nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return nodeLess(ids[i], ids[j]) })
	return ids
}

// nodeLess orders "node-2" before "node-10".
func nodeLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// PlacementMap is the data placement map of the current state: every device of every
// node, usable when its node is HEALTHY or PENDING.
func (s *State) PlacementMap() placement.Map {
	m := placement.Map{Epoch: s.Epoch, K: s.K, M: s.M, PGs: s.PGs}
	for _, id := range s.NodeIDs() {
		n := s.Nodes[id]
		st := placement.DeviceOut
		if n.State == Healthy || n.State == Pending {
			st = placement.DeviceUp
		}
		for _, d := range n.Devices {
			m.Devices = append(m.Devices, placement.Device{ID: d, Node: n.ID, State: st})
		}
	}
	return m
}

// Marshal and UnmarshalState are the state's persistent form.
func (s *State) Marshal() ([]byte, error) { return json.Marshal(s) }

// MaxStateBytes bounds a persisted state.
const MaxStateBytes = 64 << 20

// UnmarshalState parses a persisted state.
func UnmarshalState(b []byte) (*State, error) {
	if len(b) > MaxStateBytes {
		return nil, fmt.Errorf("cluster: state of %d bytes, at most %d", len(b), MaxStateBytes)
	}
	s := NewState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("cluster: bad persisted state: %w", err)
	}
	if s.Nodes == nil || s.ShardMap == nil || s.Config == nil || s.Tokens == nil {
		ns := NewState()
		if s.Nodes == nil {
			s.Nodes = ns.Nodes
		}
		if s.ShardMap == nil {
			s.ShardMap = ns.ShardMap
		}
		if s.Config == nil {
			s.Config = ns.Config
		}
		if s.Tokens == nil {
			s.Tokens = ns.Tokens
		}
	}
	return s, nil
}

// deviceIDs names a node's devices "<node>/dev<i>"; the node's own names for them (paths)
// stay local to the node.
func deviceIDs(node string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s/dev%d", node, i)
	}
	return ids
}
