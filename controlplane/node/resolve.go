package node

import (
	"context"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/hashicorp/raft"
)

// Cross-shard metadata transactions are driven by clients. A client that
// dies (or loses its network) between preparing a transaction's shares and
// finishing them leaves locks that the next reader of those keys resolves.
// resolveLoop makes sure nothing stays locked when nobody reads: every
// resolveEvery it looks, on each shard this node leads, for intents older
// than resolveAge and resolves them (deciding them aborted if their
// coordinator never decided). It reads the local replica, which costs no
// Raft round; resolving is idempotent, so a stale read is harmless.
const (
	resolveEvery = 10 * time.Second
	resolveAge   = 30 * time.Second
)

func (n *Node) resolveLoop(ctx context.Context) {
	t := time.NewTicker(resolveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.resolveOnce(ctx, time.Now().Add(-resolveAge))
	}
}

// resolveOnce resolves the intents prepared before cutoff on the shards
// this node leads, and returns how many it resolved.
func (n *Node) resolveOnce(ctx context.Context, cutoff time.Time) int {
	n.mu.Lock()
	var led []uint32
	for id, g := range n.shards {
		if g.State() == raft.Leader {
			led = append(led, id)
		}
	}
	n.mu.Unlock()
	q := meta.EncodeQuery(&meta.Query{Kind: meta.QIntents, Time: cutoff.UnixNano()})
	done := 0
	for _, id := range led {
		g := n.group(id)
		if g == nil {
			continue
		}
		out, err := meta.ShardSM{Shard: id}.Query(g.FSM().Reader(), q)
		if err != nil {
			n.logf("shard %d: reading intents: %v", id, err)
			continue
		}
		a, err := meta.DecodeAnswer(out)
		if err != nil {
			n.logf("shard %d: reading intents: %v", id, err)
			continue
		}
		for _, in := range a.Intents {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			committed, err := meta.Resolve(rctx, n.applyShard, id, meta.Busy{Txid: in.Txid, Coord: in.Coord, Time: in.Time}, time.Now().UnixNano())
			cancel()
			if err != nil {
				n.logf("shard %d: resolving transaction %x: %v (will retry)", id, in.Txid, err)
				continue
			}
			done++
			n.logf("shard %d: resolved transaction %x left by its client (%s)", id, in.Txid, map[bool]string{true: "committed", false: "rolled back"}[committed])
		}
	}
	return done
}

// applyShard applies a command to a shard through its leader, wherever it is.
func (n *Node) applyShard(ctx context.Context, shard uint32, cmd []byte) ([]byte, error) {
	var addrs []string
	if st, err := n.localState(); err == nil {
		for _, id := range st.ShardMap[shard] {
			if m := st.Nodes[id]; m != nil {
				addrs = append(addrs, m.RaftAddr)
			}
		}
	}
	return n.host.Client().Apply(ctx, shard, cmd, addrs)
}
