package clustertest

import (
	"context"
	"fmt"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterOf256Shards brings up the runbook's shape (3 nodes, 256 metadata shards),
// checks every group has a leader and every node holds a replica of every group, then
// exercises join tokens and the death of a node.
func TestClusterOf256Shards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	for _, combining := range []bool{false, true} {
		t.Run(fmt.Sprintf("write_combining=%v", combining), func(t *testing.T) {
			var extra []string
			if combining {
				extra = append(extra, "--raft-write-combining")
			}
			testCluster256(t, devUp(t, 3, 256, extra...))
		})
	}
}

func testCluster256(t *testing.T, c *cluster) {
	s := c.status()
	if s.Groups.Total != 257 || len(s.Nodes) != 3 {
		t.Fatalf("%d groups on %d nodes, want 257 on 3", s.Groups.Total, len(s.Nodes))
	}
	for _, n := range s.Nodes {
		if n.State != "HEALTHY" || n.Dataplane.Pid == 0 || n.Control.Pid == 0 {
			t.Fatalf("node %s: state %s, dataplane pid %d, control pid %d", n.ID, n.State, n.Dataplane.Pid, n.Control.Pid)
		}
	}
	// Leaderships move to each shard's preferred replica a few seconds after start
	// (a group is briefly without a leader during each transfer): wait until every
	// group is led exactly once and the nodes lead about a third each.
	var leads []int
	took := waitFor(t, 30*time.Second, "every group led once, leaderships spread", func() bool {
		leads = leads[:0]
		total := 0
		for _, n := range s.Nodes {
			ns, err := c.nodeStatus(n.Control.Addr)
			if err != nil {
				return false
			}
			// 3 replicas on 3 nodes: every node holds every group.
			if ns.Groups.Total != 257 {
				t.Fatalf("%s hosts %d groups, want 257", n.ID, ns.Groups.Total)
			}
			leads = append(leads, ns.Groups.Leading)
			total += ns.Groups.Leading
		}
		for _, l := range leads {
			if l < 80 || l > 92 { // 85 or 86 each when settled, the cluster group's leader one more
				return false
			}
		}
		return total == 257
	})
	t.Logf("leaderships per node %v, settled %v after dev up", leads, took.Round(time.Millisecond))
	waitEpochPushed(t, c, s.Epoch)

	t.Run("tokens", func(t *testing.T) { testTokens(t, c) })
	t.Run("node down", func(t *testing.T) { testNodeDown(t, c) })
}

func testTokens(t *testing.T, c *cluster) {
	seed := c.status().Nodes[0].Control.Addr
	creds := []string{"--cert", filepath.Join(c.dir, "admin.pem"), "--ca", filepath.Join(c.dir, "ca.crt")}
	// A token past its life is refused, saying so.
	out, err := cfs(t, append([]string{"admin", "cluster-token", "--node-type", "storage", "--endpoint", seed, "--ttl", "1s"}, creds...)...)
	if err != nil {
		t.Fatalf("cluster-token: %v\n%s", err, out)
	}
	short := strings.TrimSpace(out)
	time.Sleep(1500 * time.Millisecond)
	out, err = cfs(t, "server", "join", "--init-only", "--token", short, "--seed", seed, "--dir", filepath.Join(t.TempDir(), "late"), "--raft-port", "0", "--gossip-port", "0", "--client-port", "0", "--data-port", "0")
	if err == nil || !strings.Contains(out, "expired") {
		t.Fatalf("join with an expired token: err %v, output:\n%s", err, out)
	}
	// A good token admits one node, once.
	tok, err := cfs(t, append([]string{"admin", "cluster-token", "--node-type", "storage", "--endpoint", seed}, creds...)...)
	if err != nil {
		t.Fatalf("cluster-token: %v\n%s", err, tok)
	}
	tok = strings.TrimSpace(tok)
	join := func(name string) (string, error) {
		return cfs(t, "server", "join", "--init-only", "--token", tok, "--seed", seed, "--dir", filepath.Join(t.TempDir(), name), "--raft-port", "0", "--gossip-port", "0", "--client-port", "0", "--data-port", "0")
	}
	if out, err := join("first"); err != nil || !strings.Contains(out, "node-4 joined") {
		t.Fatalf("join with a fresh token: %v\n%s", err, out)
	}
	out, err = join("second")
	if err == nil || !strings.Contains(out, "already used by node-4") {
		t.Fatalf("join with a used token: err %v, output:\n%s", err, out)
	}
	_, pin, _ := strings.Cut(tok, ".") // the cluster CA's pin: the joiner trusts the seed
	out, err = cfs(t, "server", "join", "--init-only", "--token", "cfsjoin-bogus."+pin, "--seed", seed, "--dir", filepath.Join(t.TempDir(), "bogus"))
	if err == nil || !strings.Contains(out, "not known") {
		t.Fatalf("join with an unknown token: err %v, output:\n%s", err, out)
	}
	// A token without the pin, or with another CA's, never reaches the cluster.
	out, err = cfs(t, "server", "join", "--init-only", "--token", "cfsjoin-bogus", "--seed", seed, "--dir", filepath.Join(t.TempDir(), "nopin"))
	if err == nil || !strings.Contains(out, "no CA pin") {
		t.Fatalf("join with a token without a pin: err %v, output:\n%s", err, out)
	}
	out, err = cfs(t, "server", "join", "--init-only", "--token", "cfsjoin-bogus."+strings.Repeat("0", 64), "--seed", seed, "--dir", filepath.Join(t.TempDir(), "otherpin"))
	if err == nil || !strings.Contains(out, "not signed by the CA the join token names") {
		t.Fatalf("join with another CA's pin: err %v, output:\n%s", err, out)
	}
}

