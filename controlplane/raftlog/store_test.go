package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

func openTest(t *testing.T, dir string, combining bool) *Store {
	t.Helper()
	s, err := Open(dir, Options{WriteCombining: combining})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustGroup(t *testing.T, s *Store, id uint32) *Group {
	t.Helper()
	g, err := s.Group(id)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func testLog(idx uint64) *raft.Log {
	return &raft.Log{
		Index:      idx,
		Term:       idx/10 + 1,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", idx)),
		Extensions: []byte{byte(idx)},
		AppendedAt: time.Unix(1700000000, int64(idx)),
	}
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func bounds(t *testing.T, g *Group) (uint64, uint64) {
	t.Helper()
	f, err := g.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := g.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return f, l
}

func forBothModes(t *testing.T, f func(t *testing.T, combining bool)) {
	for _, c := range []bool{false, true} {
		t.Run(fmt.Sprintf("combining=%v", c), func(t *testing.T) { f(t, c) })
	}
}

// The LogStore contract as hashicorp's stores are tested: empty indexes,
// round trips of every field, not-found, ranges deleted from either end.
func TestLogStoreBehaviour(t *testing.T) {
	forBothModes(t, func(t *testing.T, combining bool) {
		s := openTest(t, t.TempDir(), combining)
		defer s.Close()
		g := mustGroup(t, s, 7)

		if f, l := bounds(t, g); f != 0 || l != 0 {
			t.Fatalf("empty group: first %d last %d, want 0 0", f, l)
		}
		var got raft.Log
		if err := g.GetLog(1, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog on empty group: %v, want ErrLogNotFound", err)
		}

		// One entry, every field, including the zero time.
		zero := &raft.Log{Index: 1, Term: 1, Type: raft.LogNoop}
		if err := g.StoreLog(zero); err != nil {
			t.Fatal(err)
		}
		if err := g.GetLog(1, &got); err != nil {
			t.Fatal(err)
		}
		if !sameLog(&got, zero) || !got.AppendedAt.IsZero() || got.Data != nil {
			t.Fatalf("round trip: got %+v, want %+v", got, zero)
		}

		var batch []*raft.Log
		for i := uint64(2); i <= 100; i++ {
			batch = append(batch, testLog(i))
		}
		if err := g.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
		if f, l := bounds(t, g); f != 1 || l != 100 {
			t.Fatalf("after 100: first %d last %d", f, l)
		}
		for _, want := range batch {
			if err := g.GetLog(want.Index, &got); err != nil {
				t.Fatal(err)
			}
			if !sameLog(&got, want) {
				t.Fatalf("index %d: got %+v want %+v", want.Index, got, want)
			}
		}

		// Prefix compaction.
		if err := g.DeleteRange(1, 40); err != nil {
			t.Fatal(err)
		}
		if f, l := bounds(t, g); f != 41 || l != 100 {
			t.Fatalf("after prefix delete: first %d last %d, want 41 100", f, l)
		}
		if err := g.GetLog(40, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("deleted entry: %v", err)
		}
		// Suffix truncation, then overwrite with a new term.
		if err := g.DeleteRange(91, 100); err != nil {
			t.Fatal(err)
		}
		if f, l := bounds(t, g); f != 41 || l != 90 {
			t.Fatalf("after suffix delete: first %d last %d, want 41 90", f, l)
		}
		over := testLog(91)
		over.Term = 99
		if err := g.StoreLog(over); err != nil {
			t.Fatal(err)
		}
		if err := g.GetLog(91, &got); err != nil || got.Term != 99 {
			t.Fatalf("overwrite: %v term %d", err, got.Term)
		}
		// A gap after a snapshot is allowed.
		if err := g.StoreLog(testLog(500)); err != nil {
			t.Fatal(err)
		}
		if f, l := bounds(t, g); f != 41 || l != 500 {
			t.Fatalf("after gap: first %d last %d", f, l)
		}
		// Delete everything.
		if err := g.DeleteRange(0, ^uint64(0)); err != nil {
			t.Fatal(err)
		}
		if f, l := bounds(t, g); f != 0 || l != 0 {
			t.Fatalf("after delete all: first %d last %d", f, l)
		}
		if err := g.DeleteRange(10, 5); err != nil {
			t.Fatalf("empty range: %v", err)
		}
	})
}

func TestStableStoreBehaviour(t *testing.T) {
	s := openTest(t, t.TempDir(), false)
	defer s.Close()
	g := mustGroup(t, s, 1)
	v, err := g.Get([]byte("missing"))
	if err != nil || len(v) != 0 {
		t.Fatalf("missing key: %q %v", v, err)
	}
	u, err := g.GetUint64([]byte("missing"))
	if err != nil || u != 0 {
		t.Fatalf("missing uint64: %d %v", u, err)
	}
	if err := g.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	if err := g.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.Get([]byte("LastVoteCand")); string(v) != "node-2" {
		t.Fatalf("Get: %q", v)
	}
	if u, _ := g.GetUint64([]byte("CurrentTerm")); u != 42 {
		t.Fatalf("GetUint64: %d", u)
	}
	if _, err := g.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 6-byte value: %v, want ErrCorrupt", err)
	}
}

// Groups share one Pebble but never see each other's keys, including the
// highest group id whose upper bound wraps.
func TestGroupsIsolated(t *testing.T) {
	s := openTest(t, t.TempDir(), true)
	defer s.Close()
	ids := []uint32{0, 1, 2, 1 << 16, ^uint32(0) - 1, ^uint32(0)}
	for n, id := range ids {
		g := mustGroup(t, s, id)
		var logs []*raft.Log
		for i := uint64(1); i <= uint64(n+1)*3; i++ {
			logs = append(logs, testLog(i))
		}
		if err := g.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		if err := g.SetUint64([]byte("CurrentTerm"), uint64(id)); err != nil {
			t.Fatal(err)
		}
	}
	mustGroup(t, s, 1).DeleteRange(0, ^uint64(0))
	for n, id := range ids {
		g := mustGroup(t, s, id)
		want := uint64(n+1) * 3
		if id == 1 {
			want = 0
		}
		if _, l := bounds(t, g); l != want {
			t.Errorf("group %d: last %d, want %d", id, l, want)
		}
		if u, _ := g.GetUint64([]byte("CurrentTerm")); u != uint64(id) {
			t.Errorf("group %d: term %d", id, u)
		}
	}
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false)
	g := mustGroup(t, s, 3)
	var logs []*raft.Log
	for i := uint64(10); i <= 20; i++ {
		logs = append(logs, testLog(i))
	}
	if err := g.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := g.SetUint64([]byte("CurrentTerm"), 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.StoreLog(testLog(21)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLog after Close: %v", err)
	}
	if _, err := s.Group(4); !errors.Is(err, ErrClosed) {
		t.Fatalf("Group after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openTest(t, dir, true)
	defer s.Close()
	g = mustGroup(t, s, 3)
	if f, l := bounds(t, g); f != 10 || l != 20 {
		t.Fatalf("reopened: first %d last %d", f, l)
	}
	var got raft.Log
	if err := g.GetLog(15, &got); err != nil || !sameLog(&got, testLog(15)) {
		t.Fatalf("reopened GetLog: %v %+v", err, got)
	}
	if u, _ := g.GetUint64([]byte("CurrentTerm")); u != 5 {
		t.Fatalf("reopened term %d", u)
	}
}

func TestLimits(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxEntryBytes: 100, MaxEntriesPerCall: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := mustGroup(t, s, 1)
	big := &raft.Log{Index: 1, Term: 1, Data: make([]byte, 101)}
	if err := g.StoreLog(big); err == nil {
		t.Fatal("entry over MaxEntryBytes accepted")
	}
	var many []*raft.Log
	for i := uint64(1); i <= 5; i++ {
		many = append(many, testLog(i))
	}
	if err := g.StoreLogs(many); err == nil {
		t.Fatal("call over MaxEntriesPerCall accepted")
	}
	if err := g.StoreLog(&raft.Log{Index: 0, Term: 1}); err == nil {
		t.Fatal("index 0 accepted")
	}
	if _, l := bounds(t, g); l != 0 {
		t.Fatalf("refused calls stored something: last %d", l)
	}
	if _, err := Open(t.TempDir(), Options{QueueDepth: -1}); err == nil {
		t.Fatal("negative QueueDepth accepted")
	}
}

// A value damaged on disk is reported as corruption, never returned.
func TestCorruptEntryDetected(t *testing.T) {
	s := openTest(t, t.TempDir(), false)
	defer s.Close()
	g := mustGroup(t, s, 9)
	if err := g.StoreLog(testLog(1)); err != nil {
		t.Fatal(err)
	}
	v, closer, err := s.db.Get(logKey(nil, 9, 1))
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), v...)
	closer.Close()
	bad[len(bad)-3] ^= 0x40
	if err := s.db.Set(logKey(nil, 9, 1), bad, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// And a valid value stored under the wrong index.
	good := appendEntry(nil, testLog(3))
	if err := s.db.Set(logKey(nil, 9, 2), good, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := g.GetLog(1, &got); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped bit: %v, want ErrCorrupt", err)
	}
	if err := g.GetLog(2, &got); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong index: %v, want ErrCorrupt", err)
	}
}

// Many groups append concurrently; every entry is there afterwards, and
// with write combining calls share commits.
func TestConcurrentGroups(t *testing.T) {
	const groups, perGroup, perCall = 48, 30, 3
	forBothModes(t, func(t *testing.T, combining bool) {
		s := openTest(t, t.TempDir(), combining)
		defer s.Close()
		var wg sync.WaitGroup
		errs := make(chan error, groups)
		for gid := uint32(0); gid < groups; gid++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := s.Group(gid)
				if err != nil {
					errs <- err
					return
				}
				for i := uint64(1); i <= perGroup; i += perCall {
					var logs []*raft.Log
					for j := i; j < i+perCall; j++ {
						l := testLog(j)
						l.Data = fmt.Appendf(nil, "g%d-%d", gid, j)
						logs = append(logs, l)
					}
					if err := g.StoreLogs(logs); err != nil {
						errs <- err
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
		for gid := uint32(0); gid < groups; gid++ {
			g := mustGroup(t, s, gid)
			if f, l := bounds(t, g); f != 1 || l != perGroup {
				t.Fatalf("group %d: first %d last %d", gid, f, l)
			}
			var got raft.Log
			for j := uint64(1); j <= perGroup; j++ {
				if err := g.GetLog(j, &got); err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("g%d-%d", gid, j); string(got.Data) != want {
					t.Fatalf("group %d index %d: %q want %q", gid, j, got.Data, want)
				}
			}
		}
		st := s.Stats()
		calls := uint64(groups * perGroup / perCall)
		if st.Calls != calls || st.Entries != groups*perGroup {
			t.Fatalf("stats %+v, want %d calls", st, calls)
		}
		t.Logf("combining=%v: %d calls in %d synced commits (%.1f calls per commit)",
			combining, st.Calls, st.Commits, float64(st.Calls)/float64(st.Commits))
		if combining && st.Commits >= st.Calls {
			t.Fatalf("write combining on, %d writers at once, yet %d commits for %d calls", groups, st.Commits, st.Calls)
		}
		if !combining && st.Commits != st.Calls {
			t.Fatalf("write combining off: %d commits for %d calls", st.Commits, st.Calls)
		}
	})
}

// A combined round never exceeds MaxBatchCalls or MaxBatchBytes (except
// a single oversized call, which goes alone).
func TestCombiningBounds(t *testing.T) {
	s, err := Open(t.TempDir(), Options{WriteCombining: true, MaxBatchCalls: 2, MaxBatchBytes: 4096, QueueDepth: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for gid := uint32(0); gid < 16; gid++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, _ := s.Group(gid)
			for i := uint64(1); i <= 5; i++ {
				l := testLog(i)
				if gid%4 == 0 {
					l.Data = make([]byte, 6000) // over MaxBatchBytes alone
				}
				if err := g.StoreLog(l); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Calls != 80 {
		t.Fatalf("calls %d", st.Calls)
	}
	if st.Commits < st.Calls/2 {
		t.Fatalf("%d commits for %d calls: some round held more than MaxBatchCalls=2", st.Commits, st.Calls)
	}
}
