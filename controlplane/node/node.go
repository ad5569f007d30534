// Package node is a storage node's control process: it hosts the node's Raft groups (the
// cluster group and the metadata shards placed on it) on one multiplexed transport, runs
// the failure detector, keeps the cluster group's record of the members true while it
// leads it, pushes placement epochs to the node's dataplane, and serves the client API.
//
// Who decides what:
//   - the cluster group's leader alone proposes membership changes (node states, voters,
//     shard placement); followers only forward requests to it;
//   - each node starts the metadata shards the cluster state places on it, bootstrapping
//     a shard's group with its full replica set when the shard has no state yet (every
//     replica bootstraps with the same configuration, which Raft accepts);
//   - Apply and Read on a group go to that group's leader; a node that is not the leader
//     forwards the request once to the leader's client API.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/membership"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/controlplane/multiraft"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/hashicorp/raft"
)

// Timing of the control loops.
const (
	reconcileEvery = 500 * time.Millisecond
	// MaxVoters of the cluster group; further members replicate it as non-voters.
	MaxVoters = 5
)

// Node is a running control process.
type Node struct {
	cfg   *Config
	dir   string
	logf  func(string, ...any)
	start time.Time

	host   *multiraft.Host
	csm    *clusterSM
	cgroup *multiraft.Group
	gossip *membership.Membership
	tls    *nodeTLS // certificates (tls.go)
	client *Client  // the client API of other nodes, with this node's certificate
	http   *http.Server

	mu     sync.Mutex
	shards map[uint32]*multiraft.Group // started metadata shards

	adm *admin // admin API, metrics, alerts (admin*.go)
}

// Run runs the control process of the node in dir until ctx ends.
func Run(ctx context.Context, dir string, logf func(string, ...any)) error {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	tlsc, err := loadNodeTLS(dir)
	if err != nil {
		return err
	}
	n := &Node{cfg: cfg, dir: dir, logf: logf, start: time.Now(), shards: map[uint32]*multiraft.Group{}, tls: tlsc, client: NewClient(10*time.Second, tlsc.client)}
	n.host, err = multiraft.Open(multiraft.Config{
		NodeID:         cfg.ID,
		Dir:            RaftDir(dir),
		RaftAddr:       cfg.RaftAddr,
		WriteCombining: cfg.WriteCombining,
		Logf:           logf,
		OnApply:        n.onShardApply,
	})
	if err != nil {
		return fmt.Errorf("opening the Raft host: %w", err)
	}
	defer func() {
		if cerr := n.host.Close(); cerr != nil {
			logf("closing the Raft host: %v", cerr)
		}
	}()
	var boot []raft.Server
	if cfg.Bootstrap != nil {
		boot = []raft.Server{{ID: raft.ServerID(cfg.ID), Address: raft.ServerAddress(cfg.RaftAddr), Suffrage: raft.Voter}}
	}
	n.csm = newClusterSM()
	if n.cgroup, err = n.host.StartGroup(ClusterGroup, n.csm, boot); err != nil {
		return fmt.Errorf("starting the cluster group: %w", err)
	}
	n.gossip, err = membership.Start(membership.Config{
		NodeID: cfg.ID, Bind: cfg.GossipAddr, Logf: logf,
		Meta: membership.Meta{ClientAddr: cfg.ClientAddr, RaftAddr: cfg.RaftAddr, DataplaneAddr: cfg.DataplaneAddr},
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := n.gossip.Leave(2 * time.Second); err != nil {
			logf("leaving gossip: %v", err)
		}
	}()
	n.joinGossip()
	n.newAdmin()
	defer n.adm.dp.Close()

	l, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		return fmt.Errorf("client API on %s: %w", cfg.ClientAddr, err)
	}
	n.http = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		TLSConfig: n.tls.server, ErrorLog: log.New(logWriter(logf), "client API: ", 0)}
	go func() {
		if err := n.http.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("client API: %v", err)
		}
	}()
	logf("%s running: client API https://%s, Raft %s, gossip %s", cfg.ID, cfg.ClientAddr, cfg.RaftAddr, cfg.GossipAddr)

	loops, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); n.resolveLoop(loops) }()
	go func() { defer wg.Done(); n.reconcileLoop(loops) }()
	go func() { defer wg.Done(); n.shardLoop(loops) }()
	go func() { defer wg.Done(); n.epochLoop(loops) }()
	n.startAdmin(loops, &wg)
	<-ctx.Done()
	logf("stopping")
	cancel()
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = n.http.Shutdown(sctx)
	return nil
}

