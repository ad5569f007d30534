// Package netio is the dataplane's framed binary wire protocol and its
// client and server.
//
// # What it owns
//
//   - The frame: a fixed 28-byte little-endian header followed by an opaque
//     payload (layout in frame.go). netio defines the frame, not what the
//     operations mean: the dataplane registers its opcodes with the Server
//     and interprets payloads itself. netio knows nothing of files, inodes,
//     Raft or the chunk store.
//   - The few protocol-level operations: OpPing (answered by the server
//     itself, echoing the payload) and the error reply (a response frame
//     with FlagError whose payload is a u16 code and a UTF-8 message).
//   - Server: a gnet/v2 event-loop server that parses frames (partial frames
//     across reads, several pipelined frames in one read), hands each request
//     to a Handler, and writes replies without copying their payloads: a
//     reply made on any goroutine is queued (lock-free) to its connection's
//     event loop, which writes every reply ready with one writev — one
//     wakeup of the loop and one syscall per batch, not per reply.
//   - Client: a small connection pool per address, many calls in flight per
//     connection multiplexed by request id, per-call context deadlines, a
//     bound on calls in flight, bounded retries with backoff for idempotent
//     calls on connection errors and attempt timeouts, reconnection. Small
//     request frames queued by concurrent callers of one connection go out
//     together in one write.
//
// # Invariants
//
//   - Nothing a peer sends can make netio panic or allocate a size the peer
//     chose before it has been validated: magic, version, header CRC32C and
//     payload length (against the configured maximum, itself capped at
//     HardMaxPayload) are checked from the header alone, before any payload
//     byte is read or any payload buffer is allocated.
//   - A payload is handed up only after its CRC32C has been verified.
//   - Errors after which the byte stream cannot be trusted to be re-framed
//     (bad magic, unsupported version, bad header CRC, length over the
//     maximum) close the connection; errors confined to one frame whose
//     boundaries are known (bad payload CRC, unknown opcode, bad flags) get
//     an error reply and the connection goes on. Each kind is counted in
//     Counters with atomic increments.
//   - Request ids are chosen by the client and echoed unchanged in the
//     response; the server never reorders bytes within one frame but may
//     complete requests of one connection in any order.
//   - A reply payload passed to Request.Reply belongs to the caller again
//     only when the completion callback has run; netio never copies it.
//   - A Request (and its Payload) belongs to the handler from Serve until
//     the completion of its reply; after that netio reuses it.
//
// # Back-pressure
//
// The server stops dispatching frames from a connection while it has
// MaxInFlightPerConn requests outstanding, and resumes as replies complete.
// gnet v2.9.7 exposes no way to drop read interest on one connection, so
// the bytes of further frames are still read into gnet's buffer; they are
// bounded by MaxBufferedPerConn, beyond which the peer (which did not honour
// the window) is disconnected. The Client never has more than its
// MaxInFlightPerConn calls outstanding on a connection, so a Client whose
// window is not larger than the server's never trips that bound.
package netio

// # Known limits
//
//   - Waking an event loop for a batch of replies (gnet's Conn.Wake) costs
//     one small allocation, so a reply costs at most one and, under load,
//     far fewer (see BenchmarkEcho4KiB32InFlight); netio's own hot paths
//     allocate nothing on either side once pools are warm.
//   - A client write that blocks (the server stopped reading) is not cut
//     short by the call's context; only the wait for the response is.
//   - A reply made after Stop has begun closing connections completes with
//     an error; one that races with the engine's final shutdown may never
//     have its done callback called.
