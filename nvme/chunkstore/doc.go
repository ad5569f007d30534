// Package chunkstore is the dataplane's log-structured chunk store: it keeps
// chunks (EC shards, up to MaxChunkSize bytes, named by a 128-bit ID and
// carrying a version) on one O_DIRECT device and acknowledges a write only
// once it is durable.
//
// Layout: a superblock, two checkpoint slots per partition, then fixed-size
// segments. Each partition (one per I/O core) owns every P-th segment and
// appends to its own open segment; format.go documents the bytes.
//
// Concurrency: a partition is one goroutine locked to an OS thread that owns
// its io_uring ring, its index and its segments; callers reach it through a
// bounded inbox and wait on a per-request channel. Nothing is shared between
// partitions but the device and a sequence counter, and no lock is taken on
// the I/O path.
//
// Write-combining: puts and deletes arriving together on a partition are
// gathered into one aligned append (bounded by Options.CombineBytes and
// Options.CombineDelay, and flushed at once when as many writers as last
// time are waiting), written with RWF_DSYNC, then all acknowledged. One
// append is in flight per partition, so random small durable writes become
// large sequential ones and only the newest append can be torn by a crash.
//
// Integrity: every 4 KiB block has a CRC32C, checked on every read; a
// mismatch is an error (IsCorrupt), never wrong bytes. Summaries and
// checkpoints carry checksums salted with the store's UUID.
//
// Admission and per-core figures (corestats.go): SetQueueLimit bounds the
// data requests a partition holds at once (more get ErrQueueFull at once);
// PartitionStats reports each partition's counters, current queue depth and
// latency histograms; Options.OnPartitionThread lets the caller pin or
// identify each partition's thread.
//
// Recovery (recovery.go) rebuilds the index from the newest valid checkpoint
// plus the batches after it. Cleaning (cleaner.go) moves live records out of
// mostly-dead segments; checkpoints (checkpoint.go) bound replay and let
// tombstones go.
package chunkstore
