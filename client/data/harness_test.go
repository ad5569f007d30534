package data

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/controlplane/multiraft"
	"github.com/hashicorp/raft"
)

// hosts (as in metaclient's tests) is a 3-node multi-Raft cluster in this process, each node running
// every metadata shard's state machine: the real shards, without the
// control process around them.
type hosts struct {
	t      *testing.T
	hs     []*multiraft.Host
	shards map[uint32][]string
}

func newHosts(t *testing.T, nodes, shards int) *hosts {
	t.Helper()
	h := &hosts{t: t, shards: map[uint32][]string{}}
	base := t.TempDir()
	var boot []raft.Server
	for i := 0; i < nodes; i++ {
		cfg := multiraft.Config{
			NodeID: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)), RaftAddr: "127.0.0.1:0",
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 50 * time.Millisecond, HeartbeatWindow: 2 * time.Millisecond,
		}
		hst, err := multiraft.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		h.hs = append(h.hs, hst)
		boot = append(boot, hst.Server())
	}
	t.Cleanup(func() {
		for _, hst := range h.hs {
			hst.Close()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for _, hst := range h.hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := uint32(1); g <= uint32(shards); g++ {
				if _, err := hst.StartGroup(g, meta.ShardSM{Shard: g}, boot); err != nil {
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
		for _, hst := range h.hs {
			h.shards[g] = append(h.shards[g], hst.Addr())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for g := uint32(1); g <= uint32(shards); g++ {
		for {
			led := false
			for _, hst := range h.hs {
				if grp := hst.Group(g); grp != nil && grp.State() == raft.Leader {
					led = true
				}
			}
			if led {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d has no leader after 30 s", g)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return h
}

func (h *hosts) client(opts metaclient.Options) *metaclient.Client {
	h.t.Helper()
	opts.Shards = h.shards
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := metaclient.Dial(ctx, nil, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}
