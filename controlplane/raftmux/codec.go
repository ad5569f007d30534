package raftmux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// The codec is written by hand rather than with hashicorp's msgpack (what
// NetworkTransport uses): msgpack encodes through reflection, field names
// included, and at 256 groups × 2 followers a node sends and answers
// thousands of heartbeats a second, each of which would pay a reflective
// walk and a dozen small allocations on both sides. Here a heartbeat item
// is about 20 bytes, encoded by appending to one buffer, and decoded with
// one allocation for the request struct. Every decoder checks each length
// against what is left of the frame and its own limit before allocating.

// Frame kinds.
const (
	kindHello     byte = 1
	kindRequests  byte = 2
	kindResponses byte = 3
	kindSnapChunk byte = 4
)

// RPC types carried in request items.
const (
	rpcAppendEntries   byte = 1
	rpcRequestVote     byte = 2
	rpcRequestPreVote  byte = 3
	rpcTimeoutNow      byte = 4
	rpcInstallSnapshot byte = 5
	rpcCall            byte = 6
)

// Response statuses.
const (
	statusOK    byte = 0
	statusError byte = 1
)

// Lanes: which traffic a connection carries.
const (
	laneControl  byte = 0 // heartbeats and other entry-less appends, votes, TimeoutNow
	laneData     byte = 1 // appends with entries, forwarded calls
	laneSnapshot byte = 2 // one InstallSnapshot, then closed
	numLanes          = 2 // lanes kept open per peer (snapshot lanes are not kept)
)

// Codec limits.
const (
	helloMagic         = "CFSRMUX"
	protocolVersion    = 1
	frameHeaderLen     = 4
	maxNameBytes       = 256     // server IDs and addresses
	maxErrorBytes      = 1024    // error messages in responses
	maxBlobBytes       = 8 << 20 // InstallSnapshot Peers/Configuration, RequestVote Peers
	maxEntriesPerFrame = 1 << 16
	// HardMaxFrameBytes caps Config.MaxFrameBytes.
	HardMaxFrameBytes = 256 << 20
	// minEntryBytes is the smallest encoding of one log entry; it bounds
	// the entry count a frame of a given size can claim.
	minEntryBytes = 6
	// minItemBytes is the smallest encoding of one request or response item.
	minItemBytes = 4
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("raftmux: malformed frame")

// hello opens every connection, in both directions.
type hello struct {
	lane byte
	id   []byte // the sender's raft ServerID
	addr []byte // the sender's advertised address
}

func appendHello(dst []byte, h *hello) []byte {
	dst = append(dst, helloMagic...)
	dst = append(dst, protocolVersion, h.lane)
	dst = appendBytes(dst, h.id)
	return appendBytes(dst, h.addr)
}

func decodeHello(b []byte) (*hello, error) {
	d := dec{b: b}
	magic := d.raw(len(helloMagic))
	if d.err == nil && string(magic) != helloMagic {
		return nil, fmt.Errorf("%w: hello magic %q, want %q (not a raftmux peer?)", ErrMalformed, magic, helloMagic)
	}
	if v := d.byte(); d.err == nil && v != protocolVersion {
		return nil, fmt.Errorf("%w: protocol version %d, this node speaks %d", ErrMalformed, v, protocolVersion)
	}
	h := &hello{lane: d.byte()}
	if d.err == nil && h.lane > laneSnapshot {
		d.fail("lane %d", h.lane)
	}
	h.id = d.bytes(maxNameBytes)
	h.addr = d.bytes(maxNameBytes)
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return h, nil
}

// reqItem is one request inside a requests frame.
type reqItem struct {
	id    uint64
	group uint32
	rpc   byte
	body  []byte
}

// respItem is one response inside a responses frame.
type respItem struct {
	id     uint64
	status byte
	body   []byte // encoded response, or the error message
}

// Requests frame body: uvarint n | n × (uvarint id | uvarint group | rpc | bytes body).
func appendRequests(dst []byte, items []reqItem) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(items)))
	for i := range items {
		it := &items[i]
		dst = binary.AppendUvarint(dst, it.id)
		dst = binary.AppendUvarint(dst, uint64(it.group))
		dst = append(dst, it.rpc)
		dst = appendBytes(dst, it.body)
	}
	return dst
}

