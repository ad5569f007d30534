// Package raftlog is the Raft log store of a control process: one Pebble
// instance per node holds the logs and the stable state (term, vote) of
// every Raft group on the node, each group's keys under its own prefix.
//
// # What it owns
//
//   - Store: the node's Pebble instance for Raft logs, opened by Open. It is
//     a separate instance from the state machines' Pebble (kvsm), so log
//     appends (synced) never queue behind state writes (unsynced) in one WAL,
//     and each can be tuned on its own.
//   - Group: the view of one group, from (*Store).Group. It implements
//     raft.LogStore and raft.StableStore and is what hashicorp/raft is given.
//   - Write combining (Options.WriteCombining, config key
//     raft.write_combining): StoreLogs calls of all groups arriving together
//     are combined by one committer goroutine into one synced Pebble batch
//     (group commit across groups). Without it every call commits its own
//     synced batch.
//
// # Key layout
//
//	0x01 | group u32 BE | index u64 BE  -> log entry (entry.go)
//	0x02 | group u32 BE | key bytes     -> stable value
//
// Big-endian group and index make one group's entries contiguous and in
// index order, so FirstIndex and LastIndex are one seek each and
// DeleteRange(min, max) is one Pebble range delete.
//
// # Invariants
//
//  1. StoreLogs, Set and SetUint64 return only after their writes are
//     durable (Pebble WAL fsync): an acknowledged append survives kill -9
//     and power loss. Combined or not, a call's entries land atomically: all
//     of them or none.
//  2. Every entry value carries its index and a CRC32C; GetLog checks both
//     and returns a corruption error rather than a wrong entry.
//  3. A group's cached FirstIndex/LastIndex always equal what a fresh seek
//     would return once the write that changed them has returned.
//  4. Everything is bounded: entry size (Options.MaxEntryBytes), entries per
//     call (Options.MaxEntriesPerCall), the committer's queue
//     (Options.QueueDepth) and batch (Options.MaxBatchBytes,
//     Options.MaxBatchCalls; one call larger than the byte bound is committed
//     on its own, never split).
//  5. After Close returns no goroutine of the Store runs and every call
//     returns ErrClosed; calls in flight when Close began finish first.
//
// # Driving it
//
//	s, err := raftlog.Open(dir, raftlog.Options{WriteCombining: true})
//	g := s.Group(17)
//	r, err := raft.NewRaft(conf, fsm, g, g, snaps, trans)
//	...
//	s.Close() // after every raft using it has shut down
package raftlog
