package sidecar

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
)

// MaxFrame bounds a frame's JSON, either way, in bytes.
const MaxFrame = 1 << 20

// maxKeyBytes bounds a request's key.
const maxKeyBytes = 256

// The operations.
const (
	OpConfigGet = "config.get"
	OpConfigSet = "config.set"
	OpEpochSet  = "epoch.set"
	OpHealth    = "health"
	OpStats     = "stats"
	// OpProfileCPU takes a CPU profile of the dataplane for duration_ns
	// and answers its pprof bytes (see CPUProfile).
	OpProfileCPU = "profile.cpu"
)

// Ops lists the operations.
var Ops = []string{OpConfigGet, OpConfigSet, OpEpochSet, OpHealth, OpStats, OpProfileCPU}

// Error codes of error responses.
const (
	CodeBadRequest  = "bad_request"
	CodeUnknownOp   = "unknown_op"
	CodeUnknownKey  = "unknown_key"
	CodeBadValue    = "bad_value"
	CodeStaleEpoch  = "stale_epoch"
	CodeBusy        = "busy"
	CodeTimeout     = "timeout"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Sentinels an error response matches with errors.Is (see Error). An
// unknown key and a bad value match dpconfig's own sentinels.
var (
	ErrBadRequest  = errors.New("sidecar: bad request")
	ErrUnknownOp   = errors.New("sidecar: unknown operation")
	ErrStaleEpoch  = errors.New("sidecar: placement epoch older than the dataplane's")
	ErrBusy        = errors.New("sidecar: busy")
	ErrTimeout     = errors.New("sidecar: request timed out")
	ErrUnavailable = errors.New("sidecar: dataplane store unavailable")
	ErrInternal    = errors.New("sidecar: internal error")
)

// Error is an error response, as Client returns it; errors.Is matches it
// against the sentinel of its code (dpconfig.ErrUnknownKey and
// dpconfig.ErrBadValue for unknown_key and bad_value).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "sidecar: " + e.Message + " (" + e.Code + ")" }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s := sentinel(e.Code)
	return s != nil && s == target
}

func sentinel(code string) error {
	switch code {
	case CodeBadRequest:
		return ErrBadRequest
	case CodeUnknownOp:
		return ErrUnknownOp
	case CodeUnknownKey:
		return dpconfig.ErrUnknownKey
	case CodeBadValue:
		return dpconfig.ErrBadValue
	case CodeStaleEpoch:
		return ErrStaleEpoch
	case CodeBusy:
		return ErrBusy
	case CodeTimeout:
		return ErrTimeout
	case CodeUnavailable:
		return ErrUnavailable
	case CodeInternal:
		return ErrInternal
	}
	return nil
}

// CodeOf is the error code a Handler's error is answered with.
func CodeOf(err error) string {
	var e *Error
	switch {
	case errors.As(err, &e) && sentinel(e.Code) != nil:
		return e.Code
	case errors.Is(err, dpconfig.ErrUnknownKey):
		return CodeUnknownKey
	case errors.Is(err, dpconfig.ErrBadValue):
		return CodeBadValue
	case errors.Is(err, ErrStaleEpoch):
		return CodeStaleEpoch
	case errors.Is(err, ErrUnavailable):
		return CodeUnavailable
	case errors.Is(err, ErrBusy):
		return CodeBusy
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, ErrUnknownOp):
		return CodeUnknownOp
	case errors.Is(err, ErrTimeout):
		return CodeTimeout
	}
	return CodeInternal
}

// Request is one request object.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// Key is config.get's key ("" for all) and config.set's.
	Key string `json:"key,omitempty"`
	// Value is config.set's value (required there, even if empty).
	Value *string `json:"value,omitempty"`
	// Epoch is epoch.set's epoch (required there).
	Epoch *uint64 `json:"epoch,omitempty"`
	// DurationNs is profile.cpu's duration (required there), in
	// MinProfile..MaxProfile.
	DurationNs *int64 `json:"duration_ns,omitempty"`
}

