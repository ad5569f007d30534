package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func mustApply(t *testing.T, s *State, c *Command) *Result {
	t.Helper()
	r, err := s.Apply(c)
	if err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
	return r
}

func bootstrapped(t *testing.T, nodes, shards int) *State {
	s := NewState()
	mustApply(t, s, &Command{Op: OpBootstrap, Now: t0, Name: "test", Nodes: nodes, Shards: shards, Replicas: 3, K: 4, M: 2, PGs: 256,
		Node: &Node{ID: "node-1", RaftAddr: "127.0.0.1:1", Devices: []string{"/dev/x"}}})
	return s
}

func join(t *testing.T, s *State, now time.Time) (string, error) {
	secret := fmt.Sprintf("secret-%d", now.UnixNano())
	mustApply(t, s, &Command{Op: OpAddToken, Now: now, Token: &Token{Hash: HashToken(secret), NodeType: "storage"}})
	r, err := s.Apply(&Command{Op: OpJoin, Now: now, Secret: secret, Node: &Node{RaftAddr: "127.0.0.1:2", Devices: []string{"/d"}}})
	if err != nil {
		return "", err
	}
	return r.NodeID, nil
}

func TestBootstrapJoinPlace(t *testing.T) {
	s := NewState()
	if _, err := s.Apply(&Command{Op: OpAddToken, Now: t0}); !errors.Is(err, ErrNotBootstrapped) {
		t.Fatalf("before bootstrap: %v", err)
	}
	s = bootstrapped(t, 3, 256)
	if _, err := s.Apply(&Command{Op: OpBootstrap, Now: t0, Name: "again", Nodes: 1, Shards: 1, Replicas: 1, K: 1, PGs: 1, Node: &Node{ID: "x"}}); !errors.Is(err, ErrBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	if s.Nodes["node-1"].Devices[0] != "node-1/dev0" {
		t.Fatalf("device ids %v", s.Nodes["node-1"].Devices)
	}
	if _, err := s.Apply(&Command{Op: OpPlaceShards, Now: t0}); err == nil || !strings.Contains(err.Error(), "1 of 3") {
		t.Fatalf("placing with 1 of 3 nodes: %v", err)
	}
	for i, want := range []string{"node-2", "node-3"} {
		id, err := join(t, s, t0.Add(time.Duration(i+1)*time.Minute))
		if err != nil || id != want {
			t.Fatalf("join %d: %q %v, want %q", i, id, err, want)
		}
	}
	e := s.Epoch
	mustApply(t, s, &Command{Op: OpPlaceShards, Now: t0})
	if len(s.ShardMap) != 256 || s.Epoch != e+1 {
		t.Fatalf("%d shards placed, epoch %d→%d", len(s.ShardMap), e, s.Epoch)
	}
	for g, rs := range s.ShardMap {
		if len(rs) != 3 {
			t.Fatalf("shard %d on %v", g, rs)
		}
	}
	mustApply(t, s, &Command{Op: OpPlaceShards, Now: t0}) // idempotent
	if s.Epoch != e+1 {
		t.Fatal("placing again changed the epoch")
	}
	pm := s.PlacementMap()
	if err := pm.Validate(); err != nil || len(pm.Devices) != 3 {
		t.Fatalf("placement map %+v: %v", pm, err)
	}
	if _, err := pm.Place(5); err != nil {
		t.Fatal(err)
	}
}

func TestTokens(t *testing.T) {
	s := bootstrapped(t, 1, 4)
	secret := "tok"
	mustApply(t, s, &Command{Op: OpAddToken, Now: t0, Token: &Token{Hash: HashToken(secret), NodeType: "storage"}})
	node := &Node{RaftAddr: "a"}
	if _, err := s.Apply(&Command{Op: OpJoin, Now: t0.Add(time.Minute), Secret: "other", Node: node}); !errors.Is(err, ErrTokenUnknown) {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := s.Apply(&Command{Op: OpJoin, Now: t0.Add(time.Minute), Secret: secret, Node: node}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(&Command{Op: OpJoin, Now: t0.Add(2 * time.Minute), Secret: secret, Node: node})
	if !errors.Is(err, ErrTokenUsed) || !strings.Contains(err.Error(), "node-2") {
		t.Fatalf("reused token: %v", err)
	}
	mustApply(t, s, &Command{Op: OpAddToken, Now: t0, Token: &Token{Hash: HashToken("late"), NodeType: "storage"}})
	_, err = s.Apply(&Command{Op: OpJoin, Now: t0.Add(TokenTTL), Secret: "late", Node: node})
	if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "cluster-token") {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := s.Apply(&Command{Op: OpAddToken, Now: t0, Token: &Token{Hash: HashToken("x"), NodeType: "client"}}); err == nil {
		t.Fatal("token for an unknown node type accepted")
	}
	// Tokens a day past expiry are forgotten when the next one is added.
	mustApply(t, s, &Command{Op: OpAddToken, Now: t0.Add(26 * time.Hour), Token: &Token{Hash: HashToken("new"), NodeType: "storage"}})
	if len(s.Tokens) != 1 {
		t.Fatalf("%d tokens kept, want only the new one", len(s.Tokens))
	}
}

func TestSetStateBumpsEpoch(t *testing.T) {
	s := bootstrapped(t, 1, 4)
	e := s.Epoch
	mustApply(t, s, &Command{Op: OpSetState, Now: t0, NodeID: "node-1", State: Healthy})
	mustApply(t, s, &Command{Op: OpSetState, Now: t0, NodeID: "node-1", State: Healthy})
	if s.Epoch != e+1 {
		t.Fatalf("epoch %d → %d, want one bump", e, s.Epoch)
	}
	if _, err := s.Apply(&Command{Op: OpSetState, Now: t0, NodeID: "node-9", State: Down}); !errors.Is(err, ErrNoSuchNode) {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := s.Apply(&Command{Op: OpSetState, Now: t0, NodeID: "node-1", State: "WEIRD"}); err == nil {
		t.Fatal("unknown state accepted")
	}
	mustApply(t, s, &Command{Op: OpSetState, Now: t0, NodeID: "node-1", State: Down})
	if pm := s.PlacementMap(); pm.Devices[0].State == 0 {
		t.Fatal("a DOWN node's device is still up in the placement map")
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := bootstrapped(t, 1, 8)
	mustApply(t, s, &Command{Op: OpPlaceShards, Now: t0})
	mustApply(t, s, &Command{Op: OpSetConfig, Now: t0, Key: "nvme.queue_depth", Value: "64"})
	mustApply(t, s, &Command{Op: OpSetWindow, Now: t0, Window: &Window{Start: t0, Duration: time.Hour}})
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := r.Marshal()
	if string(b) != string(b2) {
		t.Fatalf("round trip differs:\n%s\n%s", b, b2)
	}
	if r.Config["nvme.queue_depth"] != "64" || len(r.ShardMap) != 8 || r.Window == nil {
		t.Fatalf("lost fields: %+v", r)
	}
}

func FuzzApply(f *testing.F) {
	for _, c := range []*Command{
		{Op: OpBootstrap, Name: "x", Nodes: 1, Shards: 2, Replicas: 1, K: 1, PGs: 1, Node: &Node{ID: "n"}},
		{Op: OpAddToken, Token: &Token{Hash: HashToken("s"), NodeType: "storage"}},
		{Op: OpJoin, Secret: "s", Node: &Node{}},
		{Op: OpPlaceShards},
		{Op: OpSetState, NodeID: "node-1", State: Down},
		{Op: OpSetWindow, Window: &Window{Duration: time.Second}},
	} {
		b, _ := c.Encode()
		f.Add(b)
	}
	f.Add([]byte(`{"op":"bootstrap","nodes":-1}`))
	f.Add([]byte(`{"op":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		s := bootstrapped(t, 1, 2)
		before, _ := s.Marshal()
		if _, err := s.Apply(c); err != nil {
			after, _ := s.Marshal()
			if string(before) != string(after) {
				t.Fatalf("a refused command changed the state: %s", b)
			}
		}
	})
}

func TestTokenTTL(t *testing.T) {
	s := bootstrapped(t, 1, 4)
	mustApply(t, s, &Command{Op: OpAddToken, Now: t0, Token: &Token{Hash: HashToken("short"), NodeType: "storage", Expires: t0.Add(time.Second)}})
	if _, err := s.Apply(&Command{Op: OpJoin, Now: t0.Add(2 * time.Second), Secret: "short", Node: &Node{}}); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("short token after its TTL: %v", err)
	}
	for _, exp := range []time.Time{t0, t0.Add(-time.Second), t0.Add(MaxTokenTTL + time.Second)} {
		if _, err := s.Apply(&Command{Op: OpAddToken, Now: t0, Token: &Token{Hash: HashToken("x"), NodeType: "storage", Expires: exp}}); err == nil {
			t.Fatalf("token expiring at %v (now %v) accepted", exp, t0)
		}
	}
}
