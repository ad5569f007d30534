package netio

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"sync/atomic"
)

// Frame layout. Every frame is a fixed 28-byte header followed by
// PayloadLen bytes of opaque payload. All integers are little-endian.
//
//	offset size field
//	     0    4 magic        Magic (bytes 'C' 'F' 'S' 'N' on the wire)
//	     4    1 version      Version (1)
//	     5    1 opcode       registered by the user; OpPing is protocol-level
//	     6    2 flags        FlagResponse (bit 0), FlagError (bit 1); other
//	                         bits are reserved and must be zero
//	     8    8 request id   chosen by the client, echoed in the response
//	    16    4 payload len  bytes of payload after the header, at most the
//	                         receiver's configured maximum (<= HardMaxPayload)
//	    20    4 payload crc  CRC32C (Castagnoli) of the payload; 0 when empty
//	    24    4 header crc   CRC32C of bytes 0..23 of this header
//	    28      payload
//
// An error reply is a response (FlagResponse|FlagError) carrying the
// request's opcode and id, whose payload is a u16 error code followed by a
// UTF-8 message (see RemoteError).
const (
	Magic      uint32 = 0x4e534643
	Version    uint8  = 1
	HeaderSize        = 28

	// DefaultMaxPayload is the default bound on a frame's payload: an 8 MiB
	// data block plus room for its metadata.
	DefaultMaxPayload = 8<<20 + 64<<10
	// HardMaxPayload caps every configured maximum.
	HardMaxPayload = 64 << 20
)

// Opcode names an operation. Opcodes below OpFirstUser are reserved for
// the protocol itself; the dataplane registers its own from OpFirstUser up.
type Opcode uint8

const (
	// OpPing is answered by the server itself with its payload echoed.
	OpPing Opcode = 0
	// OpFirstUser is the first opcode a user may register.
	OpFirstUser Opcode = 16
)

// Flags is the header's flag word.
type Flags uint16

const (
	FlagResponse Flags = 1 << 0
	FlagError    Flags = 1 << 1

	knownFlags = FlagResponse | FlagError
)

// Header is a decoded frame header.
type Header struct {
	Opcode     Opcode
	Flags      Flags
	ID         uint64
	PayloadLen uint32
	PayloadCRC uint32
}

// Decoding errors. Fatal reports which of them leave the stream impossible
// to re-frame.
var (
	ErrShortHeader   = errors.New("netio: short frame header")
	ErrBadMagic      = errors.New("netio: bad frame magic")
	ErrBadVersion    = errors.New("netio: unsupported frame version")
	ErrBadHeaderCRC  = errors.New("netio: frame header CRC mismatch")
	ErrTooLarge      = errors.New("netio: frame payload larger than the maximum")
	ErrBadPayloadCRC = errors.New("netio: frame payload CRC mismatch")
	ErrBadFlags      = errors.New("netio: reserved or inconsistent frame flags")
	ErrTruncated     = errors.New("netio: stream ended inside a frame")
)

// Fatal reports whether err, returned while decoding, means the byte stream
// can no longer be split into frames and the connection must be closed.
func Fatal(err error) bool {
	switch err {
	case ErrBadMagic, ErrBadVersion, ErrBadHeaderCRC, ErrTooLarge, ErrTruncated, ErrShortHeader:
		return true
	}
	return false
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC32C used for payloads and headers.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// PutHeader encodes the header of a frame carrying payload into dst, which
// must hold at least HeaderSize bytes, computing both CRCs. It does not
// allocate. It returns dst[:HeaderSize].
func PutHeader(dst []byte, op Opcode, flags Flags, id uint64, payload []byte) []byte {
	return EncodeHeader(dst, Header{
		Opcode: op, Flags: flags, ID: id,
		PayloadLen: uint32(len(payload)), PayloadCRC: Checksum(payload),
	})
}

// EncodeHeader encodes h into dst (at least HeaderSize bytes) with its
// header CRC, trusting h.PayloadLen and h.PayloadCRC. It returns
// dst[:HeaderSize].
func EncodeHeader(dst []byte, h Header) []byte {
	dst = dst[:HeaderSize]
	binary.LittleEndian.PutUint32(dst[0:], Magic)
	dst[4] = Version
	dst[5] = byte(h.Opcode)
	binary.LittleEndian.PutUint16(dst[6:], uint16(h.Flags))
	binary.LittleEndian.PutUint64(dst[8:], h.ID)
	binary.LittleEndian.PutUint32(dst[16:], h.PayloadLen)
	binary.LittleEndian.PutUint32(dst[20:], h.PayloadCRC)
	binary.LittleEndian.PutUint32(dst[24:], Checksum(dst[:24]))
	return dst
}

// DecodeHeader validates and decodes the first HeaderSize bytes of b:
// magic, version, header CRC and payload length against maxPayload (values
// <= 0 or above HardMaxPayload mean HardMaxPayload), in that order, so that
// nothing is allocated or read on the strength of an unchecked length.
// Flag consistency is checked last and reported as ErrBadFlags with the
// header still returned, since the frame's boundaries are then known.
func DecodeHeader(b []byte, maxPayload int) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShortHeader
	}
	b = b[:HeaderSize]
	if binary.LittleEndian.Uint32(b[0:]) != Magic {
		return Header{}, ErrBadMagic
	}
	if b[4] != Version {
		return Header{}, ErrBadVersion
	}
	if binary.LittleEndian.Uint32(b[24:]) != Checksum(b[:24]) {
		return Header{}, ErrBadHeaderCRC
	}
	h := Header{
		Opcode:     Opcode(b[5]),
		Flags:      Flags(binary.LittleEndian.Uint16(b[6:])),
		ID:         binary.LittleEndian.Uint64(b[8:]),
		PayloadLen: binary.LittleEndian.Uint32(b[16:]),
		PayloadCRC: binary.LittleEndian.Uint32(b[20:]),
	}
	if uint64(h.PayloadLen) > uint64(clampMax(maxPayload)) {
		return Header{}, ErrTooLarge
	}
	if h.Flags&^knownFlags != 0 || (h.Flags&FlagError != 0 && h.Flags&FlagResponse == 0) {
		return h, ErrBadFlags
	}
	return h, nil
}

