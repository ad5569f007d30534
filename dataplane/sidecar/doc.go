// Package sidecar is the channel between a dataplane and its node's control
// process: a Unix socket on which the control process pushes configuration
// and placement epochs down and pulls health and per-core stats up. The
// dataplane serves it (Server, with a Handler the dataplane implements);
// the control process calls it with Client's typed methods.
//
// # Socket
//
// The socket (cfs dataplane --control-socket PATH) is created mode 0600,
// and a connecting peer must run as the dataplane's user or root
// (SO_PEERCRED), so only the node's own processes reach it. A dataplane
// owns PATH by holding an exclusive flock on PATH.lock for its lifetime:
// a second dataplane given the same PATH refuses to start, naming the
// owner's pid; a socket file left by a killed dataplane is stale (nobody
// holds the lock) and is replaced. On a clean exit the socket is removed;
// PATH.lock stays, empty of meaning until the next owner locks it.
//
// # Protocol (version 1)
//
// Each message, either way, is one frame: a 4-byte big-endian length n,
// 1 <= n <= MaxFrame, then n bytes holding one JSON object. The client
// sends a request and reads its response before sending the next (one
// request at a time per connection; open more connections for
// concurrency, at most ServerOptions.MaxConns).
//
// Request object (unknown fields are refused):
//
//	{"id": 7, "op": "config.get"}                          every key
//	{"id": 7, "op": "config.get", "key": "nvme.queue_depth"}
//	{"id": 8, "op": "config.set", "key": "nvme.queue_depth", "value": "64"}
//	{"id": 9, "op": "epoch.set", "epoch": 12}
//	{"id": 10, "op": "health"}
//	{"id": 11, "op": "stats"}
//
// Response object: the request's id, then either "ok": true and a
// "result" (ConfigValues, SetResult, EpochResult, Health or Stats in
// their JSON form) or "ok": false and an "error" {"code", "message"}:
//
//	{"id": 8, "ok": true, "result": {"key": "nvme.queue_depth", "value": "64", "applied": true, "restart_required": false}}
//	{"id": 9, "ok": false, "error": {"code": "stale_epoch", "message": "epoch 3 is older than ..."}}
//
// Error codes: bad_request (malformed frame or object, missing field),
// unknown_op, unknown_key, bad_value, stale_epoch, busy (too many
// connections or requests), timeout, unavailable (the store is closed),
// internal. Clients ignore response fields they do not know, so later
// versions may add fields; new operations get new names.
//
// Semantics: config.set of a live key applies it at once and answers
// applied: true; of a restart key it validates the value and answers
// applied: false, restart_required: true, changing nothing (the value
// takes effect only if the dataplane is restarted with it in its flags or
// file). epoch.set raises the placement epoch; an epoch older than the
// dataplane's is refused (stale_epoch), an equal one is accepted. Every
// operation is idempotent, so Client retries a call once when its
// connection fails.
//
// # Limits
//
// Nothing the peer sends is allocated before it is validated: a frame
// length over MaxFrame (or zero) is answered with bad_request and the
// connection closed, since the stream can no longer be framed; a
// malformed object in a well-framed message is answered with bad_request
// and the connection goes on. Each request has a deadline
// (ServerOptions.RequestTimeout) from its first byte to its response
// being written; an idle connection is closed after IdleTimeout.
package sidecar