// The bounds of a CPU profile: its duration and the size of its pprof
// bytes (base64 in the reply, which must fit a frame).
const (
	MinProfile      = time.Second
	MaxProfile      = 120 * time.Second
	MaxProfileBytes = 640 << 10
)

// CPUProfile is profile.cpu's result.
type CPUProfile struct {
	DurationNs int64 `json:"duration_ns"`
	// Pprof is the profile in pprof's format (gzipped protobuf), at most
	// MaxProfileBytes; samples carry the dataplane's labels (core, role,
	// op: dataplane/labels.go).
	Pprof []byte `json:"pprof"`
}

// DecodeCPUProfile decodes profile.cpu's result, refusing a profile over
// MaxProfileBytes or without pprof's gzip magic.
func DecodeCPUProfile(b []byte) (CPUProfile, error) {
	if len(b) > MaxFrame {
		return CPUProfile{}, fmt.Errorf("sidecar: profile.cpu result of %d bytes, over the %d-byte frame", len(b), MaxFrame)
	}
	var p CPUProfile
	if err := json.Unmarshal(b, &p); err != nil {
		return CPUProfile{}, fmt.Errorf("sidecar: profile.cpu: malformed result: %s", clipMsg(err.Error()))
	}
	switch {
	case len(p.Pprof) > MaxProfileBytes:
		return CPUProfile{}, fmt.Errorf("sidecar: profile.cpu: %d bytes of profile, at most %d", len(p.Pprof), MaxProfileBytes)
	case len(p.Pprof) < 2 || p.Pprof[0] != 0x1f || p.Pprof[1] != 0x8b:
		return CPUProfile{}, errors.New("sidecar: profile.cpu: the result is not a gzipped pprof profile")
	case p.DurationNs < int64(MinProfile) || p.DurationNs > int64(MaxProfile)+int64(time.Second):
		return CPUProfile{}, fmt.Errorf("sidecar: profile.cpu: duration %v out of range", time.Duration(p.DurationNs))
	}
	return p, nil
}

