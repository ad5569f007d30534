package kvsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Limits of the KV state machine, checked by the encoders and again by
// the decoders before anything is allocated.
const (
	MaxKeyBytes   = 4 << 10
	MaxValueBytes = 1 << 20
	MaxOps        = 1024
	// MaxScanItems bounds the items of one Scan answer; MaxScanBytes bounds
	// its keys and values (the answer stops early, with More set).
	MaxScanItems = 10000
	MaxScanBytes = 4 << 20
)

// OpKind says what an Op does.
type OpKind uint8

const (
	// OpPut sets Key to Value.
	OpPut OpKind = 1
	// OpDelete removes Key (absent is not an error).
	OpDelete OpKind = 2
	// OpCAS writes Key (Value, or a delete if Delete is set) only if its
	// current state matches the condition: by version (IfVersion; 0 means
	// "absent") or by value (IfValue; IfAbsent means "absent").
	OpCAS OpKind = 3
)

// CondKind selects how an OpCAS compares.
type CondKind uint8

const (
	// CondVersion compares the key's version with IfVersion.
	CondVersion CondKind = 1
	// CondValue compares the key's value with IfValue (or absence, IfAbsent).
	CondValue CondKind = 2
)

// Op is one operation of a KV command. A command is one or more ops,
// applied in order, all or nothing: if any CAS condition fails none of the
// ops is applied. Every key written by a command gets the command's Raft
// index as its version.
type Op struct {
	Kind  OpKind
	Key   []byte
	Value []byte
	// CAS only.
	Cond      CondKind
	IfVersion uint64
	IfValue   []byte
	IfAbsent  bool
	Delete    bool
}

// Put returns an OpPut.
func Put(key, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// Delete returns an OpDelete.
func Delete(key []byte) Op { return Op{Kind: OpDelete, Key: key} }

// CASVersion returns an OpCAS setting key to value if its version is
// version (0: if it is absent).
func CASVersion(key []byte, version uint64, value []byte) Op {
	return Op{Kind: OpCAS, Key: key, Value: value, Cond: CondVersion, IfVersion: version}
}

// CASValue returns an OpCAS setting key to value if its value is old
// (a nil old: if it is absent).
func CASValue(key, old, value []byte) Op {
	return Op{Kind: OpCAS, Key: key, Value: value, Cond: CondValue, IfValue: old, IfAbsent: old == nil}
}

// ErrBadCommand is wrapped by every error about a malformed command,
// query or result encoding.
var ErrBadCommand = errors.New("kvsm: bad command")

const (
	cmdVersion   = 1
	queryVersion = 1
	flagIfAbsent = 1
	flagDelete   = 2
)

func (op *Op) validate() error {
	if len(op.Key) > MaxKeyBytes {
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrBadCommand, len(op.Key), MaxKeyBytes)
	}
	if len(op.Value) > MaxValueBytes || len(op.IfValue) > MaxValueBytes {
		return fmt.Errorf("%w: value of %d bytes, limit %d", ErrBadCommand, max(len(op.Value), len(op.IfValue)), MaxValueBytes)
	}
	switch op.Kind {
	case OpPut, OpDelete:
	case OpCAS:
		if op.Cond != CondVersion && op.Cond != CondValue {
			return fmt.Errorf("%w: CAS condition %d", ErrBadCommand, op.Cond)
		}
	default:
		return fmt.Errorf("%w: op kind %d", ErrBadCommand, op.Kind)
	}
	return nil
}

// EncodeCommand encodes ops as one command:
//
//	version 1 | uvarint n | n × op
//	op: kind | key | [Put: value] [CAS: cond | flags | IfVersion or IfValue | value]
//
// where byte strings are uvarint length + bytes.
func EncodeCommand(ops ...Op) ([]byte, error) {
	if len(ops) == 0 || len(ops) > MaxOps {
		return nil, fmt.Errorf("%w: %d ops, want 1..%d", ErrBadCommand, len(ops), MaxOps)
	}
	b := []byte{cmdVersion}
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		if err := op.validate(); err != nil {
			return nil, err
		}
		b = append(b, byte(op.Kind))
		b = appendBytes(b, op.Key)
		switch op.Kind {
		case OpPut:
			b = appendBytes(b, op.Value)
		case OpCAS:
			var flags byte
			if op.IfAbsent {
				flags |= flagIfAbsent
			}
			if op.Delete {
				flags |= flagDelete
			}
			b = append(b, byte(op.Cond), flags)
			if op.Cond == CondVersion {
				b = binary.AppendUvarint(b, op.IfVersion)
			} else {
				b = appendBytes(b, op.IfValue)
			}
			b = appendBytes(b, op.Value)
		}
	}
	return b, nil
}

