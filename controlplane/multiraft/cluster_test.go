package multiraft

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/hashicorp/raft"
)

// cluster is n Hosts on loopback in this process, each in its own dir.
type cluster struct {
	t     *testing.T
	hosts []*Host
	cfgs  []Config
	addrs []string
	boot  []raft.Server
}

// fast timeouts for tests that are not about the production defaults.
// Not too fast: other packages' tests share the two cores, and a leader
// that misses its lease steps down.
func fast(c *Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 400 * time.Millisecond
	c.CommitTimeout = 50 * time.Millisecond
	c.HeartbeatWindow = 2 * time.Millisecond
}

// putRetry applies an idempotent put through cl, retrying when the
// outcome is unknown (leadership moved under load).
func putRetry(ctx context.Context, t *testing.T, cl *Client, g uint32, key, value string, addrs []string) *kvsm.Result {
	t.Helper()
	for {
		res, err := cl.Apply(ctx, g, putCmd(t, key, value), addrs)
		if errors.Is(err, ErrOutcomeUnknown) && ctx.Err() == nil {
			t.Logf("group %d: %v; retrying the put", g, err)
			continue
		}
		return checkOK(t, res, err)
	}
}

func newCluster(t *testing.T, n int, tune func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t}
	base := t.TempDir()
	for i := 0; i < n; i++ {
		cfg := Config{
			NodeID:   fmt.Sprintf("n%d", i+1),
			Dir:      filepath.Join(base, fmt.Sprintf("n%d", i+1)),
			RaftAddr: "127.0.0.1:0",
			Logf:     t.Logf,
		}
		if tune != nil {
			tune(&cfg)
		}
		h, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RaftAddr = h.Addr() // a restart binds the same address
		c.hosts = append(c.hosts, h)
		c.cfgs = append(c.cfgs, cfg)
		c.addrs = append(c.addrs, h.Addr())
		c.boot = append(c.boot, h.Server())
	}
	t.Cleanup(func() {
		for _, h := range c.hosts {
			if h != nil {
				h.Close()
			}
		}
	})
	return c
}

func (c *cluster) startGroups(groups int) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.hosts))
	for _, h := range c.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := uint32(0); g < uint32(groups); g++ {
				if _, err := h.StartGroup(g, kvsm.KV{}, c.boot); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}