// Response is one response object: OK with a Result, or an Error.
type Response struct {
	ID     uint64          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// ConfigValue is one key as config.get reports it.
type ConfigValue struct {
	Key     string `json:"key"`
	Value   string `json:"value"` // in force, canonical form
	Default string `json:"default"`
	Range   string `json:"range"`
	Live    bool   `json:"live"` // false: changing it takes a restart
	Help    string `json:"help"`
}

// ConfigValues is config.get's result.
type ConfigValues struct {
	Values []ConfigValue `json:"values"`
}

// SetResult is config.set's result.
type SetResult struct {
	Key string `json:"key"`
	// Value is the value in force after the call (canonical form): the
	// new one when Applied, the old one otherwise.
	Value string `json:"value"`
	// Requested is the value asked for, in canonical form.
	Requested string `json:"requested"`
	// Applied is true when the value is in force now.
	Applied bool `json:"applied"`
	// RestartRequired is true when the key (or this change of it) only
	// takes effect when the dataplane is restarted with the value in its
	// flags or configuration file; nothing was changed.
	RestartRequired bool `json:"restart_required"`
}

// EpochResult is epoch.set's result.
type EpochResult struct {
	Epoch uint64 `json:"epoch"` // the epoch in force
}

// Health is health's result: the dataplane's state.
type Health struct {
	PID        int    `json:"pid"`
	StoreOpen  bool   `json:"store_open"`
	Device     string `json:"device"`
	Listen     string `json:"listen"`
	Partitions int    `json:"partitions"`
	Epoch      uint64 `json:"epoch"`
	// CapacityBytes is the store's segment space; UsedBytes the segments
	// in use (live and dead data), FreeBytes the free segments (including
	// the cleaner's reserve); LiveBytes the data of live chunks.
	CapacityBytes int64     `json:"capacity_bytes"`
	UsedBytes     int64     `json:"used_bytes"`
	FreeBytes     int64     `json:"free_bytes"`
	LiveBytes     int64     `json:"live_bytes"`
	LiveChunks    int64     `json:"live_chunks"`
	StartedAt     time.Time `json:"started_at"`
	UptimeNs      int64     `json:"uptime_ns"`
	// Errors counts the errors recorded (store failures, pinning
	// failures); LastError is the latest, at LastErrorAt.
	Errors      uint64     `json:"errors"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Uptime is how long the dataplane has run.
func (h Health) Uptime() time.Duration { return time.Duration(h.UptimeNs) }

// LatencyBuckets is the length of CoreStats' histograms: bucket 0 counts
// latencies under 1 µs, bucket b latencies in [2^(b-1), 2^b) µs, the last
// bucket everything longer.
const LatencyBuckets = 32

// CoreStats are one I/O core's (one store partition's) figures. Counters
// count since the dataplane started; rates are the differences of two
// calls.
type CoreStats struct {
	Partition int `json:"partition"`
	// CPU is the CPU the core's thread is pinned to, -1 when unpinned;
	// TID its Linux thread id.
	CPU int `json:"cpu"`
	TID int `json:"tid"`
	// Reads, Writes and Deletes count the successful ones; Failed the
	// data requests answered with an error; Refused those refused at the
	// queue limit (nvme.queue_depth).
	Reads        uint64 `json:"reads"`
	Writes       uint64 `json:"writes"`
	Deletes      uint64 `json:"deletes"`
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	Failed       uint64 `json:"failed"`
	Refused      uint64 `json:"refused"`
	// QueueDepth is the data requests the core holds now, QueueLimit the
	// most it admits (nvme.queue_depth), DeviceOps its I/Os in the engine.
	QueueDepth int `json:"queue_depth"`
	QueueLimit int `json:"queue_limit"`
	DeviceOps  int `json:"device_ops"`
	// ReadLatency and WriteLatency (puts and deletes) count requests by
	// the time from their admission by the core to their answer, in
	// LatencyBuckets log2 µs buckets.
	ReadLatency  []uint64 `json:"read_latency_log2_us"`
	WriteLatency []uint64 `json:"write_latency_log2_us"`
	// Write-combining: durable appends, records in them, bytes appended.
	Batches      uint64 `json:"batches"`
	BatchRecords uint64 `json:"batch_records"`
	BatchBytes   uint64 `json:"batch_bytes"`
	LiveChunks   uint64 `json:"live_chunks"`
	LiveBytes    uint64 `json:"live_bytes"`
	Segments     uint64 `json:"segments"`
	FreeSegments uint64 `json:"free_segments"`
	// CPU time of the core's thread (from /proc/self/task/TID/stat, in
	// clock-tick resolution).
	UserCPUNs   int64 `json:"user_cpu_ns"`
	SystemCPUNs int64 `json:"system_cpu_ns"`
}

// LoopStats are one network event loop's thread: where it runs and its CPU
// time. Loops are listed once they have served a connection.
type LoopStats struct {
	Loop        int   `json:"loop"`
	TID         int   `json:"tid"`
	CPU         int   `json:"cpu"` // -1 when unpinned
	Conns       int   `json:"conns"`
	UserCPUNs   int64 `json:"user_cpu_ns"`
	SystemCPUNs int64 `json:"system_cpu_ns"`
}

// NetStats are the shard service's network figures.
type NetStats struct {
	// InFlight is the requests received and not yet answered; WorkerBusy
	// those refused because the worker queue was full.
	InFlight   int64  `json:"in_flight"`
	WorkerBusy uint64 `json:"worker_busy"`
	// Bad input by kind (netio.Counters).
	BadMagic        uint64 `json:"bad_magic"`
	BadVersion      uint64 `json:"bad_version"`
	BadHeaderCRC    uint64 `json:"bad_header_crc"`
	TooLarge        uint64 `json:"too_large"`
	BadPayloadCRC   uint64 `json:"bad_payload_crc"`
	BadFlags        uint64 `json:"bad_flags"`
	UnknownOpcode   uint64 `json:"unknown_opcode"`
	Truncated       uint64 `json:"truncated"`
	WindowOverrun   uint64 `json:"window_overrun"`
	UnknownResponse uint64 `json:"unknown_response"`
}

// Stats is stats' result.
type Stats struct {
	UptimeNs   int64       `json:"uptime_ns"`
	Epoch      uint64      `json:"epoch"`
	Cores      []CoreStats `json:"cores"`
	EventLoops []LoopStats `json:"event_loops"`
	Network    NetStats    `json:"network"`
}

// WriteFrame writes msg as one frame.
func WriteFrame(w io.Writer, msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxFrame {
		return fmt.Errorf("sidecar: frame of %d bytes, want 1..%d", len(msg), MaxFrame)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
	if _, err := w.Write(append(hdr[:], msg...)); err != nil {
		return err
	}
	return nil
}

// errFrameSize is a frame length out of range: the stream cannot be
// re-framed after it.
var errFrameSize = errors.New("frame length out of range")

// ReadFrame reads one frame's message, into buf when it is large enough.
// A length of 0 or over max is an error wrapping errFrameSize, returned
// before anything else is read or allocated.
func ReadFrame(r io.Reader, max int, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > uint32(max) {
		return nil, fmt.Errorf("%w: %d bytes, want 1..%d", errFrameSize, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// decodeStrict decodes exactly one JSON object from b into v, refusing
// unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// DecodeRequest decodes and validates one request. Its error is an *Error
// (bad_request or unknown_op); the request's id is returned whenever it
// could be read, so the error response can carry it.
func DecodeRequest(b []byte) (Request, error) {
	var req Request
	if err := decodeStrict(b, &req); err != nil {
		var id struct {
			ID uint64 `json:"id"`
		}
		_ = json.Unmarshal(b, &id)
		return Request{ID: id.ID}, &Error{Code: CodeBadRequest, Message: "malformed request: " + clipMsg(err.Error())}
	}
	bad := func(format string, a ...any) (Request, error) {
		return Request{ID: req.ID}, &Error{Code: CodeBadRequest, Message: fmt.Sprintf(req.Op+": "+format, a...)}
	}
	if len(req.Key) > maxKeyBytes {
		return bad("key of %d bytes, at most %d", len(req.Key), maxKeyBytes)
	}
	if req.Value != nil && len(*req.Value) > dpconfig.MaxValueBytes {
		return bad("value of %d bytes, at most %d", len(*req.Value), dpconfig.MaxValueBytes)
	}
	switch req.Op {
	case OpConfigGet:
		if req.Value != nil || req.Epoch != nil || req.DurationNs != nil {
			return bad("takes only an optional key")
		}
	case OpConfigSet:
		if req.Key == "" || req.Value == nil || req.Epoch != nil || req.DurationNs != nil {
			return bad("needs a key and a value, and nothing else")
		}
	case OpEpochSet:
		if req.Epoch == nil || req.Key != "" || req.Value != nil || req.DurationNs != nil {
			return bad("needs an epoch, and nothing else")
		}
	case OpProfileCPU:
		if req.DurationNs == nil || req.Key != "" || req.Value != nil || req.Epoch != nil {
			return bad("needs duration_ns, and nothing else")
		}
		if d := time.Duration(*req.DurationNs); d < MinProfile || d > MaxProfile {
			return bad("duration %v out of range %v..%v", d, MinProfile, MaxProfile)
		}
	case OpHealth, OpStats:
		if req.Key != "" || req.Value != nil || req.Epoch != nil || req.DurationNs != nil {
			return bad("takes no arguments")
		}
	default:
		return Request{ID: req.ID}, &Error{Code: CodeUnknownOp, Message: fmt.Sprintf("unknown operation %q; the operations are %v", clipMsg(req.Op), Ops)}
	}
	return req, nil
}

// DecodeResponse decodes one response object. Unknown fields are ignored
// (later versions may add some); a response that is neither a result nor
// an error with a known shape is an error.
func DecodeResponse(b []byte) (Response, error) {
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		return Response{}, fmt.Errorf("sidecar: malformed response: %s", clipMsg(err.Error()))
	}
	if resp.OK == (resp.Error != nil) {
		return Response{}, errors.New("sidecar: malformed response: it must carry either ok: true or an error")
	}
	if resp.Error != nil && resp.Error.Code == "" {
		return Response{}, errors.New("sidecar: malformed response: error without a code")
	}
	return resp, nil
}

func clipMsg(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