// DecodeCommand decodes a command. Returned slices alias b.
func DecodeCommand(b []byte) ([]Op, error) {
	d := dec{b: b}
	if v := d.byte(); d.err == nil && v != cmdVersion {
		return nil, fmt.Errorf("%w: command version %d", ErrBadCommand, v)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxOps) {
		return nil, fmt.Errorf("%w: %d ops, want 1..%d", ErrBadCommand, n, MaxOps)
	}
	if d.err == nil && n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d ops in %d bytes", ErrBadCommand, n, len(d.b))
	}
	var ops []Op
	if d.err == nil {
		ops = make([]Op, 0, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		var op Op
		op.Kind = OpKind(d.byte())
		op.Key = d.bytes(MaxKeyBytes)
		switch op.Kind {
		case OpPut:
			op.Value = d.bytes(MaxValueBytes)
		case OpDelete:
		case OpCAS:
			op.Cond = CondKind(d.byte())
			flags := d.byte()
			if flags&^(flagIfAbsent|flagDelete) != 0 {
				d.fail("CAS flags %#x", flags)
			}
			op.IfAbsent = flags&flagIfAbsent != 0
			op.Delete = flags&flagDelete != 0
			switch op.Cond {
			case CondVersion:
				op.IfVersion = d.uvarint()
			case CondValue:
				op.IfValue = d.bytes(MaxValueBytes)
			default:
				d.fail("CAS condition %d", op.Cond)
			}
			op.Value = d.bytes(MaxValueBytes)
		default:
			d.fail("op kind %d", op.Kind)
		}
		ops = append(ops, op)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return ops, nil
}

// Item is a key's state as a result reports it.
type Item struct {
	Found   bool
	Version uint64
	Value   []byte
}

// Result is what a KV command returns to its proposer.
type Result struct {
	// OK is false when a CAS condition failed; nothing was written then.
	OK bool
	// Failed is the index of the op whose condition failed (when !OK).
	Failed int
	// Current is the failed key's state (Value not included).
	Current Item
	// Version is the version written (the command's Raft index), when OK.
	Version uint64
	// Existed says, per op, whether its key existed before the command.
	Existed []bool
	// Refused is set, and nothing written, when the command did not decode
	// (the same on every replica).
	Refused string
}

// result encoding:
//
//	0x00 ok      | uvarint version | uvarint n | n × existed byte
//	0x01 failed  | uvarint op index | found byte | uvarint version
//	0x02 refused | message
func encodeResult(r *Result) []byte {
	switch {
	case r.Refused != "":
		return append([]byte{2}, r.Refused...)
	case !r.OK:
		b := []byte{1}
		b = binary.AppendUvarint(b, uint64(r.Failed))
		b = append(b, boolByte(r.Current.Found))
		return binary.AppendUvarint(b, r.Current.Version)
	default:
		b := []byte{0}
		b = binary.AppendUvarint(b, r.Version)
		b = binary.AppendUvarint(b, uint64(len(r.Existed)))
		for _, e := range r.Existed {
			b = append(b, boolByte(e))
		}
		return b
	}
}

// DecodeResult decodes what a KV command returned.
func DecodeResult(b []byte) (*Result, error) {
	d := dec{b: b}
	r := &Result{}
	switch d.byte() {
	case 0:
		r.OK = true
		r.Version = d.uvarint()
		n := d.uvarint()
		if d.err == nil && (n > MaxOps || n > uint64(len(d.b))) {
			d.fail("%d existed flags in %d bytes", n, len(d.b))
		}
		for i := uint64(0); d.err == nil && i < n; i++ {
			r.Existed = append(r.Existed, d.bool())
		}
	case 1:
		f := d.uvarint()
		if d.err == nil && f >= MaxOps {
			d.fail("failed op index %d", f)
		}
		r.Failed = int(f)
		r.Current.Found = d.bool()
		r.Current.Version = d.uvarint()
	case 2:
		r.Refused = string(d.b)
		if r.Refused == "" {
			d.fail("refusal without a message")
		}
		d.b = nil
	default:
		d.fail("result status")
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// Stored value: uvarint version | value.
func encodeStored(version uint64, value []byte) []byte {
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(value)), version)
	return append(b, value...)
}

func decodeStored(b []byte) (version uint64, value []byte, err error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("kvsm: stored value without a version")
	}
	return v, b[n:], nil
}

