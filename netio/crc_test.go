package netio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

func TestCombineCRC(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<20+100)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for _, n := range []int{0, 1, 7, 24, 4096, 1 << 20, len(b)} {
		for _, split := range []int{0, 1, 8, 24, n / 2, n} {
			if split > n {
				continue
			}
			a, c := b[:split], b[split:n]
			if got, want := CombineCRC(Checksum(a), Checksum(c), len(c)), Checksum(b[:n]); got != want {
				t.Fatalf("n %d split %d: combined %#x, want %#x", n, split, got, want)
			}
		}
	}
}

func TestCallUnverified(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	addr := s.Addr().String()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 13)
	}
	resp := make([]byte, 0, len(want))
	got, crc, err := c.CallUnverified(context.Background(), addr, opEcho, want, resp, true)
	if err != nil || !bytes.Equal(got, want) || &got[0] != &resp[:1][0] {
		t.Fatalf("len %d err %v (or not read into the caller's buffer)", len(got), err)
	}
	if crc != Checksum(want) {
		t.Fatalf("payload CRC %#x, want %#x", crc, Checksum(want))
	}
	// Error replies are checked and parsed as by Call.
	_, _, err = c.CallUnverified(context.Background(), addr, opFail, []byte("x"), nil, true)
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "boom: x" {
		t.Fatalf("got %v", err)
	}
	// A call made afterwards on the same pooled call state verifies again.
	if _, err := c.Call(context.Background(), addr, opEcho, want, nil, false); err != nil {
		t.Fatal(err)
	}
}

// TestCallUnverifiedReturnsSentCRC: the CRC returned is the one the frame
// carried, so a payload damaged on the way fails the caller's check.
func TestCallUnverifiedReturnsSentCRC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fr := NewFrameReader(conn, 0, nil)
		h, p, err := fr.ReadFrame(nil)
		if err != nil {
			return
		}
		hdr := PutHeader(make([]byte, HeaderSize), h.Opcode, FlagResponse, h.ID, p)
		damaged := append([]byte(nil), p...)
		damaged[3] ^= 0x10
		_, _ = conn.Write(append(hdr, damaged...))
		_, _ = io.Copy(io.Discard, conn)
	}()
	c := newClient(t, ClientOptions{})
	payload := []byte("end-to-end checked bytes")
	got, crc, err := c.CallUnverified(context.Background(), ln.Addr().String(), opEcho, payload, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if crc != Checksum(payload) || Checksum(got) == crc {
		t.Fatalf("returned CRC %#x; sent %#x; the damaged payload's %#x", crc, Checksum(payload), Checksum(got))
	}
	if CombineCRC(Checksum(got[:5]), Checksum(got[5:]), len(got)-5) == crc {
		t.Fatal("the damaged payload passed the combined check")
	}
}

// TestCallParts: a payload sent in two parts arrives joined, small (one
// write) or large (writev), with the frame CRC made from the body's; a
// wrong body CRC gets the frame refused, not its bytes served.
func TestCallParts(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	addr := s.Addr().String()
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 1000, 64 << 10, 1 << 20} {
		head := []byte("a 32-byte request header.......+")
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(r.Uint32())
		}
		got, err := c.CallParts(context.Background(), addr, opEcho, head, body, Checksum(body), nil, true)
		if err != nil || !bytes.Equal(got, append(append([]byte(nil), head...), body...)) {
			t.Fatalf("n %d: %d bytes back, %v", n, len(got), err)
		}
		if _, err := c.CallParts(context.Background(), addr, opEcho, head, body, Checksum(body)^1, nil, false); err == nil {
			t.Fatalf("n %d: a wrong body CRC was accepted", n)
		}
	}
	if got, err := c.Call(context.Background(), addr, opEcho, []byte("still framed"), nil, false); err != nil || string(got) != "still framed" {
		t.Fatalf("%q %v", got, err)
	}
}