// joinGossip meets the seeds of node.json and every member the cluster state knows.
func (n *Node) joinGossip() {
	seeds := append([]string(nil), n.cfg.Seeds...)
	if st, err := n.localState(); err == nil {
		for _, m := range st.Nodes {
			if m.ID != n.cfg.ID && m.GossipAddr != "" {
				seeds = append(seeds, m.GossipAddr)
			}
		}
	}
	if len(seeds) == 0 {
		return
	}
	if _, err := n.gossip.Join(seeds); err != nil {
		n.logf("gossip: %v (will keep probing as members are learnt)", err)
	}
}

// localState reads this replica's copy of the cluster state (not linearizable).
func (n *Node) localState() (*cluster.State, error) {
	return loadState(n.cgroup.FSM().Reader())
}

// propose applies a cluster command through the cluster group's leader, which must be
// this node; the command is stamped with this node's clock.
func (n *Node) propose(ctx context.Context, c *cluster.Command) (*cluster.Result, error) {
	c.Now = time.Now().UTC()
	b, err := c.Encode()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := n.cgroup.Apply(ctx, b)
	if err != nil {
		return nil, err
	}
	n.observeApply(ClusterGroup, start)
	var r applyResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("cluster group result: %w", err)
	}
	if r.Error != "" {
		return nil, &refusedError{r.Error}
	}
	return &r.Result, nil
}

// refusedError is a cluster command the state machine refused (a bad token, …).
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// reconcileLoop keeps the cluster group's record true while this node leads it: the
// bootstrap, node states from gossip, the cluster group's voters, and shard placement.
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	last := ""
	leading := false // this node leads and its local state holds every commit
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.gossip.Changed():
		}
		if !isLeader(n.cgroup) {
			leading = false
			continue
		}
		if !leading {
			// A new leader may not have applied everything committed before its term;
			// a barrier makes its local state complete. Later commits are its own.
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := barrier(bctx, n.cgroup)
			cancel()
			if err != nil {
				continue
			}
			leading = true
		}
		if err := n.reconcile(ctx); err != nil && err.Error() != last && ctx.Err() == nil {
			n.logf("reconcile: %v", err)
			last = err.Error()
		} else if err == nil {
			last = ""
		}
	}
}

func (n *Node) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := n.localState()
	if err != nil {
		return err
	}
	if !st.Bootstrapped() {
		b := n.cfg.Bootstrap
		if b == nil {
			return errors.New("leading an unbootstrapped cluster group without bootstrap settings")
		}
		_, err := n.propose(ctx, &cluster.Command{Op: cluster.OpBootstrap, Name: b.ClusterName, Nodes: b.InitialNodes, Shards: b.Shards,
			Replicas: b.Replicas, K: b.K, M: b.M, PGs: b.PGs, Node: n.selfNode()})
		if err == nil {
			n.logf("bootstrapped cluster %q: %d shards, placed when %d nodes have joined", b.ClusterName, b.Shards, b.InitialNodes)
		}
		return err
	}
	alive := n.gossip.Alive()
	for _, id := range st.NodeIDs() {
		m := st.Nodes[id]
		_, up := alive[id]
		var to cluster.NodeState
		switch {
		case up && (m.State == cluster.Pending || m.State == cluster.Down):
			to = cluster.Healthy
		case !up && m.State == cluster.Healthy:
			to = cluster.Down
		default:
			continue
		}
		if _, err := n.propose(ctx, &cluster.Command{Op: cluster.OpSetState, NodeID: id, State: to}); err != nil {
			return err
		}
		n.logf("%s: %s → %s", id, m.State, to)
	}
	if err := n.syncVoters(ctx, st); err != nil {
		return err
	}
	if len(st.ShardMap) == 0 && len(st.Nodes) >= st.InitialNodes {
		r, err := n.propose(ctx, &cluster.Command{Op: cluster.OpPlaceShards})
		if err != nil {
			return err
		}
		n.logf("placed %d metadata shards on %d nodes (epoch %d)", st.Shards, len(st.Nodes), r.Epoch)
	}
	return nil
}

func (n *Node) selfNode() *cluster.Node {
	return &cluster.Node{ID: n.cfg.ID, Type: "storage", RaftAddr: n.cfg.RaftAddr, GossipAddr: n.cfg.GossipAddr,
		ClientAddr: n.cfg.ClientAddr, DataplaneAddr: n.cfg.DataplaneAddr, Devices: []string{n.cfg.Device}}
}

