package membership

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, id string) *Membership {
	t.Helper()
	// memberlist's goroutines may still log after the test ends (they are shut down,
	// not joined): t.Logf would panic then.
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	logf := func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(f, a...)
		}
	}
	m, err := Start(Config{NodeID: id, Bind: "127.0.0.1:0", Meta: Meta{ClientAddr: "127.0.0.1:9" + id[len(id)-1:]}, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitAlive(t *testing.T, m *Membership, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ch := m.Changed()
		if n := len(m.Alive()); n == want {
			return time.Since(start)
		}
		select {
		case <-ch:
		case <-time.After(within - time.Since(start)):
			t.Fatalf("alive %v after %v, want %d members", m.Alive(), within, want)
		}
	}
}

func TestDeadNodeDetected(t *testing.T) {
	var ms []*Membership
	for i := 1; i <= 3; i++ {
		ms = append(ms, start(t, fmt.Sprintf("node-%d", i)))
	}
	defer func() {
		for _, m := range ms[:2] {
			_ = m.Shutdown()
		}
	}()
	for _, m := range ms[1:] {
		if _, err := m.Join([]string{ms[0].Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		waitAlive(t, m, 3, 5*time.Second)
	}
	if got := ms[0].Alive()["node-3"].Meta.ClientAddr; got != "127.0.0.1:93" {
		t.Fatalf("node-3's meta as node-1 sees it: client addr %q", got)
	}
	// A crash: node-3 stops answering without saying goodbye.
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	took := waitAlive(t, ms[0], 2, 5*time.Second)
	t.Logf("node-3 declared dead after %v", took)
	if _, ok := ms[1].Alive()["node-3"]; ok {
		waitAlive(t, ms[1], 2, 2*time.Second)
	}
}

func TestBadBind(t *testing.T) {
	if _, err := Start(Config{NodeID: "x", Bind: "nonsense"}); err == nil {
		t.Fatal("bad bind address accepted")
	}
}