// testNodeDown SIGKILLs every process of one node and checks the others record it DOWN
// within 5 s and elect new leaders for its groups; then restarts it.
func testNodeDown(t *testing.T, c *cluster) {
	s := c.status()
	victim := s.Nodes[2]
	other := s.Nodes[0].Control.Addr
	killNode(t, 3, victim.SupervisorPid, victim.Control.Pid, victim.Dataplane.Pid)
	killed := time.Now()
	took := waitFor(t, 5*time.Second, victim.ID+" recorded DOWN", func() bool {
		ns, err := c.nodeStatus(other)
		if err != nil {
			return false
		}
		for _, n := range ns.Nodes {
			if n.ID == victim.ID {
				return n.State == "DOWN"
			}
		}
		return false
	})
	t.Logf("%s recorded DOWN %v after SIGKILL", victim.ID, took)
	waitFor(t, 15*time.Second, "every group led by a live node", func() bool {
		led := map[uint32]bool{}
		for _, n := range s.Nodes[:2] {
			ns, err := c.nodeStatus(n.Control.Addr)
			if err != nil {
				return false
			}
			for _, g := range ns.GroupList {
				if g.State == "Leader" {
					led[g.ID] = true
				}
			}
		}
		return len(led) == 257
	})
	t.Logf("all 257 groups led by the two live nodes %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	// The DOWN state changed the placement map: the survivors' dataplanes fence with the new epoch.
	ns, err := c.nodeStatus(other)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Epoch <= s.Epoch {
		t.Fatalf("placement epoch %d after a node went DOWN, was %d", ns.Epoch, s.Epoch)
	}
	waitEpochPushed(t, &cluster{t: t, dir: c.dir, only: []string{s.Nodes[0].Dir, s.Nodes[1].Dir}}, ns.Epoch)
	if out, err := cfs(t, "dev", "up", "--dir", c.dir, "--wait", "90s"); err != nil {
		t.Fatalf("restarting the node with cfs dev up: %v\n%s", err, out)
	}
	for _, n := range c.status().Nodes {
		if n.State != "HEALTHY" {
			t.Fatalf("after restart %s is %s", n.ID, n.State)
		}
	}
	// The restarted node gets its preferred leaderships back; each transfer leaves
	// a group leaderless for a moment.
	waitFor(t, 30*time.Second, "every group with a leader after the restart", func() bool {
		return c.status().Groups.WithLeader == 257
	})
}

// waitEpochPushed checks, over each node's sidecar channel, that its dataplane fences with
// (at least) the cluster's placement epoch within 5 s.
func waitEpochPushed(t *testing.T, c *cluster, epoch uint64) {
	t.Helper()
	dirs := c.only
	if dirs == nil {
		for _, n := range c.status().Nodes {
			dirs = append(dirs, n.Dir)
		}
	}
	for _, d := range dirs {
		sc := sidecar.NewClient(node.DataplaneSocket(d), sidecar.ClientOptions{Timeout: 2 * time.Second})
		var got uint64
		waitFor(t, 5*time.Second, "placement epoch pushed to the dataplane of "+d, func() bool {
			h, err := sc.Health(context.Background())
			got = h.Epoch
			return err == nil && h.Epoch >= epoch
		})
		sc.Close()
		t.Logf("%s: dataplane epoch %d (cluster %d)", filepath.Base(d), got, epoch)
	}
}