// leaders waits until every group has a leader on a live host, and
// returns the leader host index of each.
func (c *cluster) leaders(groups int, within time.Duration) []int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	out := make([]int, groups)
	for {
		missing := 0
		for g := 0; g < groups; g++ {
			out[g] = -1
			for i, h := range c.hosts {
				if h == nil {
					continue
				}
				if gr := h.Group(uint32(g)); gr != nil && gr.State() == raft.Leader {
					out[g] = i
				}
			}
			if out[g] < 0 {
				missing++
			}
		}
		if missing == 0 {
			return out
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d groups without a leader after %v", missing, groups, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func putCmd(t *testing.T, key, value string) []byte {
	b, err := kvsm.EncodeCommand(kvsm.Put([]byte(key), []byte(value)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func getQuery(t *testing.T, key string) []byte {
	b, err := kvsm.EncodeGet([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkOK(t *testing.T, res []byte, err error) *kvsm.Result {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	r, err := kvsm.DecodeResult(res)
	if err != nil || !r.OK {
		t.Fatalf("result %v %+v", err, r)
	}
	return r
}

func mustGet(t *testing.T) func([]byte, error) kvsm.Item {
	return func(ans []byte, err error) kvsm.Item {
		t.Helper()
		return checkGet(t, ans, err)
	}
}

func checkGet(t *testing.T, ans []byte, err error) kvsm.Item {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	it, err := kvsm.DecodeGet(ans)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// Three hosts, a few groups, both write-combining modes: every group
// elects a leader with replicas on all hosts; commands and queries work
// through any host; followers refuse with the leader's address.
func TestClusterApplyAndRead(t *testing.T) {
	for _, combining := range []bool{false, true} {
		t.Run(fmt.Sprintf("combining=%v", combining), func(t *testing.T) {
			const groups = 8
			c := newCluster(t, 3, func(cfg *Config) { fast(cfg); cfg.WriteCombining = combining })
			c.startGroups(groups)
			leaders := c.leaders(groups, 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			for g := uint32(0); g < groups; g++ {
				conf, err := c.hosts[leaders[g]].Group(g).Configuration(ctx)
				if err != nil || len(conf) != 3 {
					t.Fatalf("group %d configuration: %v %v", g, err, conf)
				}
				// Through every host's client, leader or not.
				for i, h := range c.hosts {
					key := fmt.Sprintf("via-%d", i)
					putRetry(ctx, t, h.Client(), g, key, fmt.Sprint(g), c.addrs)
					it := mustGet(t)(h.Client().Query(ctx, g, getQuery(t, key), c.addrs))
					if !it.Found || string(it.Value) != fmt.Sprint(g) {
						t.Fatalf("group %d via host %d: %+v", g, i, it)
					}
				}
				// A follower refuses and names the leader. Under the race detector on a
				// busy machine an election can make the chosen follower the leader
				// between the pick and the call: pick again then.
				var nl *NotLeaderError
				var fi int
				var follower *Group
				for try := 0; try < 20; try++ {
					fi = (leaders[g] + 1 + try) % 3
					follower = c.hosts[fi].Group(g)
					if follower.State() == raft.Leader {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					_, err = follower.Apply(ctx, putCmd(t, "x", "y"))
					if err == nil && try < 5 {
						continue // it was elected meanwhile and applied as the leader
					}
					break
				}
				if !errors.As(err, &nl) || (nl.LeaderAddr != "" && nl.LeaderAddr == c.addrs[fi]) {
					t.Fatalf("follower apply: %v", err)
				}
				if nl.LeaderAddr != c.addrs[leaders[g]] {
					t.Logf("group %d: leadership moved during the test (now %q)", g, nl.LeaderAddr)
				}
				if err := follower.Read(ctx, func(kvsm.Reader) error { return nil }); !errors.As(err, &nl) {
					t.Fatalf("follower read: %v", err)
				}
				// Linearizable local read on the leader.
				err = c.hosts[c.leaders(groups, 5*time.Second)[g]].Group(g).Read(ctx, func(r kvsm.Reader) error {
					v, found, err := r.Get([]byte("via-2"))
					if err != nil || !found || len(v) == 0 {
						return fmt.Errorf("via-2: %v %v", found, err)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			// A standalone client (no group here) reaches every leader.
			cl, err := NewClient(ClientConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for g := uint32(0); g < groups; g++ {
				putRetry(ctx, t, cl, g, "standalone", "1", c.addrs[2:])
			}
			// Replicas converge: every host's state has every key.
			for g := uint32(0); g < groups; g++ {
				for _, h := range c.hosts {
					waitApplied(t, h.Group(g), c.hosts[c.leaders(groups, 5*time.Second)[g]].Group(g).Status().CommitIndex)
				}
			}
			st := c.hosts[0].Groups()
			if len(st) != groups || st[3].ID != 3 || st[3].LeaderAddr == "" || st[3].AppliedIndex == 0 {
				t.Fatalf("status: %+v", st)
			}
			if combining {
				ls := c.hosts[leaders[0]].LogStore().Stats()
				t.Logf("leader log store: %d calls in %d commits", ls.Calls, ls.Commits)
			}
		})
	}
}

func waitApplied(t *testing.T, g *Group, index uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.FSM().AppliedIndex() < index {
		if time.Now().After(deadline) {
			t.Fatalf("group %d: applied %d, want %d", g.ID(), g.FSM().AppliedIndex(), index)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With the production timeouts, closing the host that leads the most
// groups gets each of them a new leader within 5 s; the host restarts
// from its state and catches up.
func TestFailoverAndCatchUp(t *testing.T) {
	const groups = 12
	c := newCluster(t, 3, nil)
	c.startGroups(groups)
	leaders := c.leaders(groups, 15*time.Second)
	count := make([]int, 3)
	for _, l := range leaders {
		count[l]++
	}
	victim := 0
	for i := range count {
		if count[i] > count[victim] {
			victim = i
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for g := uint32(0); g < groups; g++ {
		putRetry(ctx, t, c.hosts[0].Client(), g, "before", "1", c.addrs)
	}

	t.Logf("closing %s, leader of %d of %d groups", c.cfgs[victim].NodeID, count[victim], groups)
	c.hosts[victim].Close()
	c.hosts[victim] = nil
	start := time.Now()
	c.leaders(groups, 5*time.Second)
	t.Logf("every group has a leader %v after the close", time.Since(start).Round(time.Millisecond))

	live := (victim + 1) % 3
	for g := uint32(0); g < groups; g++ {
		putRetry(ctx, t, c.hosts[live].Client(), g, "during", "2", c.addrs)
	}

	h, err := Open(c.cfgs[victim])
	if err != nil {
		t.Fatal(err)
	}
	c.hosts[victim] = h
	for g := uint32(0); g < groups; g++ {
		if _, err := h.StartGroup(g, kvsm.KV{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The put reached a majority, but the live host may itself be a follower
	// that learns the commit index only with the next heartbeat or commit
	// timeout: wait for the value rather than for that host's commit index.
	for g := uint32(0); g < groups; g++ {
		gr := h.Group(g)
		deadline := time.Now().Add(15 * time.Second)
		for {
			v, found, err := gr.FSM().Reader().Get([]byte("during"))
			if err == nil && found && len(v) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("restarted host, group %d: during=%q %v %v after 15 s (applied %d)", g, v, found, err, gr.FSM().AppliedIndex())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A host that was down while the group snapshotted and compacted its log
// catches up by InstallSnapshot; a host restarted after its own snapshot
// keeps its persistent state without restoring.
func TestSnapshotCatchUp(t *testing.T) {
	const groups = 2
	c := newCluster(t, 3, func(cfg *Config) {
		fast(cfg)
		cfg.SnapshotThreshold = 40
		cfg.TrailingLogs = 10
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	c.startGroups(groups)
	leaders := c.leaders(groups, 10*time.Second)
	down := (leaders[0] + 1) % 3
	c.hosts[down].Close()
	c.hosts[down] = nil

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := (down + 1) % 3
	for i := 0; i < 150; i++ {
		for g := uint32(0); g < groups; g++ {
			putRetry(ctx, t, c.hosts[live].Client(), g, fmt.Sprintf("k%03d", i), fmt.Sprint(i), c.addrs)
		}
	}
	for g := uint32(0); g < groups; g++ {
		lg := c.hosts[c.leaders(groups, 5*time.Second)[g]].Group(g)
		if err := lg.Snapshot(ctx); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			t.Fatal(err)
		}
	}
	h, err := Open(c.cfgs[down])
	if err != nil {
		t.Fatal(err)
	}
	c.hosts[down] = h
	for g := uint32(0); g < groups; g++ {
		if _, err := h.StartGroup(g, kvsm.KV{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	sent := uint64(0)
	for _, hh := range c.hosts {
		sent += hh.Mux().Stats().SnapshotsSent
	}
	for g := uint32(0); g < groups; g++ {
		gr := h.Group(g)
		// As in TestFailoverAndCatchUp: the live host's own commit index may lag,
		// so wait for the keys themselves.
		deadline := time.Now().Add(15 * time.Second)
		for {
			n := 0
			gr.FSM().Reader().Scan(nil, nil, func(k, v []byte) bool { n++; return true })
			if n == 150 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("group %d after catch-up: %d keys after 15 s, want 150", g, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sent = 0
	for _, hh := range c.hosts {
		sent += hh.Mux().Stats().SnapshotsSent
	}
	if sent == 0 {
		t.Fatal("the lagging host caught up without a snapshot: the test did not exercise InstallSnapshot")
	}

	// Restart a host that has snapshots of its own: its state is kept (no
	// restore needed), and it serves the same data.
	before := c.hosts[live].Group(0).FSM().AppliedIndex()
	c.hosts[live].Close()
	h2, err := Open(c.cfgs[live])
	if err != nil {
		t.Fatal(err)
	}
	c.hosts[live] = h2
	gr, err := h2.StartGroup(0, kvsm.KV{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if gr.FSM().AppliedIndex() < before {
		t.Fatalf("restart lost state: applied %d, was %d", gr.FSM().AppliedIndex(), before)
	}
	if _, err := h2.StartGroup(1, kvsm.KV{}, nil); err != nil {
		t.Fatal(err)
	}
	c.leaders(groups, 10*time.Second)
	it := mustGet(t)(h2.Client().Query(ctx, 0, getQuery(t, "k149"), c.addrs))
	if string(it.Value) != "149" {
		t.Fatalf("k149 after restart: %+v", it)
	}
}

// 257 groups (the runbook's 256 shards plus the cluster group) on three
// hosts with the production timeouts all reach a leader, replicas on all
// three hosts; when the host leading the most of them is closed, every
// group has a leader again within 5 s.
func TestManyGroupsElect(t *testing.T) {
	if testing.Short() {
		t.Skip("257 groups")
	}
	const groups = 257
	c := newCluster(t, 3, func(cfg *Config) { cfg.Logf = nil })
	start := time.Now()
	c.startGroups(groups)
	leaders := c.leaders(groups, 30*time.Second)
	count := make([]int, 3)
	for _, l := range leaders {
		count[l]++
	}
	t.Logf("257 groups elected in %v; leaders per host %v", time.Since(start).Round(time.Millisecond), count)
	for _, h := range c.hosts {
		if n := len(h.Groups()); n != groups {
			t.Fatalf("%s runs %d groups", h.Config().NodeID, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	putRetry(ctx, t, c.hosts[1].Client(), 256, "cluster", "ok", c.addrs)

	victim := 0
	for i := range count {
		if count[i] > count[victim] {
			victim = i
		}
	}
	c.hosts[victim].Close()
	c.hosts[victim] = nil
	start = time.Now()
	c.leaders(groups, 5*time.Second)
	t.Logf("closed %s (leader of %d groups): all 257 groups led again after %v",
		c.cfgs[victim].NodeID, count[victim], time.Since(start).Round(time.Millisecond))
}

// TestReadLease: a leader answers reads from its own state for half a
// heartbeat timeout after a quorum round — even with every follower gone —
// and not a moment longer, nor while a leadership transfer runs.
func TestReadLease(t *testing.T) {
	c := newCluster(t, 3, fast)
	c.startGroups(1)
	li := c.leaders(1, 10*time.Second)[0]
	g := c.hosts[li].Group(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := func(ctx context.Context) error { return g.Read(ctx, func(kvsm.Reader) error { return nil }) }
	// A transfer fences the lease: a read during one does its own round.
	done := g.fence()
	if err := read(ctx); err != nil {
		t.Fatal(err)
	}
	if g.leaseUntil.Load() != 0 {
		t.Fatal("a read during a fence took a lease")
	}
	done()
	if err := read(ctx); err != nil {
		t.Fatal(err)
	}
	taken := monoNow()
	lease := c.cfgs[li].HeartbeatTimeout / 2
	if left := time.Duration(g.leaseUntil.Load() - taken); left <= 0 || left > lease {
		t.Fatalf("lease left %v after a read, want (0, %v]", left, lease)
	}
	var closing sync.WaitGroup
	for i, h := range c.hosts {
		if i != li {
			c.hosts[i] = nil
			closing.Add(1)
			go func() { defer closing.Done(); h.Close() }()
		}
	}
	if err := read(ctx); err != nil {
		t.Fatalf("a read %v into the lease, followers going: %v", time.Duration(monoNow()-taken), err)
	}
	closing.Wait()
	time.Sleep(lease)
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	if err := read(sctx); err == nil {
		t.Fatal("a read after the lease ended succeeded with no follower left")
	}
}
