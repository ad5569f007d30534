package node

import (
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/dataplane/sidecar"
)

// The admin API: JSON over the client API's listener, under /v1/admin/. Any node answers
// the cluster-wide routes: it reads its replica of the cluster group's state and asks
// every member for its own report (each at most AdminPeerTimeout), so one slow or stopped
// node costs that long and is named in the answer, never hangs it. Changes (config,
// maintenance windows) are forwarded to the cluster group's leader. Field names are
// stable: cfsctl's --json output is these types.
//
//	GET    /v1/admin/cluster            AdminCluster (?reports=0: without the members' reports)
//	GET    /v1/admin/local              NodeReport of the node asked (?peers=1: with RTTs to peers)
//	GET    /v1/admin/config[?key=K]     AdminConfig: the cluster's persisted keys, each dataplane's values
//	POST   /v1/admin/config             ConfigSetRequest → ConfigSetResponse (leader)
//	GET    /v1/admin/local/config       []sidecar.ConfigValue of this node's dataplane (?key=K)
//	POST   /v1/admin/local/config       ConfigSetRequest → NodeConfigResult (this node's dataplane)
//	POST   /v1/admin/log-level          LogLevelRequest → LogLevelResponse (every node, or .node)
//	POST   /v1/admin/local/log-level    LogLevelRequest → NodeLogLevel
//	PUT    /v1/admin/maintenance        WindowRequest → AdminWindow (leader)
//	DELETE /v1/admin/maintenance        → AdminWindow (leader)
//	POST   /v1/admin/node-stop          NodeStopRequest → NodeStopResponse (forwarded to that node)
//	GET    /v1/admin/alerts?since=24h   AlertsResponse: the rules' state and history on the node asked
//	GET    /v1/admin/metrics            MetricsResponse: the node's metrics as JSON
//	GET    /v1/admin/profile            ProfileResponse: a CPU profile (admin_profile.go)
//	GET    /v1/admin/processes          ProcessesResponse: processes and dataplane threads
//	GET    /metrics                     Prometheus text format

// AdminPeerTimeout bounds each member's report in a cluster-wide answer.
const AdminPeerTimeout = 2500 * time.Millisecond

// AdminCluster is GET /v1/admin/cluster.
type AdminCluster struct {
	ClusterName string              `json:"cluster_name"`
	AnsweredBy  string              `json:"answered_by"`
	Leader      string              `json:"cluster_leader"` // "" while the cluster group has none
	Epoch       uint64              `json:"epoch"`
	Shards      int                 `json:"shards"`   // metadata shards configured
	Replicas    int                 `json:"replicas"` // per shard
	ShardMap    map[uint32][]string `json:"shard_map"`
	Config      map[string]string   `json:"config"`
	Window      *AdminWindow        `json:"maintenance_window,omitempty"`
	Nodes       []AdminNode         `json:"nodes"`
	// Groups summarises every metadata shard over all reports: a shard is healthy when
	// a replica leads it and a majority of its replicas answered with it running.
	Groups ShardHealth `json:"groups"`
	// Inodes is the file system's inode use against its limit, summed over the shards
	// by the answering node (from its replicas, or the shards' leaders).
	Inodes *InodeFigures `json:"inodes,omitempty"`
}

// ShardHealth counts the metadata shards.
type ShardHealth struct {
	Total      int      `json:"total"`
	WithLeader int      `json:"with_leader"`
	Healthy    int      `json:"healthy"`
	Unhealthy  []uint32 `json:"unhealthy,omitempty"` // at most 64 listed
}

// AdminNode is one member: its record in the cluster group and its own report.
type AdminNode struct {
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	State         cluster.NodeState `json:"state"`
	Since         time.Time         `json:"since"`
	Alive         bool              `json:"alive"` // seen by the answering node's failure detector
	ClientAddr    string            `json:"client_addr"`
	DataplaneAddr string            `json:"dataplane_addr"`
	Shards        int               `json:"shards"` // metadata shard replicas placed on it
	Report        *NodeReport       `json:"report,omitempty"`
	Error         string            `json:"error,omitempty"` // why there is no report
}

// AdminWindow is a maintenance window.
type AdminWindow struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Active bool      `json:"active"` // now is inside it
}

// NodeReport is one node's own view of itself.
type NodeReport struct {
	NodeID    string            `json:"node_id"`
	Uptime    float64           `json:"uptime_s"`
	Groups    []GroupReport     `json:"groups"`
	Dataplane *DataplaneReport  `json:"dataplane,omitempty"`
	DPError   string            `json:"dataplane_error,omitempty"`
	Host      HostReport        `json:"host"`
	Peers     []PeerReport      `json:"peers,omitempty"`
	LogLevels map[string]string `json:"log_levels"`
	// ReplicateP99 is the p99 of metadata_replicate_latency here, seconds (0: no applies yet).
	ReplicateP99 float64 `json:"replicate_latency_p99_s"`
	ReplicateN   uint64  `json:"replicate_count"`
}

