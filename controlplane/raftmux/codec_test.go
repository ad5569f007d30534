//lint:file-ignore SA1019 the codec must carry raft's deprecated Leader and Candidate fields, so its tests set them

package raftmux

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var (
	testLocal = peerNames{id: []byte("n1"), addr: []byte("127.0.0.1:7001")}
	hdrLocal  = raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n1"), Addr: []byte("127.0.0.1:7001")}
	hdrOther  = raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n9"), Addr: []byte("10.0.0.9:7001")}
)

// Every request and response type survives a round trip, with the header
// compacted (equal to the hello) and not.
func TestCodecRoundTrips(t *testing.T) {
	for _, h := range []raft.RPCHeader{hdrLocal, hdrOther} {
		ae := &raft.AppendEntriesRequest{
			RPCHeader: h, Term: 7, Leader: h.Addr, PrevLogEntry: 41, PrevLogTerm: 6, LeaderCommitIndex: 40,
			Entries: []*raft.Log{
				{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("put"), Extensions: []byte{1}, AppendedAt: time.Unix(1700000000, 5)},
				{Index: 43, Term: 7, Type: raft.LogNoop},
			},
		}
		got, err := decodeAppendEntriesRequest(appendAppendEntriesRequest(nil, ae, &testLocal), &testLocal)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(norm(got), norm(ae)) {
			t.Fatalf("AppendEntries:\n got %+v\nwant %+v", got, ae)
		}
		hb := &raft.AppendEntriesRequest{RPCHeader: h, Term: 7, Leader: h.Addr}
		b := appendAppendEntriesRequest(nil, hb, &testLocal)
		if string(h.ID) == "n1" && len(b) > 8 {
			t.Fatalf("a heartbeat with the hello's names takes %d bytes, want <= 8", len(b))
		}
		if got, err := decodeAppendEntriesRequest(b, &testLocal); err != nil || !isHeartbeat(got) || got.Term != 7 {
			t.Fatalf("heartbeat: %v %+v", err, got)
		}

		aer := &raft.AppendEntriesResponse{RPCHeader: h, Term: 7, LastLog: 43, Success: true, NoRetryBackoff: true}
		var aer2 raft.AppendEntriesResponse
		if err := decodeAppendEntriesResponse(appendAppendEntriesResponse(nil, aer, &testLocal), &testLocal, &aer2); err != nil || !reflect.DeepEqual(&aer2, aer) {
			t.Fatalf("AppendEntriesResponse: %v %+v", err, aer2)
		}
		rv := &raft.RequestVoteRequest{RPCHeader: h, Term: 8, Candidate: h.Addr, LastLogIndex: 43, LastLogTerm: 7, LeadershipTransfer: true}
		if got, err := decodeRequestVoteRequest(appendRequestVoteRequest(nil, rv, &testLocal), &testLocal); err != nil || !reflect.DeepEqual(got, rv) {
			t.Fatalf("RequestVote: %v %+v", err, got)
		}
		rvr := &raft.RequestVoteResponse{RPCHeader: h, Term: 8, Peers: []byte("p"), Granted: true}
		var rvr2 raft.RequestVoteResponse
		if err := decodeRequestVoteResponse(appendRequestVoteResponse(nil, rvr, &testLocal), &testLocal, &rvr2); err != nil || !reflect.DeepEqual(&rvr2, rvr) {
			t.Fatalf("RequestVoteResponse: %v %+v", err, rvr2)
		}
		pv := &raft.RequestPreVoteRequest{RPCHeader: h, Term: 9, LastLogIndex: 1, LastLogTerm: 1}
		if got, err := decodePreVoteRequest(appendPreVoteRequest(nil, pv, &testLocal), &testLocal); err != nil || !reflect.DeepEqual(got, pv) {
			t.Fatalf("PreVote: %v %+v", err, got)
		}
		pvr := &raft.RequestPreVoteResponse{RPCHeader: h, Term: 9, Granted: true}
		var pvr2 raft.RequestPreVoteResponse
		if err := decodePreVoteResponse(appendPreVoteResponse(nil, pvr, &testLocal), &testLocal, &pvr2); err != nil || !reflect.DeepEqual(&pvr2, pvr) {
			t.Fatalf("PreVoteResponse: %v %+v", err, pvr2)
		}
		tn := &raft.TimeoutNowRequest{RPCHeader: h}
		if got, err := decodeTimeoutNowRequest(appendTimeoutNowRequest(nil, tn, &testLocal), &testLocal); err != nil || !reflect.DeepEqual(got, tn) {
			t.Fatalf("TimeoutNow: %v %+v", err, got)
		}
		var tnr raft.TimeoutNowResponse
		if err := decodeTimeoutNowResponse(appendTimeoutNowResponse(nil, &raft.TimeoutNowResponse{RPCHeader: h}, &testLocal), &testLocal, &tnr); err != nil || !reflect.DeepEqual(tnr.RPCHeader, h) {
			t.Fatalf("TimeoutNowResponse: %v %+v", err, tnr)
		}
		is := &raft.InstallSnapshotRequest{RPCHeader: h, SnapshotVersion: 1, Term: 9, Leader: []byte("elsewhere"), LastLogIndex: 99,
			LastLogTerm: 8, Configuration: []byte("conf"), ConfigurationIndex: 50, Size: 1 << 33}
		if got, err := decodeInstallSnapshotRequest(appendInstallSnapshotRequest(nil, is, &testLocal), &testLocal); err != nil || !reflect.DeepEqual(got, is) {
			t.Fatalf("InstallSnapshot: %v\n got %+v\nwant %+v", err, got, is)
		}
		isr := &raft.InstallSnapshotResponse{RPCHeader: h, Term: 9, Success: true}
		var isr2 raft.InstallSnapshotResponse
		if err := decodeInstallSnapshotResponse(appendInstallSnapshotResponse(nil, isr, &testLocal), &testLocal, &isr2); err != nil || !reflect.DeepEqual(&isr2, isr) {
			t.Fatalf("InstallSnapshotResponse: %v %+v", err, isr2)
		}
	}
}

