// Package multiraft runs a node's Raft groups: a Host owns one raftmux
// transport, one raftlog store and one kvsm state store, and starts any
// number of groups (hashicorp/raft instances) on them, each driving a
// kvsm.Applier.
//
// # Driving it
//
//	h, err := multiraft.Open(multiraft.Config{NodeID: "n1", Dir: dir, RaftAddr: ":7100"})
//	g, err := h.StartGroup(17, kvsm.KV{}, []raft.Server{n1, n2, n3}) // bootstrap only if new
//	res, err := g.Apply(ctx, cmd)                  // leader only; else *NotLeaderError
//	err = g.Read(ctx, func(r kvsm.Reader) error {...}) // linearizable, leader only
//	res, err = h.Client().Apply(ctx, 17, cmd, addrs) // from any node, follows the leader
//	h.Close()
//
// # Remote operations
//
// Apply and Query reach a group's leader from any node (or from a process
// running no group, NewClient) over raftmux's call frames on the Raft
// connections, so there is no second listener. A node never forwards: it
// answers with the leader it knows and the client follows, within
// ClientConfig.MaxAttempts and the operation's deadline. Commands whose
// fate is unknown (leadership lost, connection lost after sending) are
// not retried; the error wraps ErrOutcomeUnknown.
//
// # Invariants
//
//  1. Every group runs with NoSnapshotRestoreOnStart unless its stored
//     state is behind its latest snapshot, so a restart replays only the
//     log after the state's applied index (kvsm invariant 1).
//  2. Read is linearizable (the argument is on (*Group).Read).
//  3. Close stops every group, then the transport, then both stores; no
//     goroutine of the host outlives it.
package multiraft
