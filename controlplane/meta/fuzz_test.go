package meta

import (
	"testing"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/hashicorp/raft"
)

// FuzzDecodeCommand: any bytes decode to a valid command or a clear error,
// and a decoded command encodes back to bytes that decode the same.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(EncodeCommand(&Command{Kind: CmdExec, ReqID: 7, Time: 1, Parts: []Part{
		{Kind: PartCreate, Mode: ModeRegular | 0o644},
		{Kind: PartAddEntry, Flags: FlagNewInode, Parent: RootIno, Name: "a", Mode: ModeRegular},
	}}))
	f.Add(EncodeCommand(&Command{Kind: CmdPrepare, Txid: 9, Coord: 2, Participants: []uint32{3, 4}, Parts: []Part{
		{Kind: PartCommitStripes, Ino: MakeIno(3, 5), Stripes: []StripeVersion{{1, 2}}, Size: 99},
		{Kind: PartSetXattr, Ino: MakeIno(3, 5), Name: "user.x", Value: []byte("v")},
	}}))
	f.Add([]byte{cmdTag, cmdVersion, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		again, err := DecodeCommand(EncodeCommand(c))
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if len(again.Parts) != len(c.Parts) || again.Kind != c.Kind || again.Txid != c.Txid {
			t.Fatalf("round trip changed the command: %+v vs %+v", c, again)
		}
	})
}

// FuzzDecodeAnswers: results, answers, queries and stored records decode
// or fail cleanly.
func FuzzDecodeAnswers(f *testing.F) {
	in := Inode{Ino: RootIno, Mode: ModeDir | 0o755, Nlink: 2, Target: "t"}
	f.Add(EncodeResult(&Result{Ino: RootIno, Inodes: []Inode{in}, Freed: []Freed{{Ino: 5, Stripes: []StripeVersion{{1, 1}}}}}))
	f.Add(EncodeAnswer(&Answer{Entries: []Entry{{Name: "a", Ino: 3, Attr: &in}}, Names: []string{"user.a"}, Intents: []Intent{{Txid: 1}}}))
	f.Add(EncodeQuery(&Query{Kind: QReadDir, Ino: RootIno, After: "x", Limit: 10}))
	f.Add(encodeIntent(&intent{coord: 1, undo: []undoRec{{key: []byte("k"), present: true, value: []byte("v")}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeResult(b)
		_, _ = DecodeAnswer(b)
		_, _ = DecodeQuery(b)
		_, _ = decodeIntent(b)
		_, _ = decodeInode(b)
		_, _ = decodeDecision(b)
		_, _ = decodeEntry(b)
		_, _ = decodeLock(b)
	})
}

// FuzzApply: any bytes applied as a committed command to a shard never
// panic or stop the state machine, always answer a decodable result, and
// leave the root a directory.
func FuzzApply(f *testing.F) {
	f.Add(EncodeCommand(&Command{Kind: CmdExec, ReqID: 7, Time: 1, Parts: []Part{
		{Kind: PartCreate, Mode: ModeDir | 0o755, Parent: RootIno},
		{Kind: PartAddEntry, Flags: FlagNewInode, Parent: RootIno, Name: "d", Mode: ModeDir},
	}}))
	f.Add(EncodeCommand(&Command{Kind: CmdPrepare, Txid: 3, Coord: 2, Time: 2, Parts: []Part{{Kind: PartRemoveEntry, Parent: RootIno, Name: "d"}}}))
	f.Add(EncodeCommand(&Command{Kind: CmdFinish, Txid: 3, Abort: true}))
	f.Add(EncodeCommand(&Command{Kind: CmdExec, Time: 3, Parts: []Part{{Kind: PartSetAttr, Ino: RootIno, Attr: SetAttr{Mask: AttrSize}}}}))
	f.Add(EncodeQuery(&Query{Kind: QReadDir, Ino: RootIno}))
	st, err := kvsm.OpenState(f.TempDir(), kvsm.StateOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	sm := ShardSM{Shard: RootIno.Shard()}
	fsm, err := kvsm.NewFSM(st, RootIno.Shard(), sm)
	if err != nil {
		f.Fatal(err)
	}
	index := uint64(0)
	rootQ := EncodeQuery(&Query{Kind: QGetAttr, Ino: RootIno})
	f.Fuzz(func(t *testing.T, b []byte) {
		index++
		out := fsm.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: b}})
		if err, bad := out[0].(error); bad {
			t.Fatalf("apply stopped the state machine: %v", err)
		}
		if IsCommand(b) {
			res, ok := out[0].([]byte)
			if !ok {
				t.Fatalf("apply answered %T", out[0])
			}
			if _, err := DecodeResult(res); err != nil {
				t.Fatalf("result does not decode: %v", err)
			}
		}
		_, _ = sm.Query(fsm.Reader(), b)
		ans, err := sm.Query(fsm.Reader(), rootQ)
		if err != nil {
			t.Fatal(err)
		}
		a, err := DecodeAnswer(ans)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status == OK && !IsDir(a.Inode.Mode) {
			t.Fatalf("the root is no longer a directory: %+v", a.Inode)
		}
	})
}
