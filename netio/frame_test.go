package netio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func frame(op Opcode, flags Flags, id uint64, payload []byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(payload))
	PutHeader(b, op, flags, id, payload)
	return append(b, payload...)
}

// reseal recomputes the header CRC after a test tampered with the header.
func reseal(f []byte) []byte {
	binary.LittleEndian.PutUint32(f[24:], Checksum(f[:24]))
	return f
}

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 1<<20)
	cases := []struct {
		name    string
		op      Opcode
		flags   Flags
		id      uint64
		payload []byte
	}{
		{"empty ping", OpPing, 0, 0, nil},
		{"request", OpFirstUser, 0, 1, []byte("hello")},
		{"response", 200, FlagResponse, 1<<64 - 1, []byte{0}},
		{"error reply", 17, FlagResponse | FlagError, 42, AppendErrorPayload(nil, 300, "nope")},
		{"1 MiB", 255, 0, 7, big},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := frame(tc.op, tc.flags, tc.id, tc.payload)
			fr := NewFrameReader(bytes.NewReader(f), 0, nil)
			h, p, err := fr.ReadFrame(nil)
			if err != nil {
				t.Fatal(err)
			}
			if h.Opcode != tc.op || h.Flags != tc.flags || h.ID != tc.id || !bytes.Equal(p, tc.payload) {
				t.Fatalf("got %+v", h)
			}
			var hb [HeaderSize]byte
			if !bytes.Equal(EncodeHeader(hb[:], h), f[:HeaderSize]) {
				t.Fatal("header does not re-encode to the same bytes")
			}
			if _, _, err := fr.ReadFrame(nil); err != io.EOF {
				t.Fatalf("want EOF, got %v", err)
			}
		})
	}
}

func TestDecodeHeaderRejects(t *testing.T) {
	good := frame(OpFirstUser, 0, 9, []byte("abc"))
	mut := func(f func(b []byte) []byte) []byte {
		c := append([]byte(nil), good...)
		return f(c)
	}
	cases := []struct {
		name  string
		in    []byte
		max   int
		want  error
		fatal bool
	}{
		{"short", good[:HeaderSize-1], 0, ErrShortHeader, true},
		{"bad magic", mut(func(b []byte) []byte { b[0] ^= 1; return reseal(b) }), 0, ErrBadMagic, true},
		{"bad version", mut(func(b []byte) []byte { b[4] = 9; return reseal(b) }), 0, ErrBadVersion, true},
		{"bad header crc", mut(func(b []byte) []byte { b[9] ^= 1; return b }), 0, ErrBadHeaderCRC, true},
		{"too large", mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 1<<31); return reseal(b) }), 0, ErrTooLarge, true},
		{"over configured max", good, 2, ErrTooLarge, true},
		{"reserved flag", mut(func(b []byte) []byte { b[7] = 0x80; return reseal(b) }), 0, ErrBadFlags, false},
		{"error without response", mut(func(b []byte) []byte { b[6] = byte(FlagError); return reseal(b) }), 0, ErrBadFlags, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeHeader(tc.in, tc.max)
			if err != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if Fatal(err) != tc.fatal {
				t.Fatalf("Fatal(%v) = %v", err, Fatal(err))
			}
		})
	}
}

func TestPayloadCRCAndTruncation(t *testing.T) {
	var c Counters
	f := frame(OpFirstUser, 0, 1, []byte("payload"))
	f[len(f)-1] ^= 0xff
	if _, _, err := NewFrameReader(bytes.NewReader(f), 0, &c).ReadFrame(nil); err != ErrBadPayloadCRC {
		t.Fatalf("got %v", err)
	}
	f = frame(OpFirstUser, 0, 1, []byte("payload"))
	if _, _, err := NewFrameReader(bytes.NewReader(f[:len(f)-2]), 0, &c).ReadFrame(nil); err != ErrTruncated {
		t.Fatalf("got %v", err)
	}
	if _, _, err := NewFrameReader(bytes.NewReader(f[:10]), 0, &c).ReadFrame(nil); err != ErrTruncated {
		t.Fatalf("got %v", err)
	}
	if c.BadPayloadCRC.Load() != 1 || c.Truncated.Load() != 2 {
		t.Fatalf("counters %d %d", c.BadPayloadCRC.Load(), c.Truncated.Load())
	}
}

// An oversized length is refused from the header alone: the reader neither
// allocates nor reads a payload byte.
func TestOversizeRefusedWithoutAllocation(t *testing.T) {
	f := frame(OpFirstUser, 0, 1, nil)
	binary.LittleEndian.PutUint32(f[16:], HardMaxPayload+1)
	reseal(f)
	r := &countingReader{r: io.MultiReader(bytes.NewReader(f), infiniteZeros{})}
	fr := NewFrameReader(r, 1<<20, nil)
	fr.alloc = func(n int) []byte { t.Fatalf("allocated %d", n); return nil }
	allocs := testing.AllocsPerRun(10, func() {
		r.n = 0
		r.r = io.MultiReader(bytes.NewReader(f), infiniteZeros{})
		if _, err := fr.ReadHeader(); err != ErrTooLarge {
			t.Fatal(err)
		}
	})
	if r.n != HeaderSize {
		t.Fatalf("read %d bytes, want only the header", r.n)
	}
	if allocs > 3 { // the MultiReader and its readers, built by the test itself
		t.Fatalf("%v allocations", allocs)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

type infiniteZeros struct{}

func (infiniteZeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

const fuzzMax = 1 << 16

func FuzzDecodeFrame(f *testing.F) {
	valid := frame(OpFirstUser, 0, 1, []byte("hello"))
	pipelined := append(append(frame(OpPing, 0, 2, nil), frame(20, FlagResponse, 3, bytes.Repeat([]byte{7}, 300))...), frame(21, FlagResponse|FlagError, 4, AppendErrorPayload(nil, 2, "x"))...)
	badMagic := append([]byte(nil), valid...)
	badMagic[1] = 0
	oversize := append([]byte(nil), valid...)
	binary.LittleEndian.PutUint32(oversize[16:], fuzzMax+1)
	reseal(oversize)
	badHCRC := append([]byte(nil), valid...)
	badHCRC[12] ^= 0x10
	badPCRC := append([]byte(nil), valid...)
	badPCRC[HeaderSize] ^= 1
	for _, s := range [][]byte{valid, pipelined, valid[:HeaderSize-3], valid[:HeaderSize+2], badMagic, oversize, badHCRC, badPCRC, nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Counters
		fr := NewFrameReader(bytes.NewReader(data), fuzzMax, &c)
		fr.alloc = func(n int) []byte {
			if n > fuzzMax {
				t.Fatalf("allocated %d > max %d", n, fuzzMax)
			}
			return make([]byte, n)
		}
		off := 0
		var hb [HeaderSize]byte
		for {
			h, p, err := fr.ReadFrame(nil)
			if err == io.EOF {
				if off != len(data) {
					t.Fatalf("EOF at %d of %d", off, len(data))
				}
				return
			}
			if err != nil {
				if !errors.Is(err, ErrBadFlags) && !errors.Is(err, ErrBadPayloadCRC) {
					return // the stream can't be re-framed: stop, as a connection would
				}
				off += HeaderSize + int(h.PayloadLen)
				continue
			}
			end := off + HeaderSize + len(p)
			re := append(PutHeader(hb[:], h.Opcode, h.Flags, h.ID, p), p...)
			if !bytes.Equal(re, data[off:end]) {
				t.Fatalf("accepted frame at %d does not re-encode to its bytes", off)
			}
			off = end
		}
	})
}