// syncVoters adds HEALTHY members missing from the cluster group's configuration: up to
// MaxVoters voters (in node order), the rest as non-voters.
func (n *Node) syncVoters(ctx context.Context, st *cluster.State) error {
	servers, err := n.cgroup.Configuration(ctx)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	voters := 0
	for _, s := range servers {
		in[string(s.ID)] = true
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, id := range st.NodeIDs() {
		m := st.Nodes[id]
		// Only a node that has shown up alive joins the group: a voter that never comes
		// would count against the quorum.
		if in[id] || m.State != cluster.Healthy {
			continue
		}
		if voters < MaxVoters {
			if err := n.cgroup.AddVoter(ctx, id, m.RaftAddr); err != nil {
				return fmt.Errorf("adding %s as a voter of the cluster group: %w", id, err)
			}
			voters++
		} else if err := n.cgroup.Raft().AddNonvoter(raft.ServerID(id), raft.ServerAddress(m.RaftAddr), 0, 5*time.Second).Error(); err != nil {
			return fmt.Errorf("adding %s to the cluster group: %w", id, err)
		}
	}
	return nil
}

// shardLoop starts the metadata shards the cluster state places on this node.
func (n *Node) shardLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := n.startShards(); err != nil && ctx.Err() == nil {
			n.logf("starting shards: %v", err)
		}
		n.balanceLeaders(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.csm.Changed():
		}
	}
}

func (n *Node) startShards() error {
	st, err := n.localState()
	if err != nil || len(st.ShardMap) == 0 {
		return err
	}
	ids := make([]uint32, 0, len(st.ShardMap))
	for g := range st.ShardMap {
		ids = append(ids, g)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	started := 0
	for _, g := range ids {
		replicas := st.ShardMap[g]
		mine := false
		servers := make([]raft.Server, 0, len(replicas))
		for _, id := range replicas {
			mine = mine || id == n.cfg.ID
			m := st.Nodes[id]
			if m == nil {
				return fmt.Errorf("shard %d placed on unknown node %s", g, id)
			}
			servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(m.RaftAddr), Suffrage: raft.Voter})
		}
		n.mu.Lock()
		_, running := n.shards[g]
		n.mu.Unlock()
		if !mine || running {
			continue
		}
		grp, err := n.host.StartGroup(g, meta.ShardSM{Shard: g}, servers)
		if err != nil {
			return fmt.Errorf("shard %d: %w", g, err)
		}
		n.mu.Lock()
		n.shards[g] = grp
		n.mu.Unlock()
		started++
	}
	if started > 0 {
		n.logf("started %d metadata shard replicas", started)
	}
	return nil
}

// group returns a hosted group by id.
func (n *Node) group(id uint32) *multiraft.Group {
	if id == ClusterGroup {
		return n.cgroup
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.shards[id]
}

// newToken returns a fresh join token's text.
func newToken() (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "cfsjoin-" + hex.EncodeToString(b), nil
}

// epochLoop pushes the cluster's placement epoch to this node's dataplane over the sidecar
// channel whenever it grows, and again after the dataplane restarts (it starts at 0).
func (n *Node) epochLoop(ctx context.Context) {
	sc := sidecar.NewClient(DataplaneSocket(n.dir), sidecar.ClientOptions{Timeout: 5 * time.Second})
	defer sc.Close()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	lastErr := ""
	for {
		if st, err := n.localState(); err == nil && st.Epoch > 0 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			// Asking every tick is cheap and notices a restarted dataplane (epoch 0).
			h, herr := sc.Health(cctx)
			if herr == nil && h.Epoch < st.Epoch {
				_, herr = sc.SetEpoch(cctx, st.Epoch)
			}
			cancel()
			if herr != nil && herr.Error() != lastErr && ctx.Err() == nil {
				n.logf("placement epoch %d not pushed to the dataplane: %v", st.Epoch, herr)
			}
			lastErr = ""
			if herr != nil {
				lastErr = herr.Error()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.csm.Changed():
		}
	}
}

func isLeader(g *multiraft.Group) bool { return g.State() == raft.Leader }

// barrier waits until g's local state holds every command committed before the call.
func barrier(ctx context.Context, g *multiraft.Group) error {
	f := g.Raft().Barrier(5 * time.Second)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leader balancing: a leader costs more than a follower (it drives the heartbeats), so each
// shard's leadership goes back to its preferred replica (the first of its placement,
// spread evenly by placement.Replicas) once that node has been HEALTHY for a while.
const (
	leaderSettle     = 3 * time.Second // a node must be HEALTHY this long to get leaderships back
	transfersPerTick = 32              // leadership transfers started per shardLoop tick
)

func (n *Node) balanceLeaders(ctx context.Context) {
	st, err := n.localState()
	if err != nil || len(st.ShardMap) == 0 {
		return
	}
	alive := n.gossip.Alive()
	started := 0
	for g, replicas := range st.ShardMap {
		if started == transfersPerTick {
			return
		}
		pref := replicas[0]
		grp := n.group(g)
		if pref == n.cfg.ID || grp == nil || !isLeader(grp) {
			continue
		}
		m := st.Nodes[pref]
		if _, up := alive[pref]; !up || m == nil || m.State != cluster.Healthy || time.Since(m.Since) < leaderSettle {
			continue
		}
		started++
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := grp.LeadershipTransfer(tctx, pref, m.RaftAddr)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.logf("handing shard %d's leadership to %s: %v", g, pref, err)
		}
	}
}
