package multiraft

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config configures a Host. Zero fields take the defaults named.
//
// The timeout defaults are chosen for a node running 257 groups (256
// metadata shards and the cluster group) on a small machine: idle cost
// under 10% of one core per node, and a dead leader replaced within about
// 3 s. The arithmetic: raft heartbeats every HeartbeatTimeout/10
// (randomized up to twice that) per follower, so a node leading 86 groups
// sends ~1150 heartbeats a second; it sends a commit-index update every
// CommitTimeout per follower (~115/s at 2 s), and checks each lease every
// LeaderLeaseTimeout. raftmux holds heartbeats up to HeartbeatWindow so
// that those bound for one node leave in one frame (~20 per frame at
// 50 ms): the cost left is mostly the Go runtime waking raft's goroutines.
// A follower notices a dead leader after 1-3 heartbeat timeouts, and the
// two survivors of a group refuse each other's (pre-)votes until both
// have noticed, so failover takes up to ~3 × HeartbeatTimeout.
// docs/benchmarks.md has the measurements.
type Config struct {
	// NodeID is this node's raft ServerID in every group. Required.
	NodeID string
	// Dir holds the node's Raft state: raftlog/ (the log store), state/
	// (the state machines' Pebble) and snapshots/<group>/. Required.
	Dir string
	// RaftAddr is the address the node's one Raft listener binds. Required.
	RaftAddr string
	// Advertise is the address peers reach RaftAddr at. Default: the bound
	// listener address.
	Advertise string
	// WriteCombining (raft.write_combining): combine the log appends of all
	// groups arriving together into one synced write.
	WriteCombining bool

	// HeartbeatTimeout: a follower that hears nothing from its leader for
	// this long starts an election. Default 1 s.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that has not won in this long starts
	// over. Default 1 s (at least HeartbeatTimeout).
	ElectionTimeout time.Duration
	// CommitTimeout: how often an idle leader tells followers its commit
	// index (followers only need it to apply; a client's commit does not
	// wait for it). Default 2 s.
	CommitTimeout time.Duration
	// LeaderLeaseTimeout: a leader that has not heard from a quorum for
	// this long steps down; raft checks it that often per group. Default
	// 1 s (at most HeartbeatTimeout).
	LeaderLeaseTimeout time.Duration
	// HeartbeatWindow: how long a heartbeat waits for others to the same
	// node to share its frame (raftmux). Reads do not wait for it (they
	// expedite their heartbeat round). Default 50 ms, at most
	// HeartbeatTimeout/10.
	HeartbeatWindow time.Duration

	// SnapshotThreshold: log entries since the last snapshot that trigger
	// a new one. Default 8192.
	SnapshotThreshold uint64
	// SnapshotInterval: how often each group checks the threshold.
	// Default 2 min.
	SnapshotInterval time.Duration
	// TrailingLogs: entries kept after a snapshot for slow followers.
	// Default 10240.
	TrailingLogs uint64
	// SnapshotsRetained per group. Default 2.
	SnapshotsRetained int
	// MaxAppendEntries bounds the entries of one AppendEntries. Default 64.
	MaxAppendEntries int
	// LogCacheEntries: recent log entries each group keeps in memory, so
	// replication reads them without Pebble. Default 64.
	LogCacheEntries int

	// MaxCommandBytes bounds one command. Default 4 MiB.
	MaxCommandBytes int
	// OpTimeout bounds Apply, Read and configuration changes whose context
	// has no deadline. Default 10 s.
	OpTimeout time.Duration

	// Logf receives the host's messages and raft's at RaftLogLevel and
	// above. Nil: dropped.
	Logf func(format string, args ...any)
	// OnApply, if set, is told of every command this node proposed as
	// leader (Group.Apply, local or forwarded) once it is applied or has
	// failed, with how long that took: for metrics. It must be quick.
	OnApply func(group uint32, cmd []byte, took time.Duration, err error)
	// RaftLogLevel is raft's log level (hclog: TRACE, DEBUG, INFO, WARN,
	// ERROR). Default WARN.
	RaftLogLevel string
}

func (c *Config) setDefaults() error {
	if c.NodeID == "" || c.Dir == "" || c.RaftAddr == "" {
		return errors.New("multiraft: Config.NodeID, Dir and RaftAddr are required")
	}
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
	dur(&c.HeartbeatTimeout, time.Second)
	dur(&c.ElectionTimeout, time.Second)
	dur(&c.CommitTimeout, 2*time.Second)
	dur(&c.LeaderLeaseTimeout, time.Second)
	dur(&c.HeartbeatWindow, 50*time.Millisecond)
	dur(&c.SnapshotInterval, 2*time.Minute)
	dur(&c.OpTimeout, 10*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	num(&c.SnapshotsRetained, 2)
	num(&c.MaxAppendEntries, 64)
	num(&c.LogCacheEntries, 64)
	num(&c.MaxCommandBytes, 4<<20)
	if c.RaftLogLevel == "" {
		c.RaftLogLevel = "WARN"
	}
	c.RaftLogLevel = strings.ToUpper(c.RaftLogLevel)
	switch {
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("multiraft: ElectionTimeout %v is shorter than HeartbeatTimeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("multiraft: LeaderLeaseTimeout %v is longer than HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.HeartbeatWindow < 0 || c.HeartbeatWindow > c.HeartbeatTimeout/10:
		return fmt.Errorf("multiraft: HeartbeatWindow %v must be in [0, HeartbeatTimeout/10 = %v]", c.HeartbeatWindow, c.HeartbeatTimeout/10)
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024:
		return fmt.Errorf("multiraft: MaxAppendEntries %d must be in [1, 1024]", c.MaxAppendEntries)
	case c.MaxCommandBytes < 1 || c.MaxCommandBytes > 64<<20:
		return fmt.Errorf("multiraft: MaxCommandBytes %d must be in [1, 64 MiB]", c.MaxCommandBytes)
	case c.SnapshotsRetained < 1 || c.LogCacheEntries < 0:
		return fmt.Errorf("multiraft: SnapshotsRetained %d must be positive and LogCacheEntries %d not negative", c.SnapshotsRetained, c.LogCacheEntries)
	case c.OpTimeout < 0:
		return fmt.Errorf("multiraft: OpTimeout %v must be positive", c.OpTimeout)
	}
	switch c.RaftLogLevel {
	case "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF":
	default:
		return fmt.Errorf("multiraft: RaftLogLevel %q: want TRACE, DEBUG, INFO, WARN, ERROR or OFF", c.RaftLogLevel)
	}
	return nil
}