func decodeRequests(b []byte, maxItems int) ([]reqItem, error) {
	d := dec{b: b}
	n := d.count(minItemBytes, maxItems)
	var items []reqItem
	if d.err == nil {
		items = make([]reqItem, 0, n)
	}
	for i := 0; d.err == nil && i < n; i++ {
		var it reqItem
		it.id = d.uvarint()
		g := d.uvarint()
		if d.err == nil && g > uint64(^uint32(0)) {
			d.fail("group %d", g)
		}
		it.group = uint32(g)
		it.rpc = d.byte()
		if d.err == nil && (it.rpc < rpcAppendEntries || it.rpc > rpcCall) {
			d.fail("rpc type %d", it.rpc)
		}
		it.body = d.bytes(len(b))
		items = append(items, it)
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return items, nil
}

// Responses frame body: uvarint n | n × (uvarint id | status | bytes body).
func appendResponses(dst []byte, items []respItem) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(items)))
	for i := range items {
		it := &items[i]
		dst = binary.AppendUvarint(dst, it.id)
		dst = append(dst, it.status)
		dst = appendBytes(dst, it.body)
	}
	return dst
}

func decodeResponses(b []byte, maxItems int) ([]respItem, error) {
	d := dec{b: b}
	n := d.count(minItemBytes, maxItems)
	var items []respItem
	if d.err == nil {
		items = make([]respItem, 0, n)
	}
	for i := 0; d.err == nil && i < n; i++ {
		var it respItem
		it.id = d.uvarint()
		it.status = d.byte()
		if d.err == nil && it.status > statusError {
			d.fail("status %d", it.status)
		}
		it.body = d.bytes(len(b))
		if d.err == nil && it.status == statusError && len(it.body) > maxErrorBytes {
			d.fail("error message of %d bytes", len(it.body))
		}
		items = append(items, it)
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return items, nil
}

// peerNames are the ServerID and address a connection's far end announced
// in its hello. RPC headers equal to them are sent as one flag byte.
type peerNames struct {
	id   []byte
	addr []byte
}

const hdrFlagDefault = 1 // ID and Addr equal the connection's announced names

// RPC header: flags | uvarint protocol version | [bytes ID | bytes Addr].
func appendHeader(dst []byte, h *raft.RPCHeader, def *peerNames) []byte {
	if string(h.ID) == string(def.id) && string(h.Addr) == string(def.addr) {
		dst = append(dst, hdrFlagDefault)
		return binary.AppendUvarint(dst, uint64(h.ProtocolVersion))
	}
	dst = append(dst, 0)
	dst = binary.AppendUvarint(dst, uint64(h.ProtocolVersion))
	dst = appendBytes(dst, h.ID)
	return appendBytes(dst, h.Addr)
}

func (d *dec) header(h *raft.RPCHeader, def *peerNames) {
	flags := d.byte()
	pv := d.uvarint()
	if d.err == nil && pv > raft.ProtocolVersionMax {
		d.fail("raft protocol version %d", pv)
	}
	h.ProtocolVersion = raft.ProtocolVersion(pv)
	switch {
	case d.err != nil:
	case flags == hdrFlagDefault:
		h.ID, h.Addr = def.id, def.addr
	case flags == 0:
		h.ID = d.bytes(maxNameBytes)
		h.Addr = d.bytes(maxNameBytes)
	default:
		d.fail("header flags %#x", flags)
	}
}

// A "name" field (Leader, Candidate) equal to the header's Addr is sent as
// one byte: 1 = same as Addr, 0 = bytes follow.
func appendName(dst, name, addr []byte) []byte {
	if len(name) > 0 && string(name) == string(addr) {
		return append(dst, 1)
	}
	return appendBytes(append(dst, 0), name)
}

func (d *dec) name(addr []byte) []byte {
	switch f := d.byte(); {
	case d.err != nil:
		return nil
	case f == 1:
		return addr
	case f == 0:
		return d.bytes(maxNameBytes)
	default:
		d.fail("name flag %#x", f)
		return nil
	}
}

// isHeartbeat says whether an AppendEntries request is a pure heartbeat,
// the kind raft answers on its fast path without touching its log.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	//lint:ignore SA1019 raft v1.7.2 still sends it and reads it when Addr is empty; one byte on the wire when it equals Addr
	return a.Term != 0 && (len(a.Addr) > 0 || len(a.Leader) > 0) &&
		a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

func appendAppendEntriesRequest(dst []byte, a *raft.AppendEntriesRequest, def *peerNames) []byte {
	dst = appendHeader(dst, &a.RPCHeader, def)
	dst = binary.AppendUvarint(dst, a.Term)
	//lint:ignore SA1019 raft v1.7.2 still sends it and reads it when Addr is empty; one byte on the wire when it equals Addr
	dst = appendName(dst, a.Leader, a.Addr)
	dst = binary.AppendUvarint(dst, a.PrevLogEntry)
	dst = binary.AppendUvarint(dst, a.PrevLogTerm)
	dst = binary.AppendUvarint(dst, a.LeaderCommitIndex)
	dst = binary.AppendUvarint(dst, uint64(len(a.Entries)))
	for _, l := range a.Entries {
		dst = binary.AppendUvarint(dst, l.Index)
		dst = binary.AppendUvarint(dst, l.Term)
		dst = append(dst, byte(l.Type))
		dst = appendBytes(dst, l.Data)
		dst = appendBytes(dst, l.Extensions)
		var nanos int64
		if !l.AppendedAt.IsZero() {
			nanos = l.AppendedAt.UnixNano()
		}
		dst = binary.AppendVarint(dst, nanos)
	}
	return dst
}

func decodeAppendEntriesRequest(b []byte, def *peerNames) (*raft.AppendEntriesRequest, error) {
	d := dec{b: b}
	a := &raft.AppendEntriesRequest{}
	d.header(&a.RPCHeader, def)
	a.Term = d.uvarint()
	//lint:ignore SA1019 raft v1.7.2 still sends it and reads it when Addr is empty; one byte on the wire when it equals Addr
	a.Leader = d.name(a.Addr)
	a.PrevLogEntry = d.uvarint()
	a.PrevLogTerm = d.uvarint()
	a.LeaderCommitIndex = d.uvarint()
	n := d.count(minEntryBytes, maxEntriesPerFrame)
	if d.err == nil && n > 0 {
		logs := make([]raft.Log, n)
		a.Entries = make([]*raft.Log, n)
		for i := 0; d.err == nil && i < n; i++ {
			l := &logs[i]
			l.Index = d.uvarint()
			l.Term = d.uvarint()
			l.Type = raft.LogType(d.byte())
			l.Data = d.bytesOrNil(len(b))
			l.Extensions = d.bytesOrNil(len(b))
			if nanos := d.varint(); nanos != 0 {
				l.AppendedAt = time.Unix(0, nanos)
			}
			a.Entries[i] = l
		}
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return a, nil
}

func appendAppendEntriesResponse(dst []byte, r *raft.AppendEntriesResponse, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	dst = binary.AppendUvarint(dst, r.LastLog)
	return append(dst, boolBits(r.Success, r.NoRetryBackoff))
}

func decodeAppendEntriesResponse(b []byte, def *peerNames, r *raft.AppendEntriesResponse) error {
	d := dec{b: b}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	r.LastLog = d.uvarint()
	r.Success, r.NoRetryBackoff = d.bits2()
	d.end()
	return d.err
}

func appendRequestVoteRequest(dst []byte, r *raft.RequestVoteRequest, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	//lint:ignore SA1019 raft v1.7.2 still sends it and reads it when Addr is empty; one byte on the wire when it equals Addr
	dst = appendName(dst, r.Candidate, r.Addr)
	dst = binary.AppendUvarint(dst, r.LastLogIndex)
	dst = binary.AppendUvarint(dst, r.LastLogTerm)
	return append(dst, boolBits(r.LeadershipTransfer, false))
}

func decodeRequestVoteRequest(b []byte, def *peerNames) (*raft.RequestVoteRequest, error) {
	d := dec{b: b}
	r := &raft.RequestVoteRequest{}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	//lint:ignore SA1019 raft v1.7.2 still sends it and reads it when Addr is empty; one byte on the wire when it equals Addr
	r.Candidate = d.name(r.Addr)
	r.LastLogIndex = d.uvarint()
	r.LastLogTerm = d.uvarint()
	r.LeadershipTransfer = d.bits1()
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func appendRequestVoteResponse(dst []byte, r *raft.RequestVoteResponse, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	dst = appendBytes(dst, r.Peers)
	return append(dst, boolBits(r.Granted, false))
}

func decodeRequestVoteResponse(b []byte, def *peerNames, r *raft.RequestVoteResponse) error {
	d := dec{b: b}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	r.Peers = d.bytesOrNil(maxBlobBytes)
	r.Granted = d.bits1()
	d.end()
	return d.err
}

func appendPreVoteRequest(dst []byte, r *raft.RequestPreVoteRequest, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	dst = binary.AppendUvarint(dst, r.LastLogIndex)
	return binary.AppendUvarint(dst, r.LastLogTerm)
}

func decodePreVoteRequest(b []byte, def *peerNames) (*raft.RequestPreVoteRequest, error) {
	d := dec{b: b}
	r := &raft.RequestPreVoteRequest{}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	r.LastLogIndex = d.uvarint()
	r.LastLogTerm = d.uvarint()
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func appendPreVoteResponse(dst []byte, r *raft.RequestPreVoteResponse, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	return append(dst, boolBits(r.Granted, false))
}

func decodePreVoteResponse(b []byte, def *peerNames, r *raft.RequestPreVoteResponse) error {
	d := dec{b: b}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	r.Granted = d.bits1()
	d.end()
	return d.err
}

func appendTimeoutNowRequest(dst []byte, r *raft.TimeoutNowRequest, def *peerNames) []byte {
	return appendHeader(dst, &r.RPCHeader, def)
}

func decodeTimeoutNowRequest(b []byte, def *peerNames) (*raft.TimeoutNowRequest, error) {
	d := dec{b: b}
	r := &raft.TimeoutNowRequest{}
	d.header(&r.RPCHeader, def)
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func appendTimeoutNowResponse(dst []byte, r *raft.TimeoutNowResponse, def *peerNames) []byte {
	return appendHeader(dst, &r.RPCHeader, def)
}

func decodeTimeoutNowResponse(b []byte, def *peerNames, r *raft.TimeoutNowResponse) error {
	d := dec{b: b}
	d.header(&r.RPCHeader, def)
	d.end()
	return d.err
}

func appendInstallSnapshotRequest(dst []byte, r *raft.InstallSnapshotRequest, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, uint64(r.SnapshotVersion))
	dst = binary.AppendUvarint(dst, r.Term)
	dst = appendName(dst, r.Leader, r.Addr)
	dst = binary.AppendUvarint(dst, r.LastLogIndex)
	dst = binary.AppendUvarint(dst, r.LastLogTerm)
	dst = appendBytes(dst, r.Peers)
	dst = appendBytes(dst, r.Configuration)
	dst = binary.AppendUvarint(dst, r.ConfigurationIndex)
	return binary.AppendVarint(dst, r.Size)
}

func decodeInstallSnapshotRequest(b []byte, def *peerNames) (*raft.InstallSnapshotRequest, error) {
	d := dec{b: b}
	r := &raft.InstallSnapshotRequest{}
	d.header(&r.RPCHeader, def)
	sv := d.uvarint()
	if d.err == nil && sv > raft.SnapshotVersionMax {
		d.fail("snapshot version %d", sv)
	}
	r.SnapshotVersion = raft.SnapshotVersion(sv)
	r.Term = d.uvarint()
	r.Leader = d.name(r.Addr)
	r.LastLogIndex = d.uvarint()
	r.LastLogTerm = d.uvarint()
	r.Peers = d.bytesOrNil(maxBlobBytes)
	r.Configuration = d.bytesOrNil(maxBlobBytes)
	r.ConfigurationIndex = d.uvarint()
	r.Size = d.varint()
	if d.err == nil && r.Size < 0 {
		d.fail("snapshot size %d", r.Size)
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func appendInstallSnapshotResponse(dst []byte, r *raft.InstallSnapshotResponse, def *peerNames) []byte {
	dst = appendHeader(dst, &r.RPCHeader, def)
	dst = binary.AppendUvarint(dst, r.Term)
	return append(dst, boolBits(r.Success, false))
}

func decodeInstallSnapshotResponse(b []byte, def *peerNames, r *raft.InstallSnapshotResponse) error {
	d := dec{b: b}
	d.header(&r.RPCHeader, def)
	r.Term = d.uvarint()
	r.Success = d.bits1()
	d.end()
	return d.err
}

// appendResponse encodes whatever raft answered to a request of type rpc.
func appendResponse(dst []byte, rpc byte, resp any, def *peerNames) ([]byte, error) {
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		if rpc == rpcAppendEntries {
			return appendAppendEntriesResponse(dst, r, def), nil
		}
	case *raft.RequestVoteResponse:
		if rpc == rpcRequestVote {
			return appendRequestVoteResponse(dst, r, def), nil
		}
	case *raft.RequestPreVoteResponse:
		if rpc == rpcRequestPreVote {
			return appendPreVoteResponse(dst, r, def), nil
		}
	case *raft.TimeoutNowResponse:
		if rpc == rpcTimeoutNow {
			return appendTimeoutNowResponse(dst, r, def), nil
		}
	case *raft.InstallSnapshotResponse:
		if rpc == rpcInstallSnapshot {
			return appendInstallSnapshotResponse(dst, r, def), nil
		}
	}
	return dst, fmt.Errorf("raftmux: raft answered rpc type %d with %T", rpc, resp)
}

// decodeCommand decodes a request item's body into what raft's consumer
// expects in RPC.Command.
func decodeCommand(rpc byte, body []byte, def *peerNames) (any, error) {
	switch rpc {
	case rpcAppendEntries:
		return decodeAppendEntriesRequest(body, def)
	case rpcRequestVote:
		return decodeRequestVoteRequest(body, def)
	case rpcRequestPreVote:
		return decodePreVoteRequest(body, def)
	case rpcTimeoutNow:
		return decodeTimeoutNowRequest(body, def)
	case rpcInstallSnapshot:
		return decodeInstallSnapshotRequest(body, def)
	}
	return nil, fmt.Errorf("%w: rpc type %d carries no raft command", ErrMalformed, rpc)
}

func boolBits(a, b bool) byte {
	var v byte
	if a {
		v |= 1
	}
	if b {
		v |= 2
	}
	return v
}

func appendBytes(dst, s []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// dec reads the encodings above; the first error sticks and every read
// after it returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *dec) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
}

func (d *dec) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *dec) raw(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) bits1() bool {
	a, b := d.bits2()
	if b {
		d.fail("flag bits")
	}
	return a
}

func (d *dec) bits2() (bool, bool) {
	v := d.byte()
	if v > 3 {
		d.fail("flag byte %#x", v)
	}
	return v&1 != 0, v&2 != 0
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and checks it against limit and against
// the bytes left (each element takes at least minBytes).
func (d *dec) count(minBytes, limit int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) || n > uint64(len(d.b)/minBytes) {
		d.fail("count %d (limit %d, %d bytes left)", n, limit, len(d.b))
		return 0
	}
	return int(n)
}

// bytes returns a length-prefixed field, aliasing the frame (a nil-safe
// empty slice for length 0).
func (d *dec) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("field of %d bytes (limit %d, %d left)", n, limit, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) bytesOrNil(limit int) []byte {
	v := d.bytes(limit)
	if len(v) == 0 {
		return nil
	}
	return v
}
