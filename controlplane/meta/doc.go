// Package meta is the file-system metadata held by the metadata shards:
// the state machine (ShardSM) every shard's Raft group applies, its
// commands and queries, and the cross-shard transaction steps.
//
// # Model
//
// An inode (Inode) lives in one shard; its number carries that shard
// (Ino.Shard), so any client finds it without a lookup and shards allocate
// numbers alone. A directory's entries live with the directory's inode. A
// file is created in its parent directory's shard, so a create is one
// command on one shard; a new directory is placed on a shard picked from
// its parent and name (directories spread over the shards), so a mkdir is
// usually a two-shard transaction. Files keep their shard when renamed or
// linked elsewhere. Xattrs and stripe versions live with their inode.
// The root is the first inode of shard 1, written by its first command.
//
// # Commands
//
// A command (Command) is a list of parts (Part) applied in order, all or
// nothing, on one shard: a file-system operation is compiled by the
// client (client/metaclient) into parts grouped by shard. Parts check
// their preconditions and answer Linux's errno for a failed one. Every
// command carries its proposer's clock (Time), which the attributes it
// changes take, so replicas apply identically; nothing in Apply reads a
// clock, a map's order or anything but the state and the command.
//
// # Cross-shard transactions
//
// An operation whose parts land on several shards is a transaction with
// one coordinator shard (the one whose share decides the outcome, e.g. the
// target directory of a rename):
//
//  1. CmdPrepare on every other shard applies that share under locks: each
//     key it writes is written and locked by the transaction, its old value
//     kept in the shard's intent record. An operation meeting a locked key
//     answers StatusBusy (naming the transaction), and so does a read.
//  2. CmdCommit on the coordinator applies the coordinator's share and
//     records the decision in one command: this is the moment the
//     operation happens. A share that fails records "aborted" instead.
//  3. CmdFinish on every participant unlocks (keeping the effects, or
//     restoring the old values on abort), then CmdForget drops the
//     decision.
//
// A driver that dies leaves locks. Whoever meets a lock older than a
// second resolves it (Resolve): CmdDecide on the coordinator returns the
// decision, deciding "aborted" if there was none — after which a late
// CmdCommit fails — and CmdFinish ends the share. Each node also resolves
// old intents on the shards it leads, so no lock or half-made inode stays
// where no reader looks. Every step is idempotent (prepare and commit by
// transaction id, Exec by request id), so a client retries any step whose
// outcome it did not learn.
//
// # Keys
//
// keys.go lists the layout. All metadata keys start with 0xF0; the KV
// commands kvsm serves on the same shards may not use that prefix.
package meta
