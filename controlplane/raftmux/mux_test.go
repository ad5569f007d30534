package raftmux_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/claudefs/claudefs/controlplane/raftlog"
	"github.com/claudefs/claudefs/controlplane/raftmux"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// node is one process's worth of real components: a Mux, a log store, a
// state store, and raft instances for some groups.
type node struct {
	t     *testing.T
	id    string
	dir   string
	mux   *raftmux.Mux
	logs  *raftlog.Store
	state *kvsm.State
	rafts map[uint32]*raft.Raft
	fsms  map[uint32]*kvsm.FSM
}

func newNode(t *testing.T, id string, cfg raftmux.Config) *node {
	t.Helper()
	dir := t.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.LocalID = id
	m, err := raftmux.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := raftlog.Open(dir+"/log", raftlog.Options{WriteCombining: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := kvsm.OpenState(dir+"/state", kvsm.StateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, id: id, dir: dir, mux: m, logs: logs, state: st, rafts: map[uint32]*raft.Raft{}, fsms: map[uint32]*kvsm.FSM{}}
	t.Cleanup(n.close)
	return n
}

func (n *node) close() {
	for _, r := range n.rafts {
		r.Shutdown().Error()
	}
	n.rafts = map[uint32]*raft.Raft{}
	n.mux.Close()
	n.logs.Close()
	n.state.Close()
}

func raftConfig(id string) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 400 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
	c.NoSnapshotRestoreOnStart = true
	c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{}})
	return c
}

type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) { return len(p), nil }

func (n *node) start(group uint32, conf *raft.Config, servers []raft.Server) {
	n.t.Helper()
	lg, err := n.logs.Group(group)
	if err != nil {
		n.t.Fatal(err)
	}
	fsm, err := kvsm.NewFSM(n.state, group, kvsm.KV{})
	if err != nil {
		n.t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(fmt.Sprintf("%s/snap/%d", n.dir, group), 2, hclog.NewNullLogger())
	if err != nil {
		n.t.Fatal(err)
	}
	tr, err := n.mux.Group(group)
	if err != nil {
		n.t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, fsm, lg, lg, snaps, tr)
	if err != nil {
		n.t.Fatal(err)
	}
	if servers != nil {
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			n.t.Fatal(err)
		}
	}
	n.rafts[group] = r
	n.fsms[group] = fsm
}

func servers(nodes ...*node) []raft.Server {
	var s []raft.Server
	for _, n := range nodes {
		s = append(s, raft.Server{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.mux.Addr())})
	}
	return s
}

func leaderOf(t *testing.T, group uint32, nodes []*node, within time.Duration) *node {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if r := n.rafts[group]; r != nil && r.State() == raft.Leader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("group %d: no leader within %v", group, within)
	return nil
}

// put applies an idempotent put through group's leader, finding it again
// if leadership moves (the tests share two cores with others).
func put(t *testing.T, nodes []*node, group uint32, key, value string) {
	t.Helper()
	cmd, err := kvsm.EncodeCommand(kvsm.Put([]byte(key), []byte(value)))
	if err != nil {
		t.Fatal(err)
	}
	var f raft.ApplyFuture
	for attempt := 0; ; attempt++ {
		f = leaderOf(t, group, nodes, 10*time.Second).rafts[group].Apply(cmd, 5*time.Second)
		err := f.Error()
		if err == nil {
			break
		}
		if attempt == 20 || !(errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader)) {
			t.Fatal(err)
		}
	}
	res, err := kvsm.DecodeResult(f.Response().([]byte))
	if err != nil || !res.OK {
		t.Fatalf("put %s: %v %+v", key, err, res)
	}
}

