package node

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
)

func TestAlertStepAndHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	a := newAlertState(path)
	t0 := time.Date(2026, 3, 15, 2, 0, 0, 0, time.UTC)
	down := map[alertKey]string{{"node_down", "node-3"}: "DOWN"}
	if errs := a.step(t0, down, nil); len(errs) > 0 {
		t.Fatal(errs)
	}
	if e := a.active[alertKey{"node_down", "node-3"}]; e == nil || e.State != "pending" {
		t.Fatalf("after the condition holds: %+v, want pending", e)
	}
	a.step(t0.Add(4*time.Minute), down, nil)
	if e := a.active[alertKey{"node_down", "node-3"}]; e.State != "pending" {
		t.Fatalf("4 min in: %s, want pending (for: 5m)", e.State)
	}
	win := &cluster.Window{Start: t0, Duration: time.Hour}
	a.step(t0.Add(5*time.Minute), down, win)
	if e := a.active[alertKey{"node_down", "node-3"}]; e.State != "firing" || !e.Held {
		t.Fatalf("5 min in, inside a window: %+v, want firing and held", e)
	}
	a.step(t0.Add(6*time.Minute), nil, nil)
	if len(a.active) != 0 {
		t.Fatalf("after the condition ends: %d active", len(a.active))
	}
	want := []string{"pending", "firing", "resolved"}
	if len(a.history) != 3 {
		t.Fatalf("history %+v, want 3 transitions", a.history)
	}
	// the file holds the same transitions, and a new process reads them back
	b := newAlertState(path)
	if err := b.load(); err != nil {
		t.Fatal(err)
	}
	for i, e := range b.history {
		if e.State != want[i] || e.Alert != "node_down" || e.Subject != "node-3" {
			t.Fatalf("reloaded history %d: %+v, want %s", i, e, want[i])
		}
	}
}

func TestParseAlertHistoryBounds(t *testing.T) {
	var buf bytes.Buffer
	for i := range 30 {
		b, _ := json.Marshal(AlertEvent{Alert: "node_down", Subject: "node-" + string(rune('a'+i%26))})
		buf.Write(b)
		buf.WriteByte('\n')
	}
	buf.WriteString("not json\n{\"alert\":\"\"}\n")
	ev, bad, err := ParseAlertHistory(&buf, 10)
	if err != nil || len(ev) != 10 || bad != 2 {
		t.Fatalf("got %d events, %d bad, %v; want the last 10 and 2 bad", len(ev), bad, err)
	}
	long := strings.Repeat("x", MaxAlertLineBytes+10) + "\n"
	ev, bad, err = ParseAlertHistory(strings.NewReader(long), 10)
	if err != nil || len(ev) != 0 || bad != 1 {
		t.Fatalf("an over-long line: %d events, %d bad, %v", len(ev), bad, err)
	}
}

func FuzzParseAlertHistory(f *testing.F) {
	f.Add([]byte(`{"alert":"node_down","subject":"node-3","state":"pending","since":"2026-03-15T02:00:00Z","at":"2026-03-15T02:00:00Z","value":"DOWN"}` + "\n"))
	f.Add([]byte("\n\n{}\n{\"alert\":1}\n"))
	f.Add([]byte(strings.Repeat("{", 5000)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, _, _ := ParseAlertHistory(bytes.NewReader(b), 5)
		if len(ev) > 5 {
			t.Fatalf("%d events kept, at most 5", len(ev))
		}
		for _, e := range ev {
			if e.Alert == "" || len(e.Subject) > 256 || len(e.Value) > 1024 {
				t.Fatalf("kept an event out of bounds: %+v", e)
			}
		}
	})
}

