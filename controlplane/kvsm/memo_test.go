package kvsm

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/hashicorp/raft"
)

// memoApplier runs commands of one-letter ops on keys of two bytes and, in
// every command, checks the memo's answers (GetPinned, AnyUnder) against
// what Get and Scan read from the state, answering "mismatch: ..." if they
// differ:
//
//	's' k v    set key k (2 bytes) to v (1 byte)
//	'd' k      delete k
//	'r' a b    delete the range [a, b) (1-byte bounds)
//	'c'        check every key and prefix
type memoApplier struct{ KV }

var memoKeys = func() (out [][]byte) {
	for _, p := range []byte("pqz") {
		for i := byte('0'); i < '4'; i++ {
			out = append(out, []byte{p, i})
		}
	}
	return out
}()

func (memoApplier) Apply(w *Writer, index uint64, cmd []byte) ([]byte, error) {
	for len(cmd) > 0 {
		var err error
		switch cmd[0] {
		case 's':
			err, cmd = w.Set(cmd[1:3], cmd[3:4]), cmd[4:]
		case 'd':
			err, cmd = w.Delete(cmd[1:3]), cmd[3:]
		case 'r':
			err, cmd = w.DeleteRange(cmd[1:2], cmd[2:3]), cmd[3:]
		case 'c':
			cmd = cmd[1:]
			if msg, err := memoCheck(w); err != nil || msg != "" {
				return []byte(msg), err
			}
		default:
			return nil, fmt.Errorf("op %q", cmd[0])
		}
		if err != nil {
			return nil, err
		}
	}
	return []byte("ok"), nil
}

func memoCheck(w *Writer) (string, error) {
	for _, k := range memoKeys[:len(memoKeys)-2] { // the last two stay unpinned
		pv, pf, err := w.GetPinned(k)
		if err != nil {
			return "", err
		}
		v, f, err := w.Get(k)
		if err != nil {
			return "", err
		}
		if pf != f || !bytes.Equal(pv, v) {
			return fmt.Sprintf("mismatch: %s pinned %q %v, state %q %v", k, pv, pf, v, f), nil
		}
	}
	for _, k := range memoKeys {
		if k[0] == 'z' {
			continue
		}
		may, err := w.MayHave(k[:1], k)
		if err != nil {
			return "", err
		}
		if _, f, err := w.Get(k); err != nil {
			return "", err
		} else if f && !may {
			return fmt.Sprintf("mismatch: %s present, MayHave says absent", k), nil
		} else if !f && may {
			return fmt.Sprintf("mismatch: %s absent, MayHave says it may be present", k), nil
		}
	}
	for _, p := range []string{"p", "q"} {
		any, err := w.AnyUnder([]byte(p))
		if err != nil {
			return "", err
		}
		n := 0
		if err := w.Scan([]byte(p), PrefixEnd([]byte(p)), func(_, _ []byte) bool { n++; return true }); err != nil {
			return "", err
		}
		if any != (n > 0) {
			return fmt.Sprintf("mismatch: AnyUnder(%s) %v with %d keys", p, any, n), nil
		}
	}
	return "", nil
}

