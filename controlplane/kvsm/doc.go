// Package kvsm holds the persistent state machines of a control process's
// Raft groups: a node-wide Pebble instance ("state", separate from the log
// store in raftlog) where every group's keys live under the group's prefix,
// a raft.FSM that applies committed commands into it, and KV, the
// replicated key-value state machine built on them.
//
// # Layers
//
//   - State: the node's state Pebble (OpenState), keys as below.
//   - FSM: a raft.BatchingFSM for one group. It hands each committed
//     command to an Applier together with a Writer scoped to the group,
//     then commits the Writer's batch with the applied index in it.
//   - Applier: what a state machine implements — Apply (deterministic
//     writes plus a result for the proposer) and Query (read-only answers
//     for remote linearizable reads). KV is one; the cluster group and the
//     metadata shards are others, on the same FSM.
//
// Keys in State:
//
//	0x10 | group u32 BE | user key  -> user value (the group's data)
//	0x11 | group u32 BE | 'a'       -> applied index, u64 BE
//	0x11 | group u32 BE | 'r'       -> present while a restore runs
//
// # Invariants
//
//  1. A command's effects and the applied index that covers it are written
//     in one Pebble batch: after any crash the stored applied index says
//     exactly which commands the stored data reflects. Entries at or below
//     it are skipped on replay, so replay is idempotent (this is why hosts
//     run raft with NoSnapshotRestoreOnStart).
//  2. State writes are not synced one by one: the Raft log is the durable
//     record and replays whatever a crash lost. Before a snapshot is handed
//     to raft (after which raft may compact its log) the state WAL is
//     synced, so the stored applied index is never behind the log's start.
//  3. Restore replaces the group's whole key range. A restore interrupted by
//     a crash leaves its marker; OpenFSM then clears the group and reports
//     applied index 0, and the host restores from its latest snapshot.
//  4. An Apply that fails for a reason that is not the command's fault (an
//     I/O error) poisons the FSM: nothing more is committed, every further
//     result is that error, and the applied index stays where it was. The
//     node restarts from its log. A Raft FSM cannot skip a command.
//  5. Applier code sees only its group's keys; keys given to Writer and
//     Reader are relative to the group.
package kvsm
