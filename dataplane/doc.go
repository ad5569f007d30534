// Package dataplane is a ClaudeFS node's shard service: it serves the chunk
// store (nvme/chunkstore) over netio's framed protocol, and its Client calls
// it. Node is the whole dataplane process in one value: store, Server,
// pinned threads and the sidecar channel (package sidecar) to the node's
// control process, built from a dpconfig.Config.
//
// # Operations
//
// WriteShard, ReadShard, DeleteShard, StatShard, ListShards and Stats; the
// payloads are specified byte by byte in protocol.go. Failures are error
// replies with the codes listed there (not found, stale version, stale
// epoch, no space, corrupt, closed, bad request, busy, other store error).
//
// # Threading
//
// netio's event loops must never block. Reads and writes go from the event
// loop straight to the store partition that owns the shard
// (chunkstore.GetRefAsync, PutAsync) and are answered from the partition's
// callback. Everything else, and any read or write a full partition inbox
// refuses, goes on a bounded queue (full: CodeBusy) to a fixed pool of
// workers that call the store synchronously and reply from the worker
// goroutine. (A write's epoch check takes the fence's read lock on the
// event loop; it waits only while SetEpoch is draining admitted writes.) Reply buffers come from sync.Pools
// (size classes up to chunkstore.MaxChunkSize) and go back in the reply's
// completion callback, once netio has written them.
//
// # Admission
//
// Each store partition (I/O core) admits at most nvme.queue_depth data
// requests at once (chunkstore.SetQueueLimit, changed live over the
// sidecar channel); one more is answered CodeBusy at once, from the event
// loop, without queueing.
//
// # Pinning
//
// With cpu.affinity set, partition i's goroutine and event loop i's are
// each locked to their own OS thread and pinned (sched_setaffinity) to the
// i-th CPU of the list, round robin: partitions through
// chunkstore.Options.OnPartitionThread as the store opens, event loops when
// they first serve a connection (Config.OnConnThread; netio has no
// loop-start hook). Node.Threads and the sidecar's stats report where each
// runs. Without cpu.affinity nothing is pinned.
//
// # Placement-epoch fencing
//
// The server holds the current placement epoch (Server.Epoch, raised with
// Server.SetEpoch, which the sidecar channel's epoch.set calls).
// A write or delete carrying an older epoch is refused with
// CodeStaleEpoch, naming both epochs; reads are not fenced. Once SetEpoch
// returns, no write admitted under an older epoch is still running.
//
// # Robustness
//
// Every request payload is length-checked before any field is read;
// a malformed one gets a CodeBadRequest reply and the connection goes on.
package dataplane
