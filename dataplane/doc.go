// Package dataplane is a ClaudeFS node's shard service: it serves the chunk
// store (nvme/chunkstore) over netio's framed protocol, and its Client calls
// it.
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
// # Placement-epoch fencing
//
// The server holds the current placement epoch (Server.Epoch, raised with
// Server.SetEpoch, which the control process's sidecar channel will call).
// A write or delete carrying an older epoch is refused with
// CodeStaleEpoch, naming both epochs; reads are not fenced. Once SetEpoch
// returns, no write admitted under an older epoch is still running.
//
// # Robustness
//
// Every request payload is length-checked before any field is read;
// a malformed one gets a CodeBadRequest reply and the connection goes on.
package dataplane