// KV is the replicated key-value state machine: commands from
// EncodeCommand, queries from EncodeGet and EncodeScan.
type KV struct{}

var _ Applier = KV{}

type overlay struct {
	found   bool
	version uint64
	value   []byte
}

// Apply executes a command all-or-nothing: conditions are checked in op
// order against the state as the earlier ops of the same command leave it,
// and only if all hold are the writes made.
func (KV) Apply(w *Writer, index uint64, cmd []byte) ([]byte, error) {
	ops, err := DecodeCommand(cmd)
	if err != nil {
		return encodeResult(&Result{Refused: err.Error()}), nil
	}
	view := make(map[string]*overlay, len(ops))
	current := func(key []byte) (*overlay, error) {
		if o, ok := view[string(key)]; ok {
			return o, nil
		}
		raw, found, err := w.Get(key)
		if err != nil {
			return nil, err
		}
		o := &overlay{found: found}
		if found {
			if o.version, o.value, err = decodeStored(raw); err != nil {
				return nil, err
			}
		}
		view[string(key)] = o
		return o, nil
	}
	existed := make([]bool, len(ops))
	for i := range ops {
		op := &ops[i]
		o, err := current(op.Key)
		if err != nil {
			return nil, err
		}
		existed[i] = o.found
		if op.Kind == OpCAS {
			var holds bool
			if op.Cond == CondVersion {
				holds = (op.IfVersion == 0 && !o.found) || (o.found && o.version == op.IfVersion)
			} else {
				holds = (op.IfAbsent && !o.found) || (!op.IfAbsent && o.found && bytes.Equal(o.value, op.IfValue))
			}
			if !holds {
				return encodeResult(&Result{Failed: i, Current: Item{Found: o.found, Version: o.version}}), nil
			}
		}
		if op.Kind == OpDelete || (op.Kind == OpCAS && op.Delete) {
			*o = overlay{}
		} else {
			*o = overlay{found: true, version: index, value: op.Value}
		}
	}
	for i := range ops {
		op := &ops[i]
		var err error
		if op.Kind == OpDelete || (op.Kind == OpCAS && op.Delete) {
			err = w.Delete(op.Key)
		} else {
			err = w.Set(op.Key, encodeStored(index, op.Value))
		}
		if err != nil {
			return nil, err
		}
	}
	return encodeResult(&Result{OK: true, Version: index, Existed: existed}), nil
}

// Queries:
//
//	version 1 | 0x01 Get  | key
//	version 1 | 0x02 Scan | start | end | uvarint limit
//
// where an empty end means to the end of the group's keys.
const (
	queryGet  = 1
	queryScan = 2
)

// EncodeGet encodes a query for one key.
func EncodeGet(key []byte) ([]byte, error) {
	if len(key) > MaxKeyBytes {
		return nil, fmt.Errorf("%w: key of %d bytes, limit %d", ErrBadCommand, len(key), MaxKeyBytes)
	}
	return appendBytes([]byte{queryVersion, queryGet}, key), nil
}

// EncodeScan encodes a query for up to limit keys in [start, end) (nil
// end: to the end). limit 0 or above MaxScanItems means MaxScanItems.
func EncodeScan(start, end []byte, limit int) ([]byte, error) {
	if len(start) > MaxKeyBytes || len(end) > MaxKeyBytes {
		return nil, fmt.Errorf("%w: scan bound over %d bytes", ErrBadCommand, MaxKeyBytes)
	}
	if limit <= 0 || limit > MaxScanItems {
		limit = MaxScanItems
	}
	b := appendBytes([]byte{queryVersion, queryScan}, start)
	b = appendBytes(b, end)
	return binary.AppendUvarint(b, uint64(limit)), nil
}