// The memo follows every write (sets, deletes, range deletes, in one batch
// and across batches) and forgets what a restore replaced: checked against
// the state itself at random points of a random history.
func TestMemoFollowsState(t *testing.T) {
	st := openState(t, t.TempDir())
	defer st.Close()
	f, err := NewFSM(st, 4, memoApplier{})
	if err != nil {
		t.Fatal(err)
	}
	fs := fileSnapshots(t)
	rng := rand.New(rand.NewSource(5))
	var snapID string
	index, checks := uint64(0), 0
	for round := 0; round < 600; round++ {
		var logs []*raft.Log
		for n := 1 + rng.Intn(4); n > 0; n-- {
			var cmd []byte
			for ops := 1 + rng.Intn(4); ops > 0; ops-- {
				k := memoKeys[rng.Intn(len(memoKeys))]
				switch r := rng.Intn(20); {
				case r < 10:
					cmd = append(cmd, 's', k[0], k[1], byte('a'+rng.Intn(26)))
				case r < 17:
					cmd = append(cmd, 'd', k[0], k[1])
				case r < 18:
					a := "pqz"[rng.Intn(3)]
					cmd = append(cmd, 'r', a, a+1+byte(rng.Intn(2)))
				default:
					cmd = append(cmd, 'c')
				}
			}
			cmd = append(cmd, 'c')
			index++
			logs = append(logs, &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: cmd})
		}
		for i, out := range f.ApplyBatch(logs) {
			b, ok := out.([]byte)
			if !ok || string(b) != "ok" {
				t.Fatalf("round %d, index %d (%q): %v %s", round, logs[i].Index, logs[i].Data, out, b)
			}
			checks++
		}
		switch {
		case round%50 == 10:
			snapID = persist(t, f, fs, index)
		case round%50 == 40 && snapID != "":
			_, rc, err := fs.Open(snapID)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Restore(rc); err != nil {
				t.Fatal(err)
			}
			index = f.AppliedIndex()
		}
	}
	if checks < 1000 {
		t.Fatalf("only %d checked commands", checks)
	}
}

// memoWriter is a Writer on a fresh group's pending batch with that
// group's FSM memo, closed when the test ends.
func memoWriter(tb testing.TB) *Writer {
	tb.Helper()
	st, err := OpenState(tb.TempDir(), StateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	f, err := NewFSM(st, 1, memoApplier{})
	if err != nil {
		tb.Fatal(err)
	}
	batch := st.db.NewIndexedBatch()
	tb.Cleanup(func() { batch.Close() })
	return &Writer{b: batch, group: 1, m: &f.m}
}

// TestMemoSetBound: a set that outgrows maxSetKeys is dropped and its
// lookups answer conservatively (a key may be there) until a range delete
// lets it be rebuilt within the bound.
func TestMemoSetBound(t *testing.T) {
	defer func(n int) { maxSetKeys = n }(maxSetKeys)
	maxSetKeys = 4
	w := memoWriter(t)
	m := w.m
	q, absent := []byte("q"), []byte("qzz")
	may := func(k []byte) bool {
		t.Helper()
		m, err := w.MayHave(q, k)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if may(absent) {
		t.Fatal("empty set: an absent key may be there")
	}
	for i := 0; i < 6; i++ {
		if err := w.Set([]byte{'q', byte('0' + i)}, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if !may([]byte{'q', byte('0' + i)}) {
			t.Fatalf("key %d just set: MayHave says absent", i)
		}
	}
	if m.sets[0].keys != nil || !m.sets[0].over {
		t.Fatalf("6 keys under a bound of 4: the set holds %d keys, over=%v", len(m.sets[0].keys), m.sets[0].over)
	}
	if !may(absent) {
		t.Fatal("over the bound: an absent key answered surely absent")
	}
	if err := w.DeleteRange([]byte("q2"), []byte("q9")); err != nil {
		t.Fatal(err)
	}
	if may(absent) || !may([]byte("q1")) || may([]byte("q3")) {
		t.Fatal("rebuilt within the bound after the range delete: wrong answers")
	}
}

// Without the memo's answers the metadata state machine's create would read
// its counters, lock keys and request record from Pebble; this bounds what
// a pinned read and two set lookups cost.
func BenchmarkMemo(b *testing.B) {
	w := memoWriter(b)
	_ = w.Set([]byte("p0"), []byte("12345678"))
	p0, l, q, qk := []byte("p0"), []byte("l"), []byte("q"), []byte("q12345678")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := w.GetPinned(p0); err != nil {
			b.Fatal(err)
		}
		if _, err := w.AnyUnder(l); err != nil {
			b.Fatal(err)
		}
		if _, err := w.MayHave(q, qk); err != nil {
			b.Fatal(err)
		}
	}
}