// GroupReport is one Raft group hosted by the node.
type GroupReport struct {
	ID          uint32 `json:"id"`
	State       string `json:"state"` // Leader, Follower, Candidate, Shutdown
	Leader      string `json:"leader"`
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"last_index"`
	CommitIndex uint64 `json:"commit_index"`
	AppliedIdx  uint64 `json:"applied_index"`
}

// DataplaneReport is the node's dataplane as its sidecar channel reports it.
type DataplaneReport struct {
	Health sidecar.Health `json:"health"`
	Stats  sidecar.Stats  `json:"stats"`
	// MetricsURL is the dataplane's own Prometheus /metrics (node.json's
	// dataplane_metrics_addr), "" when it serves none.
	MetricsURL string `json:"metrics_url,omitempty"`
}

// HostReport is the machine the node runs on.
type HostReport struct {
	CPUs        int       `json:"cpus"`
	CPUUsage    []float64 `json:"cpu_usage"` // by CPU number, 0..1, over the last 5 s (empty until sampled)
	Load1       float64   `json:"load1"`
	MemTotal    uint64    `json:"mem_total_bytes"`
	MemAvail    uint64    `json:"mem_available_bytes"`
	Kernel      string    `json:"kernel_version"`
	ProcessRSS  uint64    `json:"control_rss_bytes"`
	Goroutines  int       `json:"control_goroutines"`
	SampleError string    `json:"sample_error,omitempty"`
}

// PeerReport is the round trip from the node to a peer's client API (a TCP connect).
type PeerReport struct {
	ID    string  `json:"id"`
	Addr  string  `json:"addr"`
	RTTms float64 `json:"rtt_ms"`
	Error string  `json:"error,omitempty"`
}

// AdminConfig is GET /v1/admin/config.
type AdminConfig struct {
	Cluster map[string]string `json:"cluster"` // persisted in the cluster group
	Nodes   []NodeConfig      `json:"nodes"`
}

// NodeConfig is one dataplane's keys.
type NodeConfig struct {
	Node   string                `json:"node"`
	Values []sidecar.ConfigValue `json:"values,omitempty"`
	Error  string                `json:"error,omitempty"`
}

// ConfigSetRequest is POST /v1/admin/config and /v1/admin/local/config.
type ConfigSetRequest struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ConfigSetResponse says where a setting stands.
type ConfigSetResponse struct {
	Key       string             `json:"key"`
	Value     string             `json:"value"` // canonical
	Persisted bool               `json:"persisted"`
	Scope     string             `json:"scope"` // dataplane, control
	Nodes     []NodeConfigResult `json:"nodes"`
}

// NodeConfigResult is the setting on one node.
type NodeConfigResult struct {
	Node            string `json:"node"`
	Applied         bool   `json:"applied"`
	RestartRequired bool   `json:"restart_required"`
	InForce         string `json:"in_force"`
	Error           string `json:"error,omitempty"`
}

// LogLevelRequest is POST /v1/admin/log-level.
type LogLevelRequest struct {
	Module string `json:"module"`
	Level  string `json:"level"`
	Node   string `json:"node,omitempty"` // "" for every node
}

// NodeLogLevel is one node's answer.
type NodeLogLevel struct {
	Node   string `json:"node"`
	Module string `json:"module"`
	Level  string `json:"level"`
	Error  string `json:"error,omitempty"`
}

// LogLevelResponse is POST /v1/admin/log-level's answer.
type LogLevelResponse struct {
	Nodes []NodeLogLevel `json:"nodes"`
}

// WindowRequest is PUT /v1/admin/maintenance.
type WindowRequest struct {
	Start    time.Time `json:"start"`
	Duration string    `json:"duration"` // Go duration
}

// NodeStopRequest is POST /v1/admin/node-stop.
type NodeStopRequest struct {
	Node string `json:"node"`
}

// NodeStopResponse says what was stopped.
type NodeStopResponse struct {
	Node    string `json:"node"`
	Stopped string `json:"stopped"` // "supervisor" (the node's processes) or "control"
	Pid     int    `json:"pid"`
}

// MetricsResponse is GET /v1/admin/metrics.
type MetricsResponse struct {
	Node    string         `json:"node"`
	Metrics []MetricFamily `json:"metrics"`
}

// MetricFamily is one metric with its samples.
type MetricFamily struct {
	Name    string         `json:"name"`
	Help    string         `json:"help"`
	Type    string         `json:"type"` // counter, gauge, histogram, summary, untyped
	Samples []MetricSample `json:"samples"`
}

// MetricSample is one series. Histograms give count, sum and estimated quantiles.
type MetricSample struct {
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"` // counter, gauge; histogram: the count
	Sum    float64           `json:"sum,omitempty"`
	P50    float64           `json:"p50,omitempty"`
	P99    float64           `json:"p99,omitempty"`
}

// AlertsResponse is GET /v1/admin/alerts.
type AlertsResponse struct {
	Node    string         `json:"node"` // the node whose evaluation this is
	Since   time.Time      `json:"since"`
	Rules   []AlertRule    `json:"rules"`
	Active  []AlertEvent   `json:"active"`  // pending or firing now
	History []AlertEvent   `json:"history"` // transitions since Since, oldest first
	Window  *AdminWindow   `json:"maintenance_window,omitempty"`
	Skipped []SkippedAlert `json:"not_evaluated,omitempty"`
}

// AlertRule is one rule as tools/prometheus/alerts.yml states it.
type AlertRule struct {
	Name     string `json:"name"`
	Expr     string `json:"expr"`
	For      string `json:"for"`
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
}

// AlertEvent is an alert's state for one subject (a node, a group) at a time.
type AlertEvent struct {
	Alert   string    `json:"alert"`
	Subject string    `json:"subject"` // node-3, shard 17, …
	State   string    `json:"state"`   // pending, firing, resolved
	Since   time.Time `json:"since"`   // the condition became true
	At      time.Time `json:"at"`      // this state was entered
	Value   string    `json:"value"`
	Held    bool      `json:"held,omitempty"` // firing inside a maintenance window: does not page
}

// SkippedAlert is a rule nothing can back yet.
type SkippedAlert struct {
	Alert  string `json:"alert"`
	Reason string `json:"reason"`
}