func TestParseSince(t *testing.T) {
	for in, want := range map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "90m": 90 * time.Minute} {
		if d, err := ParseSince(in); err != nil || d != want {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"", "0s", "-1h", "32d", "abc", "1y", "99999999999999999999d"} {
		if _, err := ParseSince(in); err == nil {
			t.Errorf("ParseSince(%q) accepted", in)
		}
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"1h", "7d", "-3d", "1e9h", "d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseSince(s); err == nil && (d <= 0 || d > MaxAlertSince) {
			t.Fatalf("ParseSince(%q) = %v, out of bounds", s, d)
		}
	})
}

func TestCheckConfig(t *testing.T) {
	if v, scope, err := CheckConfig("nvme.queue_depth", "64"); err != nil || v != "64" || scope != "dataplane" {
		t.Fatalf("nvme.queue_depth=64: %q %q %v", v, scope, err)
	}
	if _, _, err := CheckConfig("nvme.queue_depth", "5000"); err == nil || !strings.Contains(err.Error(), "1..4096") {
		t.Fatalf("out of range: %v, want the valid range named", err)
	}
	if _, _, err := CheckConfig("dedupe.mode", "selective"); err == nil || !strings.Contains(err.Error(), "not supported yet") {
		t.Fatalf("dedupe.mode: %v", err)
	}
	if v, scope, err := CheckConfig("raft.write_combining", "on"); err == nil || v != "" || scope != "control" {
		t.Fatalf("raft.write_combining=on: %q %q %v (ParseBool refuses on)", v, scope, err)
	}
	if v, _, err := CheckConfig("raft.write_combining", "1"); err != nil || v != "true" {
		t.Fatalf("raft.write_combining=1: %q %v", v, err)
	}
}

func TestShardHealth(t *testing.T) {
	st := cluster.NewState()
	st.ShardMap = map[uint32][]string{1: {"a", "b", "c"}, 2: {"b", "c", "a"}, 3: {"c", "a", "b"}}
	rep := func(gs ...GroupReport) *NodeReport { return &NodeReport{Groups: gs} }
	nodes := []AdminNode{
		{ID: "a", Report: rep(GroupReport{ID: 1, State: "Leader"}, GroupReport{ID: 2, State: "Follower", Leader: "b"}, GroupReport{ID: 3, State: "Candidate"})},
		{ID: "b", Report: rep(GroupReport{ID: 1, State: "Follower"}, GroupReport{ID: 2, State: "Leader"})},
		{ID: "c"}, // did not answer
	}
	h := shardHealth(st, nodes)
	if h.Total != 3 || h.WithLeader != 2 || h.Healthy != 2 || len(h.Unhealthy) != 1 || h.Unhealthy[0] != 3 {
		t.Fatalf("%+v: want 3 shards, 2 led and healthy, shard 3 unhealthy", h)
	}
	// mid-transfer: nobody reports Leader, but a majority name "b"
	mid := map[string]GroupReport{"a": {State: "Follower", Leader: "b"}, "b": {State: "Candidate", Leader: "b"}, "c": {State: "Follower", Leader: "c"}}
	if l, running := ShardLeader([]string{"a", "b", "c"}, mid); l != "b" || running != 2 {
		t.Fatalf("ShardLeader mid-transfer = %q, %d; want b, 2", l, running)
	}
	// a minority naming a leader is not enough
	if l, _ := ShardLeader([]string{"a", "b", "c"}, map[string]GroupReport{"a": {State: "Follower", Leader: "b"}}); l != "" {
		t.Fatalf("one follower's word made %q leader", l)
	}
}

func TestLogNames(t *testing.T) {
	if m, err := NormalizeLogModule("claudefs::metadata"); err != nil || m != "control" {
		t.Fatalf("claudefs::metadata: %q %v", m, err)
	}
	if _, err := NormalizeLogModule("claudefs::nope"); err == nil {
		t.Fatal("unknown module accepted")
	}
	if l, err := NormalizeLogLevel("debug"); err != nil || l != "DEBUG" {
		t.Fatalf("debug: %q %v", l, err)
	}
	if _, err := NormalizeLogLevel("LOUD"); err == nil {
		t.Fatal("unknown level accepted")
	}
}
