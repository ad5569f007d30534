package kvsm

import (
	"bytes"
	"errors"
	"testing"
)

func seedCommands(f *testing.F) {
	for _, ops := range [][]Op{
		{Put([]byte("k"), []byte("v"))},
		{Delete([]byte("k"))},
		{CASVersion([]byte("k"), 7, []byte("v"))},
		{CASValue([]byte("k"), nil, []byte("v")), Put(nil, nil), Delete([]byte{0})},
		{{Kind: OpCAS, Key: []byte("d"), Cond: CondValue, IfValue: []byte("x"), Delete: true}},
	} {
		b, err := EncodeCommand(ops...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{1, 1, 3, 0, 9, 0})
}

// FuzzDecodeCommand: decoding never panics; what decodes re-encodes to the
// same bytes.
func FuzzDecodeCommand(f *testing.F) {
	seedCommands(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error not ErrBadCommand: %v", err)
			}
			return
		}
		again, err := EncodeCommand(ops...)
		if err != nil {
			t.Fatalf("decoded command does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip changed bytes:\n%x\n%x", b, again)
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	for _, r := range []*Result{
		{OK: true, Version: 9, Existed: []bool{true, false}},
		{Failed: 3, Current: Item{Found: true, Version: 2}},
		{Refused: "no"},
	} {
		f.Add(encodeResult(r))
	}
	f.Add([]byte{0, 1, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResult(b)
		if err != nil {
			return
		}
		if again := encodeResult(r); !bytes.Equal(again, b) {
			t.Fatalf("round trip changed bytes:\n%x\n%x", b, again)
		}
	})
}

func FuzzDecodeAnswers(f *testing.F) {
	f.Add([]byte{1, 5, 'v'})
	f.Add([]byte{0, 0})
	f.Add([]byte{2, 1, 'a', 3, 1, 'x', 1, 'b', 4, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeGet(b)
		_, _, _ = DecodeScan(b)
	})
}

// FuzzApplyAndQuery runs arbitrary commands and queries through KV on a
// real FSM: nothing panics, refused commands write nothing.
func FuzzApplyAndQuery(f *testing.F) {
	seedCommands(f)
	g, _ := EncodeGet([]byte("k"))
	s, _ := EncodeScan(nil, nil, 3)
	f.Add(g)
	f.Add(s)
	st, err := OpenState(f.TempDir(), StateOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	fsm, err := NewFSM(st, 1, KV{})
	if err != nil {
		f.Fatal(err)
	}
	index := uint64(0)
	f.Fuzz(func(t *testing.T, b []byte) {
		index++
		w := &Writer{b: st.db.NewIndexedBatch(), group: 1}
		defer w.b.Close()
		res, err := KV{}.Apply(w, index, b)
		if err != nil {
			t.Fatalf("KV.Apply I/O error on an in-memory batch: %v", err)
		}
		r, err := DecodeResult(res)
		if err != nil {
			t.Fatalf("KV.Apply result does not decode: %v", err)
		}
		if (r.Refused != "" || !r.OK) && w.b.Count() != 0 {
			t.Fatalf("refused or failed command wrote %d ops", w.b.Count())
		}
		_, _ = KV{}.Query(fsm.Reader(), b)
	})
}

// FuzzSnapshotStream: the snapshot decoder never panics, never allocates
// past its limits, and accepts only streams with a matching checksum.
func FuzzSnapshotStream(f *testing.F) {
	var buf bytes.Buffer
	st, err := OpenState(f.TempDir(), StateOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	w := &Writer{b: st.db.NewIndexedBatch(), group: 1}
	_ = w.Set([]byte("a"), []byte("1"))
	_ = w.Set([]byte("b"), []byte("22"))
	if err := writeSnapshot(&buf, w, 42); err != nil {
		f.Fatal(err)
	}
	w.b.Close()
	f.Add(buf.Bytes())
	f.Add([]byte(snapMagic + "\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte(snapMagic + "\x01\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := newSnapshotReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for i := 0; ; i++ {
			more, err := sr.next()
			if err != nil || !more {
				return
			}
			if len(sr.key) > MaxSnapshotKeyBytes || len(sr.val) > MaxSnapshotValueBytes {
				t.Fatal("record over the limits")
			}
		}
	})
}
