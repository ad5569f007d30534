package node

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
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

// resolveLoop also keeps the shards' inode-limit figures current (limitsOnce).
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
		n.limitsOnce(ctx)
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

// The inode limit (metadata.inode_limit, default meta.DefaultInodeLimit) is the
// cluster's. A create is one shard's command, so each shard checks its own count plus
// what it was last told the other shards hold; limitsOnce, on every node for the shards
// it leads, keeps that figure current (a command only when it moved by more than
// limitSlack of the limit, so an idle cluster commits nothing). The limit can therefore
// be overshot by the creates of one round (resolveEvery) across the shards.

// limitSlack is how far (as a fraction of the limit, at least 16 inodes) a shard's
// figure of the others may drift before it is corrected.
const limitSlack = 1.0 / 1000

// InodeLimit returns the cluster's inode limit from its configuration.
func InodeLimit(cfg map[string]string) uint64 {
	if v, err := strconv.ParseUint(cfg[InodeLimitKey], 10, 64); err == nil && v > 0 {
		return v
	}
	return meta.DefaultInodeLimit
}

// InodeLimitKey is the configuration key of the inode limit.
const InodeLimitKey = "metadata.inode_limit"

// shardStat reads one shard's inode figures: from this node's replica when it hosts
// one (possibly a little behind: these are estimates), else from its leader.
func (n *Node) shardStat(ctx context.Context, st *cluster.State, shard uint32) (meta.StatFS, error) {
	q := meta.EncodeQuery(&meta.Query{Kind: meta.QStatFS})
	var out []byte
	var err error
	if g := n.group(shard); g != nil {
		out, err = meta.ShardSM{Shard: shard}.Query(g.FSM().Reader(), q)
	} else {
		var addrs []string
		for _, id := range st.ShardMap[shard] {
			if m := st.Nodes[id]; m != nil {
				addrs = append(addrs, m.RaftAddr)
			}
		}
		out, err = n.host.Client().Query(ctx, shard, q, addrs)
	}
	if err != nil {
		return meta.StatFS{}, err
	}
	a, err := meta.DecodeAnswer(out)
	if err != nil {
		return meta.StatFS{}, err
	}
	return a.Stat, nil
}

// InodeFigures is the cluster's inode use as one node estimates it.
type InodeFigures struct {
	Used   uint64 `json:"used"`
	Limit  uint64 `json:"limit"`
	Shards int    `json:"shards_counted"`
	// Missing are shards whose figures could not be read (their count is left out).
	Missing []uint32 `json:"missing,omitempty"`
}

// inodeFigures sums every shard's inode count.
func (n *Node) inodeFigures(ctx context.Context, st *cluster.State) (*InodeFigures, map[uint32]meta.StatFS) {
	f := &InodeFigures{Limit: InodeLimit(st.Config)}
	per := make(map[uint32]meta.StatFS, len(st.ShardMap))
	for shard := range st.ShardMap {
		s, err := n.shardStat(ctx, st, shard)
		if err != nil {
			f.Missing = append(f.Missing, shard)
			continue
		}
		per[shard] = s
		f.Used += s.Used
		f.Shards++
	}
	sort.Slice(f.Missing, func(i, j int) bool { return f.Missing[i] < f.Missing[j] })
	return f, per
}

// limitsOnce tells each shard this node leads the limit and the others' count when
// they moved; it returns how many shards it told.
func (n *Node) limitsOnce(ctx context.Context) int {
	st, err := n.localState()
	if err != nil || len(st.ShardMap) == 0 {
		return 0
	}
	fig, per := n.inodeFigures(ctx, st)
	if len(fig.Missing) > 0 {
		return 0 // a partial sum would understate the others: wait for a full one
	}
	slack := max(uint64(16), uint64(float64(fig.Limit)*limitSlack))
	told := 0
	for shard, s := range per {
		g := n.group(shard)
		if g == nil || g.State() != raft.Leader {
			continue
		}
		others := fig.Used - s.Used
		if s.Limit == fig.Limit && absDiff(s.Others, others) <= slack {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := g.Apply(cctx, meta.EncodeCommand(&meta.Command{Kind: meta.CmdSetLimits, Limit: fig.Limit, Others: others, Time: time.Now().UnixNano()}))
		cancel()
		if err != nil {
			n.logf("shard %d: setting the inode limit: %v (will retry)", shard, err)
			continue
		}
		told++
	}
	return told
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}
