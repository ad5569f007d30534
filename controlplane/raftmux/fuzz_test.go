//lint:file-ignore SA1019 the codec must carry raft's deprecated Leader and Candidate fields, so its tests set them

package raftmux

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func seedFrames(f *testing.F) {
	add := func(kind byte, body []byte) {
		fr, start := beginFrame(nil, kind)
		f.Add(finishFrame(append(fr, body...), start))
	}
	add(kindHello, appendHello(nil, &hello{lane: laneControl, id: []byte("n1"), addr: []byte("127.0.0.1:1")}))
	hb := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{RPCHeader: hdrLocal, Term: 3, Leader: hdrLocal.Addr}, &testLocal)
	add(kindRequests, appendRequests(nil, []reqItem{{id: 1, group: 2, rpc: rpcAppendEntries, body: hb}, {id: 2, group: 3, rpc: rpcAppendEntries, body: hb}}))
	aer := appendAppendEntriesResponse(nil, &raft.AppendEntriesResponse{RPCHeader: hdrOther, Term: 3, Success: true}, &testLocal)
	add(kindResponses, appendResponses(nil, []respItem{{id: 1, body: aer}, {id: 2, status: statusError, body: []byte("no")}}))
	add(kindSnapChunk, []byte("chunk"))
	f.Add([]byte{0, 0, 0, 5, kindRequests, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
}

// FuzzDecodeFrame feeds arbitrary bytes to the frame reader and every frame
// decoder, and each request item to the RPC decoders: never a panic, and
// nothing decoded larger than the frame it came from.
func FuzzDecodeFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		for {
			kind, body, err := readFrame(br, 1<<16)
			if err != nil {
				return
			}
			switch kind {
			case kindHello:
				_, _ = decodeHello(body)
			case kindRequests:
				items, err := decodeRequests(body, 1<<10)
				if err != nil {
					continue
				}
				for _, it := range items {
					if len(it.body) > len(body) {
						t.Fatal("item larger than its frame")
					}
					cmd, err := decodeCommand(it.rpc, it.body, &testLocal)
					if err == nil {
						if ae, ok := cmd.(*raft.AppendEntriesRequest); ok && len(ae.Entries) > len(it.body) {
							t.Fatal("more entries than bytes")
						}
					}
				}
			case kindResponses:
				items, err := decodeResponses(body, 1<<10)
				if err != nil {
					continue
				}
				for _, it := range items {
					decodeAllResponses(it.body)
				}
			}
		}
	})
}

func decodeAllResponses(b []byte) {
	_ = decodeAppendEntriesResponse(b, &testLocal, &raft.AppendEntriesResponse{})
	_ = decodeRequestVoteResponse(b, &testLocal, &raft.RequestVoteResponse{})
	_ = decodePreVoteResponse(b, &testLocal, &raft.RequestPreVoteResponse{})
	_ = decodeTimeoutNowResponse(b, &testLocal, &raft.TimeoutNowResponse{})
	_ = decodeInstallSnapshotResponse(b, &testLocal, &raft.InstallSnapshotResponse{})
}

// FuzzDecodeRPC feeds arbitrary item bodies to every request and response
// decoder; whatever decodes must re-encode and decode to the same value.
func FuzzDecodeRPC(f *testing.F) {
	f.Add(rpcAppendEntries, appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{
		RPCHeader: hdrOther, Term: 1, PrevLogEntry: 2, PrevLogTerm: 1, LeaderCommitIndex: 2,
		Entries: []*raft.Log{{Index: 3, Term: 1, Data: []byte("x"), AppendedAt: time.Unix(5, 5)}},
	}, &testLocal))
	f.Add(rpcRequestVote, appendRequestVoteRequest(nil, &raft.RequestVoteRequest{RPCHeader: hdrLocal, Term: 2, Candidate: hdrLocal.Addr}, &testLocal))
	f.Add(rpcRequestPreVote, appendPreVoteRequest(nil, &raft.RequestPreVoteRequest{RPCHeader: hdrLocal, Term: 2}, &testLocal))
	f.Add(rpcTimeoutNow, appendTimeoutNowRequest(nil, &raft.TimeoutNowRequest{RPCHeader: hdrOther}, &testLocal))
	f.Add(rpcInstallSnapshot, appendInstallSnapshotRequest(nil, &raft.InstallSnapshotRequest{RPCHeader: hdrLocal, SnapshotVersion: 1, Term: 2, Size: 10}, &testLocal))
	f.Add(rpcAppendEntries, []byte{1, 3, 5, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, rpc byte, b []byte) {
		decodeAllResponses(b)
		cmd, err := decodeCommand(rpc, b, &testLocal)
		if err != nil {
			return
		}
		var again []byte
		switch c := cmd.(type) {
		case *raft.AppendEntriesRequest:
			again = appendAppendEntriesRequest(nil, c, &testLocal)
		case *raft.RequestVoteRequest:
			again = appendRequestVoteRequest(nil, c, &testLocal)
		case *raft.RequestPreVoteRequest:
			again = appendPreVoteRequest(nil, c, &testLocal)
		case *raft.TimeoutNowRequest:
			again = appendTimeoutNowRequest(nil, c, &testLocal)
		case *raft.InstallSnapshotRequest:
			again = appendInstallSnapshotRequest(nil, c, &testLocal)
		}
		cmd2, err := decodeCommand(rpc, again, &testLocal)
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", cmd, err)
		}
		if a, ok := cmd.(*raft.AppendEntriesRequest); ok {
			cmd, cmd2 = norm(a), norm(cmd2.(*raft.AppendEntriesRequest))
		}
		if !equalish(cmd, cmd2) {
			t.Fatalf("round trip changed %T:\n%+v\n%+v", cmd, cmd, cmd2)
		}
	})
}

// equalish compares decoded values by re-encoding both with a fixed
// context (byte slices that are empty vs nil compare equal that way).
func equalish(a, b any) bool {
	enc := func(v any) []byte {
		switch c := v.(type) {
		case *raft.AppendEntriesRequest:
			return appendAppendEntriesRequest(nil, c, &peerNames{})
		case *raft.RequestVoteRequest:
			return appendRequestVoteRequest(nil, c, &peerNames{})
		case *raft.RequestPreVoteRequest:
			return appendPreVoteRequest(nil, c, &peerNames{})
		case *raft.TimeoutNowRequest:
			return appendTimeoutNowRequest(nil, c, &peerNames{})
		case *raft.InstallSnapshotRequest:
			return appendInstallSnapshotRequest(nil, c, &peerNames{})
		}
		return nil
	}
	return bytes.Equal(enc(a), enc(b))
}