func waitValue(t *testing.T, n *node, group uint32, key, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, found, err := n.fsms[group].Reader().Get([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		if found && strings.HasSuffix(string(v), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s group %d: %s never became %q", n.id, group, key, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Real raft groups elect, replicate and converge over three Muxes, and
// their heartbeats travel coalesced.
func TestGroupsReplicateOverMux(t *testing.T) {
	const groups = 6
	cfg := raftmux.Config{HeartbeatWindow: 5 * time.Millisecond}
	nodes := []*node{newNode(t, "n1", cfg), newNode(t, "n2", cfg), newNode(t, "n3", cfg)}
	for g := uint32(0); g < groups; g++ {
		for i, n := range nodes {
			var boot []raft.Server
			if i == 0 {
				boot = servers(nodes...)
			}
			n.start(g, raftConfig(n.id), boot)
		}
	}
	for g := uint32(0); g < groups; g++ {
		for i := 0; i < 20; i++ {
			put(t, nodes, g, fmt.Sprintf("k%d", i), fmt.Sprintf("g%d-v%d", g, i))
		}
	}
	for g := uint32(0); g < groups; g++ {
		for _, n := range nodes {
			waitValue(t, n, g, "k19", fmt.Sprintf("g%d-v19", g), 5*time.Second)
		}
	}
	time.Sleep(300 * time.Millisecond) // let heartbeats flow
	var hb, frames uint64
	for _, n := range nodes {
		s := n.mux.Stats()
		hb += s.HeartbeatsSent
		frames += s.HeartbeatFramesSent
		if s.Malformed != 0 {
			t.Errorf("%s: %d malformed frames", n.id, s.Malformed)
		}
	}
	t.Logf("%d entry-less appends in %d frames (%.1f per frame)", hb, frames, float64(hb)/float64(frames))
	if hb <= frames {
		t.Fatalf("heartbeats were not coalesced: %d heartbeats in %d frames", hb, frames)
	}
}

// A follower that missed compacted entries gets them by InstallSnapshot,
// streamed in many small chunks on its own connection.
func TestInstallSnapshotStreams(t *testing.T) {
	cfg := raftmux.Config{SnapshotChunkBytes: 4 << 10}
	nodes := []*node{newNode(t, "n1", cfg), newNode(t, "n2", cfg), newNode(t, "n3", cfg)}
	conf := func(id string) *raft.Config {
		c := raftConfig(id)
		c.SnapshotThreshold = 50
		c.TrailingLogs = 10
		c.SnapshotInterval = 50 * time.Millisecond
		return c
	}
	nodes[0].start(0, conf("n1"), servers(nodes...))
	nodes[1].start(0, conf("n2"), nil)
	big := strings.Repeat("v", 2000)
	for i := 0; i < 200; i++ {
		put(t, nodes[:2], 0, fmt.Sprintf("k%03d", i), fmt.Sprintf("%s%d", big, i))
	}
	l := leaderOf(t, 0, nodes[:2], 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, _ := mustLogs(t, l).FirstIndex()
		if first > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("leader never compacted its log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	nodes[2].start(0, conf("n3"), nil)
	waitValue(t, nodes[2], 0, "k199", "199", 15*time.Second)
	var s raftmux.Stats
	for _, n := range nodes[:2] {
		st := n.mux.Stats()
		s.SnapshotsSent += st.SnapshotsSent
		s.SnapshotBytesSent += st.SnapshotBytesSent
	}
	if s.SnapshotsSent == 0 || s.SnapshotBytesSent < 4<<10*10 {
		t.Fatalf("stats %+v: want a snapshot of many chunks", s)
	}
	t.Logf("snapshot: %d sent, %d bytes", s.SnapshotsSent, s.SnapshotBytesSent)
}

func mustLogs(t *testing.T, n *node) *raftlog.Group {
	g, err := n.logs.Group(0)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// serveAppends answers every RPC of tr the way a healthy follower would.
func serveAppends(tr *raftmux.Transport, stop <-chan struct{}) {
	for {
		select {
		case rpc := <-tr.Consumer():
			switch rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil)
			default:
				rpc.Respond(nil, errors.New("unexpected"))
			}
		case <-stop:
			return
		}
	}
}

// A peer that accepts connections and never answers costs its own RPCs
// their deadline and nothing else: RPCs to a healthy peer issued at the
// same time complete at once.
func TestDeadPeerDoesNotBlockOthers(t *testing.T) {
	// The black hole: accepts, reads the hello, never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			go func() { bufio.NewReader(c).ReadByte(); time.Sleep(10 * time.Second); c.Close() }()
		}
	}()
	cfg := raftmux.Config{ControlTimeout: 400 * time.Millisecond, DialTimeout: 300 * time.Millisecond, HeartbeatWindow: time.Millisecond}
	a := newNode(t, "a", cfg)
	b := newNode(t, "b", cfg)
	trA, _ := a.mux.Group(1)
	trB, _ := b.mux.Group(1)
	stop := make(chan struct{})
	defer close(stop)
	go serveAppends(trB, stop)

	var wg sync.WaitGroup
	holeErr := make(chan error, 4)
	start := time.Now()
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp raft.RequestVoteResponse
			holeErr <- trA.RequestVote("x", raft.ServerAddress(hole.Addr().String()), &raft.RequestVoteRequest{Term: 1}, &resp)
		}()
	}
	// Meanwhile, 50 heartbeats to the healthy peer.
	for i := 0; i < 50; i++ {
		var resp raft.AppendEntriesResponse
		if err := trA.AppendEntries("b", raft.ServerAddress(b.mux.Addr()), &raft.AppendEntriesRequest{Term: 1, RPCHeader: raft.RPCHeader{Addr: []byte(a.mux.Addr())}}, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat to the healthy peer: %v %+v", err, resp)
		}
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("50 heartbeats to a healthy peer took %v while another peer hung", d)
	}
	wg.Wait()
	close(holeErr)
	for err := range holeErr {
		if err == nil {
			t.Fatal("RPC to the black hole succeeded")
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("RPCs to the black hole took %v, the deadline is 400 ms (+300 ms dial)", d)
	}
	// Nobody listening: fails fast, then fails at once during the backoff.
	dead := "127.0.0.1:1"
	var resp raft.RequestVoteResponse
	t0 := time.Now()
	if err := trA.RequestVote("x", raft.ServerAddress(dead), &raft.RequestVoteRequest{Term: 1}, &resp); err == nil {
		t.Fatal("RPC to a closed port succeeded")
	}
	if err := trA.RequestVote("x", raft.ServerAddress(dead), &raft.RequestVoteRequest{Term: 1}, &resp); err == nil {
		t.Fatal("RPC to a closed port succeeded")
	}
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Fatalf("two RPCs to a closed port took %v", d)
	}
}

// Garbage on the listener closes that connection only; the node goes on
// serving others.
func TestMalformedInputClosesConnection(t *testing.T) {
	a := newNode(t, "a", raftmux.Config{MaxFrameBytes: 1 << 20})
	b := newNode(t, "b", raftmux.Config{})
	trA, _ := a.mux.Group(1)
	trB, _ := b.mux.Group(1)
	stop := make(chan struct{})
	defer close(stop)
	go serveAppends(trA, stop)

	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x7f, 0xff, 0xff, 0xff, 1}, // a 2 GiB frame
		append([]byte{0, 0, 0, 18, 1}, "CFSRMUX\x01\x00\x02n1\x09"...),
	} {
		c, err := net.Dial("tcp", a.mux.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("connection sending %q not closed", junk)
				}
				break
			}
		}
		c.Close()
	}
	var resp raft.AppendEntriesResponse
	if err := trB.AppendEntries("a", raft.ServerAddress(a.mux.Addr()), &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Term: 1}}}, &resp); err != nil || !resp.Success {
		t.Fatalf("after junk: %v %+v", err, resp)
	}
	if a.mux.Stats().Malformed < 2 {
		t.Fatalf("malformed count %d", a.mux.Stats().Malformed)
	}
}