// KVPair is one key of a Scan answer.
type KVPair struct {
	Key []byte
	Item
}

// Query answers Get (found byte | uvarint version | value) and Scan
// (uvarint n | n × (key | uvarint version | value) | more byte).
func (KV) Query(r Reader, q []byte) ([]byte, error) {
	d := dec{b: q}
	if v := d.byte(); d.err == nil && v != queryVersion {
		return nil, fmt.Errorf("%w: query version %d", ErrBadCommand, v)
	}
	switch kind := d.byte(); {
	case d.err != nil:
	case kind == queryGet:
		key := d.bytes(MaxKeyBytes)
		if d.err == nil && len(d.b) != 0 {
			d.fail("%d trailing bytes", len(d.b))
		}
		if d.err != nil {
			return nil, d.err
		}
		raw, found, err := r.Get(key)
		if err != nil {
			return nil, err
		}
		if !found {
			return []byte{0, 0}, nil
		}
		version, value, err := decodeStored(raw)
		if err != nil {
			return nil, err
		}
		out := binary.AppendUvarint([]byte{1}, version)
		return append(out, value...), nil
	case kind == queryScan:
		start := d.bytes(MaxKeyBytes)
		end := d.bytes(MaxKeyBytes)
		limit := d.uvarint()
		if d.err == nil && len(d.b) != 0 {
			d.fail("%d trailing bytes", len(d.b))
		}
		if d.err != nil {
			return nil, d.err
		}
		if len(end) == 0 {
			end = nil
		}
		limit = min(max(limit, 1), MaxScanItems)
		var body []byte
		var n uint64
		more := false
		var serr error
		err := r.Scan(start, end, func(k, v []byte) bool {
			if n == limit || len(body) >= MaxScanBytes {
				more = true
				return false
			}
			version, value, err := decodeStored(v)
			if err != nil {
				serr = err
				return false
			}
			body = appendBytes(body, k)
			body = binary.AppendUvarint(body, version)
			body = appendBytes(body, value)
			n++
			return true
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return nil, err
		}
		out := binary.AppendUvarint(nil, n)
		out = append(out, body...)
		return append(out, boolByte(more)), nil
	default:
		d.fail("query kind %d", kind)
	}
	return nil, d.err
}

// DecodeGet decodes a Get answer.
func DecodeGet(b []byte) (Item, error) {
	d := dec{b: b}
	var it Item
	it.Found = d.bool()
	it.Version = d.uvarint()
	if it.Found {
		it.Value = d.b
		d.b = nil
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return it, d.err
}

// DecodeScan decodes a Scan answer; more says the scan stopped at its limit.
func DecodeScan(b []byte) (pairs []KVPair, more bool, err error) {
	d := dec{b: b}
	n := d.uvarint()
	if d.err == nil && (n > MaxScanItems || n > uint64(len(d.b))) {
		d.fail("%d items in %d bytes", n, len(d.b))
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		var p KVPair
		p.Found = true
		p.Key = d.bytes(MaxKeyBytes)
		p.Version = d.uvarint()
		p.Value = d.bytes(MaxValueBytes)
		pairs = append(pairs, p)
	}
	more = d.bool()
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, false, d.err
	}
	return pairs, more, nil
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// dec reads the encodings above; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadCommand}, args...)...)
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

func (d *dec) bool() bool {
	switch c := d.byte(); c {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("boolean byte %#x", c)
		return false
	}
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
	if n > 1 && d.b[n-1] == 0 {
		// Only minimal encodings are valid, so every command has exactly
		// one encoding.
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("field of %d bytes, limit %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("field of %d bytes, %d left", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// EncodeRefused is the result of a command refused whole for reason, for
// state machines that wrap KV and refuse some of its commands themselves.
func EncodeRefused(reason string) []byte { return encodeResult(&Result{Refused: reason}) }
