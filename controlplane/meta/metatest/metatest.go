// Package metatest runs metadata shards inside a test's own process: a few
// multi-Raft hosts on loopback, each running every shard's real state
// machine (meta.ShardSM), without the control process around them. Tests of
// the metadata client and of the data path use it instead of a cluster of
// processes when they are not about processes.
package metatest

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/controlplane/multiraft"
	"github.com/hashicorp/raft"
)

// Cluster is the hosts and the shard map a client needs
// (metaclient.Options.Shards).
type Cluster struct {
	Hosts []*multiraft.Host
	// Shards maps each shard (1..n) to the Raft addresses of its replicas.
	Shards map[uint32][]string
}

// Start runs shards 1..shards on nodes hosts, each a replica of every
// shard, waits until every shard has a leader (30 s at most) and stops them
// when the test ends. Timeouts are short (500 ms heartbeats): these tests
// are not about the production defaults.
func Start(t testing.TB, nodes, shards int) *Cluster {
	t.Helper()
	c := &Cluster{Shards: map[uint32][]string{}}
	base := t.TempDir()
	var boot []raft.Server
	for i := 0; i < nodes; i++ {
		cfg := multiraft.Config{
			NodeID: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)), RaftAddr: "127.0.0.1:0",
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 50 * time.Millisecond, HeartbeatWindow: 2 * time.Millisecond,
		}
		h, err := multiraft.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Hosts = append(c.Hosts, h)
		boot = append(boot, h.Server())
	}
	t.Cleanup(func() {
		for _, h := range c.Hosts {
			h.Close()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for _, h := range c.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := uint32(1); g <= uint32(shards); g++ {
				if _, err := h.StartGroup(g, meta.ShardSM{Shard: g}, boot); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g := uint32(1); g <= uint32(shards); g++ {
		for _, h := range c.Hosts {
			c.Shards[g] = append(c.Shards[g], h.Addr())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for g := uint32(1); g <= uint32(shards); g++ {
		for !c.led(g) {
			if time.Now().After(deadline) {
				t.Fatalf("shard %d has no leader after 30 s", g)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

func (c *Cluster) led(g uint32) bool {
	for _, h := range c.Hosts {
		if grp := h.Group(g); grp != nil && grp.State() == raft.Leader {
			return true
		}
	}
	return false
}