// VerifyPayload checks payload against the header's length and CRC.
func VerifyPayload(h *Header, payload []byte) error {
	if uint32(len(payload)) != h.PayloadLen || Checksum(payload) != h.PayloadCRC {
		return ErrBadPayloadCRC
	}
	return nil
}

func clampMax(m int) int {
	if m <= 0 || m > HardMaxPayload {
		return HardMaxPayload
	}
	return m
}

// Counters counts bad input by kind. All fields are updated atomically and
// may be read at any time.
type Counters struct {
	BadMagic      atomic.Uint64
	BadVersion    atomic.Uint64
	BadHeaderCRC  atomic.Uint64
	TooLarge      atomic.Uint64
	BadPayloadCRC atomic.Uint64
	BadFlags      atomic.Uint64
	UnknownOpcode atomic.Uint64
	Truncated     atomic.Uint64
	// WindowOverrun counts connections closed for buffering more than
	// MaxBufferedPerConn bytes while at their in-flight limit.
	WindowOverrun atomic.Uint64
	// UnknownResponse counts responses whose id matches no waiting call.
	UnknownResponse atomic.Uint64
}

// Count increments the counter for a decoding error; it ignores nil and
// errors that are not decoding errors.
func (c *Counters) Count(err error) {
	if c == nil {
		return
	}
	switch err {
	case ErrBadMagic:
		c.BadMagic.Add(1)
	case ErrBadVersion:
		c.BadVersion.Add(1)
	case ErrBadHeaderCRC:
		c.BadHeaderCRC.Add(1)
	case ErrTooLarge:
		c.TooLarge.Add(1)
	case ErrBadPayloadCRC:
		c.BadPayloadCRC.Add(1)
	case ErrBadFlags:
		c.BadFlags.Add(1)
	case ErrTruncated, ErrShortHeader:
		c.Truncated.Add(1)
	}
}

// FrameReader decodes frames from a byte stream. It is what the client's
// reader goroutines use, and what the fuzz test drives.
type FrameReader struct {
	r        io.Reader
	max      int
	counters *Counters
	hdr      [HeaderSize]byte
	// alloc, when set, replaces make for payload buffers (tests use it to
	// watch allocation sizes).
	alloc func(n int) []byte
}

// NewFrameReader reads frames from r, refusing payloads over maxPayload
// (<= 0 means DefaultMaxPayload) and counting bad input in counters (which
// may be nil).
func NewFrameReader(r io.Reader, maxPayload int, counters *Counters) *FrameReader {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	return &FrameReader{r: r, max: clampMax(maxPayload), counters: counters}
}

// ReadHeader reads and validates the next header. It returns io.EOF only
// when the stream ends cleanly between frames.
func (fr *FrameReader) ReadHeader() (Header, error) {
	n, err := io.ReadFull(fr.r, fr.hdr[:])
	if err != nil {
		if n == 0 && err == io.EOF {
			return Header{}, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			err = ErrTruncated
			fr.counters.Count(err)
		}
		return Header{}, err
	}
	h, err := DecodeHeader(fr.hdr[:], fr.max)
	fr.counters.Count(err)
	return h, err
}

// ReadPayload reads the payload of h into buf when it has the capacity, or
// into a new buffer of exactly h.PayloadLen bytes (already validated
// against the maximum), and verifies its CRC. It returns the payload.
func (fr *FrameReader) ReadPayload(h *Header, buf []byte) ([]byte, error) {
	return fr.readPayload(h, buf, true)
}

// readPayload is ReadPayload, verifying the CRC only when verify is set
// (the caller then checks it against h.PayloadCRC itself).
func (fr *FrameReader) readPayload(h *Header, buf []byte, verify bool) ([]byte, error) {
	n := int(h.PayloadLen)
	if cap(buf) >= n {
		buf = buf[:n]
	} else if fr.alloc != nil {
		buf = fr.alloc(n)
	} else {
		buf = make([]byte, n)
	}
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = ErrTruncated
			fr.counters.Count(err)
		}
		return nil, err
	}
	if !verify {
		return buf, nil
	}
	if err := VerifyPayload(h, buf); err != nil {
		fr.counters.Count(err)
		return buf, err
	}
	return buf, nil
}

// ReadFrame reads one whole frame. On ErrBadFlags and ErrBadPayloadCRC the
// stream is still framed and reading may go on; after any other error it
// may not.
func (fr *FrameReader) ReadFrame(buf []byte) (Header, []byte, error) {
	h, err := fr.ReadHeader()
	if err != nil && err != ErrBadFlags {
		return h, nil, err
	}
	p, perr := fr.ReadPayload(&h, buf)
	if perr != nil {
		return h, p, perr
	}
	return h, p, err
}