// norm makes empty and nil byte slices compare equal.
func norm(a *raft.AppendEntriesRequest) *raft.AppendEntriesRequest {
	c := *a
	c.Entries = nil
	for _, l := range a.Entries {
		lc := *l
		if len(lc.Data) == 0 {
			lc.Data = nil
		}
		if len(lc.Extensions) == 0 {
			lc.Extensions = nil
		}
		c.Entries = append(c.Entries, &lc)
	}
	return &c
}

func TestFramesRoundTrip(t *testing.T) {
	reqs := []reqItem{{id: 1, group: 0, rpc: rpcAppendEntries, body: []byte{1, 2}}, {id: 1 << 40, group: ^uint32(0), rpc: rpcCall}}
	got, err := decodeRequests(appendRequests(nil, reqs), 10)
	if err != nil || len(got) != 2 || got[1].group != ^uint32(0) || got[1].id != 1<<40 || !bytes.Equal(got[0].body, []byte{1, 2}) {
		t.Fatalf("requests: %v %+v", err, got)
	}
	if _, err := decodeRequests(appendRequests(nil, reqs), 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("item limit not enforced: %v", err)
	}
	resps := []respItem{{id: 5, status: statusOK, body: []byte("x")}, {id: 6, status: statusError, body: []byte("no")}}
	gotr, err := decodeResponses(appendResponses(nil, resps), 10)
	if err != nil || !reflect.DeepEqual(gotr, resps) {
		t.Fatalf("responses: %v %+v", err, gotr)
	}
	h := &hello{lane: laneData, id: []byte("n1"), addr: []byte("a:1")}
	gh, err := decodeHello(appendHello(nil, h))
	if err != nil || !reflect.DeepEqual(gh, h) {
		t.Fatalf("hello: %v %+v", err, gh)
	}
}

func TestReadFrameLimits(t *testing.T) {
	f, start := beginFrame(nil, kindRequests)
	f = finishFrame(append(f, make([]byte, 100)...), start)
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(f)), 50); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized frame: %v", err)
	}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader([]byte{0, 0, 0, 0})), 50); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty frame: %v", err)
	}
	// A length of 4 GiB must be refused from the header alone.
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 1})), HardMaxFrameBytes); !errors.Is(err, ErrMalformed) {
		t.Fatalf("4 GiB frame: %v", err)
	}
	kind, body, err := readFrame(bufio.NewReader(bytes.NewReader(f)), 200)
	if err != nil || kind != kindRequests || len(body) != 100 {
		t.Fatalf("valid frame: %v %d %d", err, kind, len(body))
	}
}
