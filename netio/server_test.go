package netio

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	opEcho  Opcode = OpFirstUser
	opFail  Opcode = OpFirstUser + 1
	opHold  Opcode = OpFirstUser + 2
	opUnreg Opcode = 99
)

// testHandler answers from worker goroutines, as a storage core would:
// opEcho echoes the request payload (writev from the request's own buffer),
// opFail answers with an error reply, opHold parks the request until
// release is called.
type testHandler struct {
	work    chan *Request
	mu      sync.Mutex
	held    []*Request
	served  atomic.Int64
	stopped chan struct{}
}

func newTestHandler(workers int) *testHandler {
	h := &testHandler{work: make(chan *Request, 4096), stopped: make(chan struct{})}
	for range workers {
		go func() {
			for {
				select {
				case r := <-h.work:
					h.answer(r)
				case <-h.stopped:
					return
				}
			}
		}()
	}
	return h
}

func (h *testHandler) Serve(r *Request) {
	h.served.Add(1)
	if r.Opcode == opHold {
		h.mu.Lock()
		h.held = append(h.held, r)
		h.mu.Unlock()
		return
	}
	h.work <- r
}

func (h *testHandler) answer(r *Request) {
	switch r.Opcode {
	case opFail:
		_ = r.ReplyError(CodeFirstUser+7, "boom: "+string(r.Payload))
	default:
		_ = r.Reply(r.Payload, nil)
	}
}

func (h *testHandler) heldCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

func (h *testHandler) release() {
	h.mu.Lock()
	held := h.held
	h.held = nil
	h.mu.Unlock()
	for _, r := range held {
		_ = r.Reply(r.Payload, nil)
	}
}

func startServer(t testing.TB, opts ServerOptions) (*Server, *testHandler) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	h := newTestHandler(2)
	s := NewServer(opts, h)
	if err := s.Register(opEcho, opFail, opHold); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.release()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		close(h.stopped)
	})
	return s, h
}

func newClient(t testing.TB, opts ClientOptions) *Client {
	c := NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConcurrentCalls(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{ConnsPerAddr: 3})
	addr := s.Addr().String()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 256)
			for i := range 300 {
				want := fmt.Appendf(nil, "g%d-call%d-%s", g, i, bytes.Repeat([]byte{'x'}, i%97))
				got, err := c.Call(context.Background(), addr, opEcho, want, buf, false)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("g%d call %d: %q %v", g, i, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestPing(t *testing.T) {
	s, h := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	got, err := c.Call(context.Background(), s.Addr().String(), OpPing, []byte("are you there"), nil, true)
	if err != nil || string(got) != "are you there" {
		t.Fatalf("%q %v", got, err)
	}
	if h.served.Load() != 0 {
		t.Fatal("ping reached the handler")
	}
}

// rawConn is a bare TCP connection for sending hand-made bytes.
func rawConn(t *testing.T, s *Server) (net.Conn, *FrameReader) {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc, NewFrameReader(nc, 0, nil)
}

func TestPipelinedFramesInOneWrite(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	nc, fr := rawConn(t, s)
	var batch []byte
	const n = 64
	for i := range n {
		batch = append(batch, frame(opEcho, 0, uint64(i+1), fmt.Appendf(nil, "req %d", i+1))...)
	}
	// One write of all frames, then the same again dribbled a byte at a
	// time so that frames are split across reads.
	if _, err := nc.Write(batch); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for range n {
		h, p, err := fr.ReadFrame(nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.Flags != FlagResponse || string(p) != fmt.Sprintf("req %d", h.ID) || seen[h.ID] {
			t.Fatalf("bad response %+v %q", h, p)
		}
		seen[h.ID] = true
	}
	one := frame(opEcho, 0, 1000, []byte("dribbled"))
	for i := range one {
		if _, err := nc.Write(one[i : i+1]); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	h, p, err := fr.ReadFrame(nil)
	if err != nil || h.ID != 1000 || string(p) != "dribbled" {
		t.Fatalf("%+v %q %v", h, p, err)
	}
}

func TestLargePayload(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	resp := make([]byte, 0, 4<<20)
	for range 3 {
		got, err := c.Call(context.Background(), s.Addr().String(), opEcho, want, resp, false)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("len %d err %v", len(got), err)
		}
		if &got[0] != &resp[:1][0] {
			t.Fatal("response not read into the caller's buffer")
		}
	}
}

func TestDeadlineExpiry(t *testing.T) {
	s, h := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{ConnsPerAddr: 1})
	addr := s.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, addr, opHold, []byte("x"), nil, false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	h.release() // the late response must be dropped, the connection go on
	got, err := c.Call(context.Background(), addr, opEcho, []byte("after"), nil, false)
	if err != nil || string(got) != "after" {
		t.Fatalf("%q %v", got, err)
	}
	waitFor(t, func() bool { return c.Counters.UnknownResponse.Load() == 1 })
}

func TestAttemptTimeoutRetriesIdempotent(t *testing.T) {
	s, h := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{AttemptTimeout: 20 * time.Millisecond, MaxRetries: 2})
	_, err := c.Call(context.Background(), s.Addr().String(), opHold, nil, nil, true)
	if !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("got %v", err)
	}
	if n := h.served.Load(); n != 3 {
		t.Fatalf("served %d attempts, want 3", n)
	}
	_, err = c.Call(context.Background(), s.Addr().String(), opHold, nil, nil, false)
	if !errors.Is(err, ErrAttemptTimeout) || h.served.Load() != 4 {
		t.Fatalf("non-idempotent: %v after %d", err, h.served.Load())
	}
}

