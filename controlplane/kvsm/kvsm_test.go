package kvsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func openState(t *testing.T, dir string) *State {
	t.Helper()
	st, err := OpenState(dir, StateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newFSM(t *testing.T, st *State, group uint32) *FSM {
	t.Helper()
	f, err := NewFSM(st, group, KV{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func cmdLog(t *testing.T, index uint64, ops ...Op) *raft.Log {
	t.Helper()
	b, err := EncodeCommand(ops...)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}
}

func applyOne(t *testing.T, f *FSM, l *raft.Log) *Result {
	t.Helper()
	out := f.ApplyBatch([]*raft.Log{l})[0]
	b, ok := out.([]byte)
	if !ok {
		t.Fatalf("index %d: response %v", l.Index, out)
	}
	r, err := DecodeResult(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func get(t *testing.T, f *FSM, key string) Item {
	t.Helper()
	q, _ := EncodeGet([]byte(key))
	a, err := KV{}.Query(f.Reader(), q)
	if err != nil {
		t.Fatal(err)
	}
	it, err := DecodeGet(a)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func TestKVCommands(t *testing.T) {
	st := openState(t, t.TempDir())
	defer st.Close()
	f := newFSM(t, st, 1)

	r := applyOne(t, f, cmdLog(t, 1, Put([]byte("a"), []byte("1"))))
	if !r.OK || r.Version != 1 || r.Existed[0] {
		t.Fatalf("put: %+v", r)
	}
	if it := get(t, f, "a"); !it.Found || it.Version != 1 || string(it.Value) != "1" {
		t.Fatalf("get a: %+v", it)
	}
	// CAS by version: wrong version fails and reports the current one.
	r = applyOne(t, f, cmdLog(t, 2, CASVersion([]byte("a"), 7, []byte("x"))))
	if r.OK || r.Failed != 0 || !r.Current.Found || r.Current.Version != 1 {
		t.Fatalf("cas wrong version: %+v", r)
	}
	r = applyOne(t, f, cmdLog(t, 3, CASVersion([]byte("a"), 1, []byte("2"))))
	if !r.OK || r.Version != 3 {
		t.Fatalf("cas right version: %+v", r)
	}
	// CAS create-if-absent, by version 0 and by value nil.
	if r = applyOne(t, f, cmdLog(t, 4, CASVersion([]byte("b"), 0, []byte("b0")))); !r.OK {
		t.Fatalf("cas absent: %+v", r)
	}
	if r = applyOne(t, f, cmdLog(t, 5, CASValue([]byte("b"), nil, []byte("again")))); r.OK {
		t.Fatalf("cas-absent on present key succeeded: %+v", r)
	}
	if r = applyOne(t, f, cmdLog(t, 6, CASValue([]byte("b"), []byte("b0"), []byte("b1")))); !r.OK {
		t.Fatalf("cas by value: %+v", r)
	}
	// CAS delete.
	del := CASValue([]byte("b"), []byte("b1"), nil)
	del.Delete = true
	if r = applyOne(t, f, cmdLog(t, 7, del)); !r.OK || !r.Existed[0] {
		t.Fatalf("cas delete: %+v", r)
	}
	if it := get(t, f, "b"); it.Found {
		t.Fatalf("b after cas delete: %+v", it)
	}
	// Batch, all or nothing: the failing CAS is the third op.
	r = applyOne(t, f, cmdLog(t, 8,
		Put([]byte("c"), []byte("c")),
		Delete([]byte("a")),
		CASVersion([]byte("a"), 3, []byte("no")), // a was deleted by op 1
	))
	if r.OK || r.Failed != 2 || r.Current.Found {
		t.Fatalf("batch with failing cas: %+v", r)
	}
	if it := get(t, f, "c"); it.Found {
		t.Fatal("failed batch wrote c")
	}
	if it := get(t, f, "a"); !it.Found || string(it.Value) != "2" {
		t.Fatalf("failed batch touched a: %+v", it)
	}
	r = applyOne(t, f, cmdLog(t, 9,
		Put([]byte("c"), []byte("c")),
		CASVersion([]byte("c"), 9, []byte("c2")), // sees op 0's write
		Delete([]byte("a")),
	))
	if !r.OK || len(r.Existed) != 3 || r.Existed[0] || !r.Existed[1] || !r.Existed[2] {
		t.Fatalf("batch: %+v", r)
	}
	if it := get(t, f, "c"); string(it.Value) != "c2" || it.Version != 9 {
		t.Fatalf("c: %+v", it)
	}
	// A malformed command is refused, deterministically, and still counts.
	r = applyOne(t, f, &raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte{9, 9}})
	if r.Refused == "" {
		t.Fatalf("garbage command: %+v", r)
	}
	if f.AppliedIndex() != 10 {
		t.Fatalf("applied %d, want 10", f.AppliedIndex())
	}

	// Scan.
	for i := 0; i < 5; i++ {
		applyOne(t, f, cmdLog(t, uint64(11+i), Put([]byte(fmt.Sprintf("s/%d", i)), []byte{byte(i)})))
	}
	q, _ := EncodeScan([]byte("s/"), []byte("s0"), 3)
	a, err := KV{}.Query(f.Reader(), q)
	if err != nil {
		t.Fatal(err)
	}
	pairs, more, err := DecodeScan(a)
	if err != nil || len(pairs) != 3 || !more || string(pairs[2].Key) != "s/2" || pairs[2].Version != 13 {
		t.Fatalf("scan: %v %+v more=%v", err, pairs, more)
	}
}

// Replay after a restart skips entries at or below the applied index, and
// configuration entries advance it.
func TestReplayIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	st := openState(t, dir)
	f := newFSM(t, st, 5)
	logs := []*raft.Log{
		cmdLog(t, 1, Put([]byte("k"), []byte("v1"))),
		{Index: 2, Type: raft.LogConfiguration},
		cmdLog(t, 3, CASVersion([]byte("k"), 1, []byte("v3"))),
	}
	f.ApplyBatch(logs)
	if f.AppliedIndex() != 3 {
		t.Fatalf("applied %d", f.AppliedIndex())
	}
	st.Close()

	st = openState(t, dir)
	defer st.Close()
	f = newFSM(t, st, 5)
	if f.AppliedIndex() != 3 {
		t.Fatalf("reopened applied %d", f.AppliedIndex())
	}
	// Raft replays from its snapshot (none): 1..3 again, then 4.
	out := f.ApplyBatch(append(logs, cmdLog(t, 4, CASVersion([]byte("k"), 3, []byte("v4")))))
	for i := 0; i < 3; i++ {
		if out[i] != nil {
			t.Fatalf("replayed entry %d produced %v", i+1, out[i])
		}
	}
	r, err := DecodeResult(out[3].([]byte))
	if err != nil || !r.OK {
		t.Fatalf("entry 4 after replay: %v %+v (the CAS would fail had 3 been applied twice)", err, r)
	}
	if it := get(t, f, "k"); string(it.Value) != "v4" || it.Version != 4 {
		t.Fatalf("k: %+v", it)
	}
}

func fileSnapshots(t *testing.T) *raft.FileSnapshotStore {
	t.Helper()
	fs, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func persist(t *testing.T, f *FSM, fs *raft.FileSnapshotStore, index uint64) string {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink, err := fs.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

// A snapshot taken while applying goes on reflects the moment it was
// taken; restoring it elsewhere replaces that group's keys entirely and
// leaves other groups alone.
func TestSnapshotRestore(t *testing.T) {
	st := openState(t, t.TempDir())
	defer st.Close()
	src := newFSM(t, st, 1)
	var logs []*raft.Log
	for i := uint64(1); i <= 300; i++ {
		logs = append(logs, cmdLog(t, i, Put([]byte(fmt.Sprintf("key-%04d", i)), bytes.Repeat([]byte{byte(i)}, int(i)))))
	}
	src.ApplyBatch(logs)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot must not show up in it.
	applyOne(t, src, cmdLog(t, 301, Put([]byte("late"), []byte("x"))))
	fs := fileSnapshots(t)
	sink, err := fs.Create(raft.SnapshotVersionMax, 300, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	st2 := openState(t, t.TempDir())
	defer st2.Close()
	dst := newFSM(t, st2, 9)
	other := newFSM(t, st2, 10)
	applyOne(t, dst, cmdLog(t, 1, Put([]byte("stale"), []byte("gone after restore"))))
	applyOne(t, other, cmdLog(t, 1, Put([]byte("stays"), []byte("1"))))

	_, rc, err := fs.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != 300 {
		t.Fatalf("applied after restore %d", dst.AppliedIndex())
	}
	n := 0
	if err := dst.Reader().Scan(nil, nil, func(k, v []byte) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 300 {
		t.Fatalf("%d keys after restore, want 300", n)
	}
	if it := get(t, dst, "key-0123"); !it.Found || it.Version != 123 || len(it.Value) != 123 {
		t.Fatalf("key-0123: %+v", it)
	}
	if get(t, dst, "stale").Found || get(t, dst, "late").Found {
		t.Fatal("restore kept a key it should have replaced, or the snapshot saw a later write")
	}
	if !get(t, other, "stays").Found {
		t.Fatal("restore of group 9 touched group 10")
	}
}

// A corrupt stream leaves the FSM stopped; a later good restore revives it.
// A crash mid-restore (the marker left behind) is detected at open.
func TestRestoreFailures(t *testing.T) {
	dir := t.TempDir()
	st := openState(t, dir)
	src := newFSM(t, st, 1)
	src.ApplyBatch([]*raft.Log{cmdLog(t, 1, Put([]byte("a"), []byte("1"))), cmdLog(t, 2, Put([]byte("b"), []byte("2")))})
	fs := fileSnapshots(t)
	id := persist(t, src, fs, 2)
	_, rc, _ := fs.Open(id)
	good, _ := io.ReadAll(rc)
	rc.Close()

	dst := newFSM(t, st, 2)
	if err := dst.Restore(io.NopCloser(bytes.NewReader([]byte("not a snapshot")))); err == nil || dst.Err() != nil {
		t.Fatalf("bad magic: err %v, FSM err %v (want refused, FSM untouched)", err, dst.Err())
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)-6] ^= 1
	if err := dst.Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("corrupt stream: %v", err)
	}
	if dst.Err() == nil {
		t.Fatal("FSM not stopped after a half-done restore")
	}
	if out := dst.ApplyBatch([]*raft.Log{cmdLog(t, 3, Put([]byte("c"), nil))}); out[0].(error) == nil {
		t.Fatal("stopped FSM applied")
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(good))); err != nil || dst.Err() != nil {
		t.Fatalf("good restore after a bad one: %v %v", err, dst.Err())
	}
	if get(t, dst, "b").Version != 2 {
		t.Fatal("restored data wrong")
	}

	// Simulate a crash mid-restore: the marker is there at open.
	if err := st.db.Set(metaKey(2, metaRestoring), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openState(t, dir)
	defer st.Close()
	dst = newFSM(t, st, 2)
	if dst.AppliedIndex() != 0 || get(t, dst, "a").Found {
		t.Fatalf("after interrupted restore: applied %d, a found %v; want a cleared group", dst.AppliedIndex(), get(t, dst, "a").Found)
	}
	if newFSM(t, st, 1).AppliedIndex() != 2 {
		t.Fatal("other group's state changed")
	}
}

type failingApplier struct{ KV }

func (failingApplier) Apply(w *Writer, index uint64, cmd []byte) ([]byte, error) {
	if string(cmd) == "fail" {
		return nil, errors.New("disk on fire")
	}
	return nil, w.Set([]byte("k"), cmd)
}

// An Applier I/O error stops the FSM without committing anything.
func TestApplierErrorStops(t *testing.T) {
	st := openState(t, t.TempDir())
	defer st.Close()
	f, err := NewFSM(st, 3, failingApplier{})
	if err != nil {
		t.Fatal(err)
	}
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: []byte("ok")},
		{Index: 2, Type: raft.LogCommand, Data: []byte("fail")},
	})
	if _, isErr := out[0].(error); !isErr || f.Err() == nil {
		t.Fatalf("responses %v, FSM err %v", out, f.Err())
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("applied %d after a failed batch", f.AppliedIndex())
	}
	if _, found, _ := f.Reader().Get([]byte("k")); found {
		t.Fatal("failed batch committed a write")
	}
	if _, err := f.Snapshot(); err == nil {
		t.Fatal("stopped FSM gave a snapshot")
	}
}

func TestEncodeLimits(t *testing.T) {
	if _, err := EncodeCommand(); err == nil {
		t.Fatal("empty command accepted")
	}
	if _, err := EncodeCommand(Put(make([]byte, MaxKeyBytes+1), nil)); err == nil {
		t.Fatal("oversized key accepted")
	}
	if _, err := EncodeCommand(Put(nil, make([]byte, MaxValueBytes+1))); err == nil {
		t.Fatal("oversized value accepted")
	}
	ops := make([]Op, MaxOps+1)
	for i := range ops {
		ops[i] = Delete([]byte("k"))
	}
	if _, err := EncodeCommand(ops...); err == nil {
		t.Fatal("too many ops accepted")
	}
	if _, err := EncodeCommand(Op{Kind: 77}); err == nil {
		t.Fatal("unknown op accepted")
	}
}
