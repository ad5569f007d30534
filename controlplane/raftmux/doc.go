// Package raftmux is the Raft transport of a control process: one TCP
// listener per node and a few connections per peer node carry the RPCs of
// every Raft group on the node, in a compact hand-written binary codec,
// with the heartbeats of all groups to the same peer coalesced.
//
// # Why
//
// hashicorp/raft's NetworkTransport gives every group its own listener and
// connection pool and sends every heartbeat as its own msgpack RPC. With
// 256 groups per node that is thousands of small RPCs a second at idle:
// measured, 37% of a core per node with the default timeouts. Here the
// groups share connections, and a heartbeat is ~20 bytes inside a frame
// that carries the heartbeats of every group that wanted to send one to
// that node within HeartbeatWindow; the answers come back as one frame.
//
// # Shape
//
//   - Mux (New): the listener, the peers, the groups. (*Mux).Group(id)
//     returns the group's *Transport, which implements raft.Transport,
//     raft.WithClose and raft.WithPreVote.
//   - Connections are per direction: this node dials each peer it sends
//     to, and answers on the connections peers dialled. Per peer there are
//     two lanes: control (heartbeats and entry-less appends, votes,
//     pre-votes, TimeoutNow) and data (appends with entries, forwarded
//     calls), so a large append never delays a heartbeat. An
//     InstallSnapshot opens a connection of its own, streams the snapshot
//     in chunks of SnapshotChunkBytes, and closes it.
//   - Forwarded calls: (*Mux).Call sends an opaque request for a group to
//     another node's CallHandler on the data lane; the multiraft layer uses
//     it to reach a group's leader through any node.
//
// # Wire format
//
//	frame     u32 BE length | kind | body        (length <= MaxFrameBytes)
//	hello     "CFSRMUX" | version 1 | lane | bytes id | bytes addr
//	requests  uvarint n | n × (uvarint req id | uvarint group | rpc type | bytes body)
//	responses uvarint n | n × (uvarint req id | status | bytes body-or-error)
//	snapchunk raw snapshot bytes; an empty chunk ends the stream
//
// Both ends send a hello first. An RPC header whose ServerID and address
// equal those the sender announced in its hello is one flag byte. Bodies
// are in codec.go.
//
// # Invariants
//
//  1. Nothing a peer sends can panic the process or make it allocate more
//     than MaxFrameBytes for a frame: every length is checked against what
//     is left of the frame and against its own limit before allocation.
//     A malformed frame closes its connection (the stream cannot be
//     trusted to be re-framed) and is counted in Stats.Malformed.
//  2. Every RPC has a deadline (ControlTimeout, AppendTimeout, the call's
//     context, SnapshotChunkTimeout per chunk). A dead or slow peer only
//     delays the RPCs addressed to it: each peer has its own connections,
//     queues and writer goroutines, and dials are bounded by DialTimeout
//     and backed off by DialBackoff.
//  3. Every queue is bounded: SendQueueFrames per connection, InboxDepth
//     per group (overflow is answered with an error, never blocks the
//     connection), MaxConcurrentCalls, MaxHeartbeatBatch per frame.
//  4. A pure heartbeat is answered from raft's heartbeat fast path on the
//     connection's reader, never behind the group's disk-bound RPCs; all
//     answers produced while reading one frame leave in one frame.
//  5. Frame buffers are never reused: decoded requests alias them, and
//     raft may keep log entries it received.
package raftmux