func TestServerErrorReplies(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	addr := s.Addr().String()
	_, err := c.Call(context.Background(), addr, opFail, []byte("disk on fire"), nil, true)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeFirstUser+7 || re.Message != "boom: disk on fire" {
		t.Fatalf("got %v", err)
	}
	_, err = c.Call(context.Background(), addr, opUnreg, nil, nil, true)
	if !errors.As(err, &re) || re.Code != CodeUnknownOpcode {
		t.Fatalf("got %v", err)
	}
	if s.Counters.UnknownOpcode.Load() != 1 {
		t.Fatal("unknown opcode not counted")
	}
	// The connection is still good.
	if got, err := c.Call(context.Background(), addr, opEcho, []byte("ok"), nil, false); err != nil || string(got) != "ok" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestMalformedFramesIsolated(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c := newClient(t, ClientOptions{})
	addr := s.Addr().String()
	stop := make(chan struct{})
	var good atomic.Int64
	var bgErr atomic.Value
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Call(context.Background(), addr, opEcho, []byte("bg"), nil, false); err != nil {
				bgErr.Store(err)
				return
			}
			good.Add(1)
		}
	}()
	defer close(stop)

	// Recoverable: bad payload CRC gets an error reply; the connection goes on.
	nc, fr := rawConn(t, s)
	f := frame(opEcho, 0, 5, []byte("payload"))
	f[HeaderSize] ^= 1
	nc.Write(f)
	h, p, err := fr.ReadFrame(nil)
	if err != nil || h.Flags != FlagResponse|FlagError || h.ID != 5 || ParseErrorPayload(p).Code != CodeBadPayloadCRC {
		t.Fatalf("%+v %q %v", h, p, err)
	}
	nc.Write(frame(OpPing, 0, 6, []byte("still here")))
	if h, p, err = fr.ReadFrame(nil); err != nil || h.ID != 6 || string(p) != "still here" {
		t.Fatalf("%+v %q %v", h, p, err)
	}
	// A request with the response bit set is refused the same way.
	nc.Write(frame(opEcho, FlagResponse, 7, nil))
	if h, p, err = fr.ReadFrame(nil); err != nil || ParseErrorPayload(p).Code != CodeBadFlags {
		t.Fatalf("%+v %q %v", h, p, err)
	}

	// Fatal: bad magic and bad header CRC close the connection.
	for _, mangle := range []func([]byte){
		func(b []byte) { b[0] = 'X'; reseal(b) },
		func(b []byte) { b[10] ^= 0xff },
	} {
		nc, _ := rawConn(t, s)
		f := frame(opEcho, 0, 1, []byte("zz"))
		mangle(f)
		nc.Write(f)
		if n, err := nc.Read(make([]byte, 64)); err != io.EOF {
			t.Fatalf("want EOF, got %d %v", n, err)
		}
	}
	if s.Counters.BadMagic.Load() != 1 || s.Counters.BadHeaderCRC.Load() != 1 || s.Counters.BadPayloadCRC.Load() != 1 || s.Counters.BadFlags.Load() != 1 {
		t.Fatal("bad input not counted")
	}
	time.Sleep(20 * time.Millisecond)
	if err, _ := bgErr.Load().(error); err != nil {
		t.Fatalf("healthy connection disturbed: %v", err)
	}
	if good.Load() == 0 {
		t.Fatal("healthy connection made no progress")
	}
}

