package node

import (
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
)

// The client API: JSON over HTTPS on Config.ClientAddr (certificates: tls.go). Any node answers; requests that
// need the cluster group's leader are forwarded to it (one hop; the answer says which
// node served it). Field names are stable: scripts read them.

// Status is GET /v1/status: this node's view of the cluster.
type Status struct {
	NodeID      string            `json:"node_id"`
	ClusterName string            `json:"cluster_name"`
	Epoch       uint64            `json:"epoch"`
	Leader      string            `json:"cluster_leader"` // the cluster group's leader node, "" when none
	Nodes       []NodeStatus      `json:"nodes"`
	Groups      GroupsSummary     `json:"groups"`
	ShardsReady bool              `json:"shards_placed"`
	GroupList   []GroupStatus     `json:"group_list,omitempty"` // with ?groups=1
	Uptime      float64           `json:"uptime_s"`
	Config      map[string]string `json:"config,omitempty"`
}

// NodeStatus is one member as the cluster group records it.
type NodeStatus struct {
	ID            string            `json:"id"`
	State         cluster.NodeState `json:"state"`
	Since         time.Time         `json:"since"`
	Alive         bool              `json:"alive"` // seen by this node's failure detector
	RaftAddr      string            `json:"raft_addr"`
	GossipAddr    string            `json:"gossip_addr"`
	ClientAddr    string            `json:"client_addr"`
	DataplaneAddr string            `json:"dataplane_addr"`
}

// GroupsSummary counts the Raft groups this node hosts.
type GroupsSummary struct {
	Total      int `json:"total"`       // groups hosted here (cluster group included)
	WithLeader int `json:"with_leader"` // of those, groups that know a leader
	Leading    int `json:"leading"`     // of those, groups this node leads
}

// GroupStatus is one Raft group as this node sees it.
type GroupStatus struct {
	ID         uint32 `json:"id"`
	State      string `json:"state"` // Leader, Follower, Candidate, Shutdown
	Leader     string `json:"leader"`
	LastIndex  uint64 `json:"last_index"`
	AppliedIdx uint64 `json:"applied_index"`
}

// TokenRequest is POST /v1/cluster-token.
type TokenRequest struct {
	NodeType string `json:"node_type"`
	TTL      string `json:"ttl,omitempty"` // Go duration, default 1h, at most 24h
}

// TokenResponse carries a join token: usable once, until Expires.
type TokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// JoinRequest is POST /v1/join.
type JoinRequest struct {
	Token         string `json:"token"`
	RaftAddr      string `json:"raft_addr"`
	GossipAddr    string `json:"gossip_addr"`
	ClientAddr    string `json:"client_addr"`
	DataplaneAddr string `json:"dataplane_addr"`
	Devices       int    `json:"devices"`
	// CSR is a PEM certificate request for the joiner's key; the node certificate
	// issued for it names the addresses above.
	CSR string `json:"csr"`
}

// JoinResponse tells a new node who it is and whom to meet.
type JoinResponse struct {
	NodeID      string   `json:"node_id"`
	ClusterName string   `json:"cluster_name"`
	Seeds       []string `json:"seeds"`   // gossip addresses of current members
	CACert      string   `json:"ca_cert"` // PEM: the cluster CA
	CAKey       string   `json:"ca_key"`  // PEM: its key (every node can admit joiners)
	Cert        string   `json:"cert"`    // PEM: the new node's certificate, for the CSR's key
}

// KVRequest is POST /v1/kv/GROUP: one operation on a replicated key-value group.
type KVRequest struct {
	Op    string `json:"op"` // put, get, delete, cas
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
	Old   string `json:"old,omitempty"` // cas: the value expected now ("" = absent)
}

// KVResponse answers a KVRequest.
type KVResponse struct {
	Value string `json:"value,omitempty"`
	Found bool   `json:"found"`
	OK    bool   `json:"ok"` // cas: swapped
	Node  string `json:"node"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"` // not_leader, no_leader, bad_request, token, unavailable, internal
	Node  string `json:"node"` // the node that answered
	Hint  string `json:"hint,omitempty"`
}
