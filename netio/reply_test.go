package netio

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// partsHandler answers every request, from another goroutine, with
// ReplyParts: a 3-byte prefix, the request payload split in two, and a
// 2-byte suffix, each from its own buffer.
type partsHandler struct{ done atomic.Int64 }

func (h *partsHandler) Serve(r *Request) {
	go func() {
		half := len(r.Payload) / 2
		copy(r.Scratch[:3], "pre")
		err := r.ReplyParts(func(error) { h.done.Add(1) }, r.Scratch[:3], r.Payload[:half], r.Payload[half:], []byte("!!"))
		if err != nil {
			panic(err)
		}
	}()
}

// TestReplyParts checks that a reply gathered from several slices arrives
// whole, with a payload CRC the client verifies, and that a second reply
// and one of too many parts are refused.
func TestReplyParts(t *testing.T) {
	h := &partsHandler{}
	s := NewServer(ServerOptions{Addr: "127.0.0.1:0", EventLoops: 1}, h)
	if err := s.Register(opEcho); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	c := newClient(t, ClientOptions{})
	for _, n := range []int{0, 1, 4096, 200 << 10} {
		p := bytes.Repeat([]byte{byte(n)}, n)
		resp, err := c.Call(context.Background(), s.Addr().String(), opEcho, p, nil, false)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		want := append(append([]byte("pre"), p...), "!!"...)
		if !bytes.Equal(resp, want) {
			t.Fatalf("%d bytes: reply of %d bytes, want %d", n, len(resp), len(want))
		}
	}
	if got := h.done.Load(); got != 4 {
		t.Errorf("%d done callbacks, want 4", got)
	}

	r := &Request{srv: s}
	r.replied.Store(true)
	if err := r.ReplyParts(nil, []byte("x")); err != ErrAlreadyReplied {
		t.Errorf("second reply: %v, want ErrAlreadyReplied", err)
	}
	if err := (&Request{srv: s}).ReplyParts(nil, make([][]byte, MaxReplyParts+1)...); err != ErrTooManyParts {
		t.Errorf("%d parts: %v, want ErrTooManyParts", MaxReplyParts+1, err)
	}
}

// TestReplyAfterClose checks that replies made after their connection
// closed — queued before the close, or made after it — complete with an
// error (their done callbacks run, the server's in-flight count returns to
// zero) instead of waiting forever for an event loop.
func TestReplyAfterClose(t *testing.T) {
	s, h := startServer(t, ServerOptions{EventLoops: 1})
	c := NewClient(ClientOptions{ConnsPerAddr: 1})
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Call(context.Background(), s.Addr().String(), opHold, []byte("x"), nil, false)
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.heldCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests held", h.heldCount(), n)
		}
		time.Sleep(time.Millisecond)
	}
	_ = c.Close()
	wg.Wait()
	time.Sleep(50 * time.Millisecond) // let the server see the close
	h.mu.Lock()
	held := h.held
	h.held = nil
	h.mu.Unlock()
	var done atomic.Int64
	for i, r := range held {
		if i%2 == 0 {
			runtime.Gosched()
		}
		_ = r.Reply(r.Payload, func(error) { done.Add(1) })
	}
	for s.InFlight() != 0 || done.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still in flight, %d of %d done callbacks", s.InFlight(), done.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAllocsPerCall bounds the allocations of a 4 KiB echo, client and
// server together, with 32 calls in flight: replies are written in
// batches, and only a batch's wakeup of the event loop allocates.
func TestAllocsPerCall(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures allocations over many calls (the race detector adds its own)")
	}
	s, _ := startServer(t, ServerOptions{EventLoops: 1})
	c := newClient(t, ClientOptions{ConnsPerAddr: 2})
	addr := s.Addr().String()
	payload := make([]byte, 4096)
	run := func(calls int) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp := make([]byte, 0, len(payload))
				for next.Add(1) <= int64(calls) {
					if _, err := c.Call(context.Background(), addr, opEcho, payload, resp, false); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	run(2000) // warm pools and connections
	const calls = 20000
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	run(calls)
	runtime.ReadMemStats(&m1)
	// The goroutines of run itself: 32 of them, their closures and buffers.
	perCall := float64(m1.Mallocs-m0.Mallocs-32*4) / calls
	t.Logf("%.3f allocations per call, client and server", perCall)
	if perCall > 1 {
		t.Errorf("%.3f allocations per call, want at most 1", perCall)
	}
}