// Forwarded calls reach the handler with the caller's deadline, and
// errors and unknown groups come back as errors.
func TestCall(t *testing.T) {
	a := newNode(t, "a", raftmux.Config{})
	b := newNode(t, "b", raftmux.Config{})
	if _, err := a.mux.Call(context.Background(), b.mux.Addr(), 1, []byte("x")); err == nil {
		t.Fatal("call without a handler succeeded")
	}
	b.mux.SetCallHandler(func(ctx context.Context, group uint32, req []byte) ([]byte, error) {
		switch string(req) {
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		case "fail":
			return nil, errors.New("refused")
		}
		dl, _ := ctx.Deadline()
		return fmt.Appendf(nil, "%d:%s:%v", group, req, time.Until(dl) > 0), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := a.mux.Call(ctx, b.mux.Addr(), 7, []byte("hi"))
	if err != nil || string(out) != "7:hi:true" {
		t.Fatalf("call: %q %v", out, err)
	}
	var re *raftmux.RemoteError
	if _, err := a.mux.Call(ctx, b.mux.Addr(), 7, []byte("fail")); !errors.As(err, &re) || !strings.Contains(re.Msg, "refused") {
		t.Fatalf("failing call: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	t0 := time.Now()
	if _, err := a.mux.Call(short, b.mux.Addr(), 7, []byte("slow")); err == nil {
		t.Fatal("slow call succeeded")
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("call with a 200 ms deadline took %v", d)
	}
}

// windowPair starts nodes a and b with a 400 ms HeartbeatWindow, b serving
// group 1's appends until the test ends, and returns a's group 1
// transport, the RPC header a's appends carry, and send, which makes one
// AppendEntries from a to b and returns how long it took.
func windowPair(t *testing.T) (*raftmux.Transport, raft.RPCHeader, func(*raft.AppendEntriesRequest) time.Duration) {
	t.Helper()
	cfg := raftmux.Config{HeartbeatWindow: 400 * time.Millisecond}
	a := newNode(t, "a", cfg)
	b := newNode(t, "b", cfg)
	trA, _ := a.mux.Group(1)
	trB, _ := b.mux.Group(1)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go serveAppends(trB, stop)
	send := func(req *raft.AppendEntriesRequest) time.Duration {
		t0 := time.Now()
		var resp raft.AppendEntriesResponse
		if err := trA.AppendEntries("b", raft.ServerAddress(b.mux.Addr()), req, &resp); err != nil || !resp.Success {
			t.Fatalf("append: %v %+v", err, resp)
		}
		return time.Since(t0)
	}
	return trA, raft.RPCHeader{Addr: []byte(a.mux.Addr())}, send
}

// Heartbeats wait for HeartbeatWindow to share a frame, except while their
// group is expedited (a linearizable read is waiting on them).
func TestExpediteSkipsWindow(t *testing.T) {
	trA, hdr, send := windowPair(t)
	hb := func() time.Duration { return send(&raft.AppendEntriesRequest{Term: 1, RPCHeader: hdr}) }
	hb() // connect
	if d := hb(); d < 300*time.Millisecond {
		t.Fatalf("a heartbeat left after %v, before the 400 ms window", d)
	}
	release := trA.Expedite()
	if d := hb(); d > 200*time.Millisecond {
		t.Fatalf("an expedited heartbeat took %v", d)
	}
	release()
	release() // idempotent
	if d := hb(); d < 300*time.Millisecond {
		t.Fatalf("after release a heartbeat left after %v", d)
	}
}

// An entry-less append that is not a pure heartbeat, from a group that has
// just sent entries, comes from raft's replication goroutine of a busy
// group, which sends the group's next entries to that follower only after
// it is answered: it leaves at once. In an idle group it shares the
// heartbeats' frames (the window), as do pure heartbeats always.
func TestEntrylessAppendSkipsWindowWhenBusy(t *testing.T) {
	_, hdr, send := windowPair(t)
	heartbeat := &raft.AppendEntriesRequest{Term: 1, RPCHeader: hdr}
	commitOnly := &raft.AppendEntriesRequest{Term: 1, RPCHeader: hdr, PrevLogEntry: 7, PrevLogTerm: 1, LeaderCommitIndex: 7}
	entries := &raft.AppendEntriesRequest{Term: 1, RPCHeader: hdr, PrevLogEntry: 6, PrevLogTerm: 1, LeaderCommitIndex: 6,
		Entries: []*raft.Log{{Index: 7, Term: 1, Type: raft.LogCommand, Data: []byte("x")}}}
	send(heartbeat)                     // connect
	time.Sleep(1100 * time.Millisecond) // the process's first second counts as busy
	if d := send(commitOnly); d < 300*time.Millisecond {
		t.Fatalf("an idle group's entry-less append left after %v, before the 400 ms window", d)
	}
	if d := send(entries); d > 200*time.Millisecond {
		t.Fatalf("an append with entries took %v", d)
	}
	if d := send(commitOnly); d > 200*time.Millisecond {
		t.Fatalf("a busy group's entry-less append took %v: it waited for the heartbeat window", d)
	}
	if d := send(heartbeat); d < 300*time.Millisecond {
		t.Fatalf("a busy group's heartbeat left after %v, before the 400 ms window", d)
	}
}