func TestOversizeLengthRefused(t *testing.T) {
	s, h := startServer(t, ServerOptions{MaxPayload: 1 << 20})
	nc, fr := rawConn(t, s)
	f := frame(opEcho, 0, 77, nil)
	binary.LittleEndian.PutUint32(f[16:], 1<<30) // 1 GiB, never sent
	reseal(f)
	nc.Write(f)
	hd, p, err := fr.ReadFrame(nil)
	if err != nil || hd.ID != 77 || ParseErrorPayload(p).Code != CodeTooLarge {
		t.Fatalf("%+v %q %v", hd, p, err)
	}
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want close, got %v", err)
	}
	if s.Counters.TooLarge.Load() != 1 || h.served.Load() != 0 {
		t.Fatal("oversize not refused")
	}
}

func TestBackPressure(t *testing.T) {
	s, h := startServer(t, ServerOptions{MaxInFlightPerConn: 4})
	nc, fr := rawConn(t, s)
	var batch []byte
	for i := range 10 {
		batch = append(batch, frame(opHold, 0, uint64(i+1), nil)...)
	}
	nc.Write(batch)
	waitFor(t, func() bool { return h.heldCount() == 4 })
	time.Sleep(20 * time.Millisecond)
	if n := h.heldCount(); n != 4 {
		t.Fatalf("%d requests dispatched past the window of 4", n)
	}
	for got := 0; got < 10; {
		h.release()
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			if _, _, err := fr.ReadFrame(nil); err != nil {
				break
			}
			got++
		}
	}
}

func TestRetryOnBrokenConnection(t *testing.T) {
	// A fake server that drops the first connection after reading one
	// request and echoes on later ones.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	var mu sync.Mutex
	seen := map[string]bool{}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer nc.Close()
				fr := NewFrameReader(nc, 0, nil)
				for {
					h, p, err := fr.ReadFrame(nil)
					if err != nil {
						return
					}
					mu.Lock()
					first := !seen[string(p)]
					seen[string(p)] = true
					mu.Unlock()
					if first {
						return // drop the connection the first time a payload is seen
					}
					nc.Write(frame(h.Opcode, FlagResponse, h.ID, p))
				}
			}()
		}
	}()
	c := newClient(t, ClientOptions{ConnsPerAddr: 1, BackoffBase: time.Millisecond})
	got, err := c.Call(context.Background(), ln.Addr().String(), opEcho, []byte("again"), nil, true)
	if err != nil || string(got) != "again" {
		t.Fatalf("%q %v", got, err)
	}
	if conns.Load() != 2 {
		t.Fatalf("%d connections", conns.Load())
	}
	// Non-idempotent: the broken connection is reported, not retried.
	_, err = c.Call(context.Background(), ln.Addr().String(), opEcho, []byte("once"), nil, false)
	if !errors.Is(err, ErrConnBroken) {
		t.Fatalf("got %v", err)
	}
	// ...and the next call reconnects.
	if got, err := c.Call(context.Background(), ln.Addr().String(), opEcho, []byte("once"), nil, false); err != nil || string(got) != "once" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestGracefulStopDrains(t *testing.T) {
	h := newTestHandler(2)
	defer close(h.stopped)
	s := NewServer(ServerOptions{Addr: "127.0.0.1:0", EventLoops: 2}, h)
	s.Register(opEcho, opHold)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, ClientOptions{})
	const n = 20
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(context.Background(), s.Addr().String(), opHold, []byte("p"), nil, false); err == nil {
				ok.Add(1)
			}
		}()
	}
	waitFor(t, func() bool { return h.heldCount() == n })
	go func() { time.Sleep(50 * time.Millisecond); h.release() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if ok.Load() != n || s.InFlight() != 0 {
		t.Fatalf("%d of %d calls completed, %d in flight", ok.Load(), n, s.InFlight())
	}
}

func TestStopDeadline(t *testing.T) {
	h := newTestHandler(1)
	defer close(h.stopped)
	s := NewServer(ServerOptions{Addr: "127.0.0.1:0", EventLoops: 1}, h)
	s.Register(opHold)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, ClientOptions{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), s.Addr().String(), opHold, nil, nil, false)
		done <- err
	}()
	waitFor(t, func() bool { return h.heldCount() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if err := <-done; !errors.Is(err, ErrConnBroken) {
		t.Fatalf("call got %v", err)
	}
	h.release() // replying after Stop must neither block nor panic
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
