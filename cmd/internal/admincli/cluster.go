package admincli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

// StatusJSON is `status --json`.
type StatusJSON struct {
	ClusterName    string            `json:"cluster_name"`
	Status         string            `json:"status"` // HEALTHY, DEGRADED, CRITICAL
	Reasons        []string          `json:"reasons,omitempty"`
	Nodes          int               `json:"nodes"`
	NodesHealthy   int               `json:"nodes_healthy"`
	NodeStates     map[string]string `json:"node_states"`
	Groups         node.ShardHealth  `json:"raft_groups"`
	ClusterLeader  string            `json:"cluster_leader"`
	Epoch          uint64            `json:"epoch"`
	ReplicationLag *float64          `json:"replication_lag_s"` // null: not supported yet
	ReplicationMsg string            `json:"replication_lag_note"`
	ReplicateP99   float64           `json:"metadata_replicate_latency_p99_s"`
	Window         *node.AdminWindow `json:"maintenance_window,omitempty"`
	AnsweredBy     string            `json:"answered_by"`
}

const lagNote = "not supported yet: no S3 tiering or cross-site replication in this build"

func summarize(c *node.AdminCluster) *StatusJSON {
	s := &StatusJSON{ClusterName: c.ClusterName, Nodes: len(c.Nodes), NodeStates: map[string]string{}, Groups: c.Groups,
		ClusterLeader: c.Leader, Epoch: c.Epoch, ReplicationMsg: lagNote, Window: c.Window, AnsweredBy: c.AnsweredBy}
	for _, n := range c.Nodes {
		s.NodeStates[n.ID] = string(n.State)
		if n.State == cluster.Healthy {
			s.NodesHealthy++
		} else {
			s.Reasons = append(s.Reasons, fmt.Sprintf("%s is %s", n.ID, n.State))
		}
		if n.Report != nil {
			s.ReplicateP99 = max(s.ReplicateP99, n.Report.ReplicateP99)
		}
	}
	switch {
	case c.Leader == "" || c.Groups.WithLeader < c.Groups.Total || c.Groups.Total == 0:
		s.Status = "CRITICAL"
		if c.Leader == "" {
			s.Reasons = append(s.Reasons, "the cluster group has no leader")
		}
		if c.Groups.Total == 0 {
			s.Reasons = append(s.Reasons, "the metadata shards are not placed yet (waiting for the initial nodes)")
		} else if c.Groups.WithLeader < c.Groups.Total {
			s.Reasons = append(s.Reasons, fmt.Sprintf("%d shards have no leader", c.Groups.Total-c.Groups.WithLeader))
		}
	case s.NodesHealthy < s.Nodes || c.Groups.Healthy < c.Groups.Total:
		s.Status = "DEGRADED"
		if c.Groups.Healthy < c.Groups.Total {
			s.Reasons = append(s.Reasons, fmt.Sprintf("%d shards lack a majority of running replicas", c.Groups.Total-c.Groups.Healthy))
		}
	default:
		s.Status = "HEALTHY"
	}
	return s
}

func dur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func ms(s float64) string {
	if s == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", s*1000)
}

func newStatus(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Overall health: cluster status, nodes, Raft groups",
		Long: `status asks any node for the cluster: the members and their states, and each
member's own report of the Raft groups it runs. A metadata shard is healthy
when a replica leads it and a majority of its replicas run it.

Status is HEALTHY (every node HEALTHY, every shard healthy), DEGRADED (a node
not HEALTHY or a shard short of replicas, every shard still led) or CRITICAL
(no cluster leader, or a shard without a leader).

--json fields: cluster_name, status, reasons[], nodes, nodes_healthy,
node_states{id: state}, raft_groups{total, with_leader, healthy, unhealthy[]},
cluster_leader, epoch, replication_lag_s (null: not supported yet),
metadata_replicate_latency_p99_s, maintenance_window, answered_by.`,
		Example: fmt.Sprintf("  %[1]s status\n  %[1]s status --json | jq -r .status", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			s := summarize(c)
			if f.asJSON {
				return f.printJSON(s)
			}
			f.printf("Cluster: %s (%d nodes)\n", s.ClusterName, s.Nodes)
			f.printf("Status: %s\n", s.Status)
			for _, r := range s.Reasons {
				f.printf("  - %s\n", r)
			}
			f.printf("Raft Groups: %d/%d healthy (%d with a leader)\n", s.Groups.Healthy, s.Groups.Total, s.Groups.WithLeader)
			f.printf("Nodes: %d/%d healthy\n", s.NodesHealthy, s.Nodes)
			f.printf("Cluster leader: %s (placement epoch %d)\n", orNone(s.ClusterLeader), s.Epoch)
			f.printf("Replication Lag: %s\n", lagNote)
			f.printf("Metadata replicate latency p99: %s\n", ms(s.ReplicateP99))
			if w := s.Window; w != nil {
				f.printf("Maintenance window: %s to %s (active: %v)\n", w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339), w.Active)
			}
			return nil
		},
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// NodeJSON is one node in `node-status --json` and `node-list --json`.
type NodeJSON struct {
	ID           string  `json:"id"`
	State        string  `json:"state"` // PENDING, HEALTHY, DOWN, DRAINING, DRAINED
	Since        string  `json:"since"`
	AgeS         float64 `json:"age_s"` // in this state
	Alive        bool    `json:"alive"`
	Role         string  `json:"role"`
	ClientAddr   string  `json:"client_addr"`
	Shards       int     `json:"shards"`        // shard replicas placed on it
	GroupsHosted int     `json:"groups_hosted"` // Raft groups it runs (report)
	Leading      int     `json:"leading"`
	DataplaneUp  bool    `json:"dataplane_up"`
	UsagePct     float64 `json:"usage_pct"`
	Kernel       string  `json:"kernel_version,omitempty"`
	UptimeS      float64 `json:"uptime_s"`
	Error        string  `json:"error,omitempty"`
}

func nodeJSON(n node.AdminNode, now time.Time) NodeJSON {
	j := NodeJSON{ID: n.ID, State: string(n.State), Since: n.Since.UTC().Format(time.RFC3339), AgeS: now.Sub(n.Since).Seconds(),
		Alive: n.Alive, Role: strings.ToUpper(n.Type), ClientAddr: n.ClientAddr, Shards: n.Shards, Error: n.Error}
	if r := n.Report; r != nil {
		j.UptimeS, j.Kernel = r.Uptime, r.Host.Kernel
		for _, g := range r.Groups {
			j.GroupsHosted++
			if g.State == "Leader" {
				j.Leading++
			}
		}
		if r.Dataplane != nil {
			j.DataplaneUp = true
			if c := r.Dataplane.Health.CapacityBytes; c > 0 {
				j.UsagePct = round1(100 * float64(r.Dataplane.Health.UsedBytes) / float64(c))
			}
		} else if j.Error == "" {
			j.Error = r.DPError
		}
	}
	return j
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func newNodeStatus(f *flags) *cobra.Command {
	var all, pending, watch bool
	cmd := &cobra.Command{
		Use:   "node-status [NODE] [--all] [--pending] [--watch]",
		Short: "Nodes: state (HEALTHY, DOWN, …), age, shards, dataplane, usage",
		Long: `node-status shows each node as the cluster group records it (state and how
long it has been in it) and as the node reports itself (Raft groups run and
led, its dataplane, device usage, kernel). A node that does not answer is
shown with the reason.

NODE shows one node; --all (the default) every node; --pending the nodes
still PENDING (joined, not serving yet). --watch repeats every 2 s until
Ctrl+C.

--json fields: nodes[] of id, state, since, age_s, alive, role, client_addr,
shards, groups_hosted, leading, dataplane_up, usage_pct, kernel_version,
uptime_s, error.`,
		Example: fmt.Sprintf("  %[1]s node-status --all\n  %[1]s node-status node-2 --watch\n  %[1]s node-status --all --json | jq -r '.nodes[] | select(.state==\"DOWN\") | .id'", f.o.Prog),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			one := ""
			if len(args) == 1 {
				one = args[0]
			}
			show := func() error {
				ctx, cancel := f.ctx()
				defer cancel()
				c, err := f.cluster(ctx, false)
				if err != nil {
					return f.fail(err)
				}
				now := time.Now()
				var out []NodeJSON
				for _, n := range c.Nodes {
					if (one != "" && n.ID != one) || (pending && n.State != cluster.Pending) {
						continue
					}
					out = append(out, nodeJSON(n, now))
				}
				if one != "" && len(out) == 0 {
					return f.fail(fmt.Errorf("no node %q in cluster %s (%s node-list shows the members)", one, c.ClusterName, f.o.Prog))
				}
				if out == nil {
					out = []NodeJSON{}
				}
				if f.asJSON {
					return f.printJSON(map[string]any{"nodes": out})
				}
				if one != "" {
					n := out[0]
					f.printf("Node: %s\nStatus: %s (age: %s)\nRole: %s\nShards: %d (leading %d of %d Raft groups run)\nDataplane: %s\nUsage: %.1f%%\nkernel_version: %s\n",
						n.ID, n.State, dur(time.Duration(n.AgeS*float64(time.Second))), n.Role, n.Shards, n.Leading, n.GroupsHosted, upDown(n.DataplaneUp), n.UsagePct, n.Kernel)
					if n.Error != "" {
						f.printf("Error: %s\n", n.Error)
					}
					return nil
				}
				if pending && len(out) == 0 {
					f.printf("no PENDING nodes\n")
					return nil
				}
				tw := tabwriter.NewWriter(f.o.Stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tSTATE\tAGE\tROLE\tSHARDS\tLEADING\tDATAPLANE\tUSAGE\tkernel_version")
				for _, n := range out {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.1f%%\t%s\n", n.ID, n.State, dur(time.Duration(n.AgeS*float64(time.Second))), n.Role, n.Shards, n.Leading, upDown(n.DataplaneUp), n.UsagePct, orDash(n.Kernel))
				}
				tw.Flush()
				for _, n := range out {
					if n.Error != "" {
						fmt.Fprintf(f.o.Stderr, "%s: %s\n", n.ID, n.Error)
					}
				}
				return nil
			}
			_ = all // the default: every node
			if !watch {
				return show()
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			for {
				if !f.asJSON {
					f.printf("--- %s\n", time.Now().Format(time.RFC3339))
				}
				if err := show(); err != nil {
					fmt.Fprintln(f.o.Stderr, err)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every node (the default)")
	cmd.Flags().BoolVar(&pending, "pending", false, "only PENDING nodes")
	cmd.Flags().BoolVar(&watch, "watch", false, "repeat every 2 s until Ctrl+C")
	return cmd
}

func upDown(b bool) string {
	if b {
		return "up"
	}
	return "DOWN"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newNodeList(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "node-list",
		Short: "The members' ids, one a line (for shell loops)",
		Long: `node-list prints each member's id on a line of its own, as the cluster group
records them. --json: nodes[] of id, state, client_addr.`,
		Example: fmt.Sprintf("  for node in $(%[1]s node-list); do %[1]s node-status $node; done", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, true)
			if err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				type row struct {
					ID         string `json:"id"`
					State      string `json:"state"`
					ClientAddr string `json:"client_addr"`
				}
				rows := []row{}
				for _, n := range c.Nodes {
					rows = append(rows, row{n.ID, string(n.State), n.ClientAddr})
				}
				return f.printJSON(map[string]any{"nodes": rows})
			}
			for _, n := range c.Nodes {
				f.printf("%s\n", n.ID)
			}
			return nil
		},
	}
}

// shardView is a shard across the members' reports.
type shardView struct {
	ID       uint32   `json:"shard"`
	Status   string   `json:"status"` // healthy, UNHEALTHY
	Leader   string   `json:"leader"` // "" when none
	Term     uint64   `json:"term"`
	Commit   uint64   `json:"commit_index"`
	Replicas []string `json:"replicas"`
	Running  int      `json:"replicas_running"`
}

func shardViews(c *node.AdminCluster) []shardView {
	by := map[uint32]map[string]node.GroupReport{}
	for _, n := range c.Nodes {
		if n.Report == nil {
			continue
		}
		for _, g := range n.Report.Groups {
			if by[g.ID] == nil {
				by[g.ID] = map[string]node.GroupReport{}
			}
			by[g.ID][n.ID] = g
		}
	}
	ids := make([]uint32, 0, len(c.ShardMap))
	for g := range c.ShardMap {
		ids = append(ids, g)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]shardView, 0, len(ids))
	for _, g := range ids {
		v := shardView{ID: g, Replicas: c.ShardMap[g]}
		v.Leader, v.Running = node.ShardLeader(v.Replicas, by[g])
		for _, r := range by[g] {
			v.Term = max(v.Term, r.Term)
			v.Commit = max(v.Commit, r.CommitIndex)
		}
		v.Status = "UNHEALTHY"
		if v.Leader != "" && v.Running > len(v.Replicas)/2 {
			v.Status = "healthy"
		}
		out = append(out, v)
	}
	return out
}

func newRaftStatus(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "raft-status",
		Short: "Every Raft group: leader, term, commit index, replicas",
		Long: `raft-status lists the cluster group and every metadata shard's group as the
replicas report them. A line with a leader says LEADER; a shard with no
leader, or fewer than a majority of replicas running, says UNHEALTHY. The first
line, leader_count, says how many shards each node leads.

--json fields: cluster_group{leader, term}, leader_count{node: n},
shards[] of shard, status, leader, term, commit_index, replicas[],
replicas_running.`,
		Example: fmt.Sprintf("  %[1]s raft-status | grep -c LEADER     # 256 when every shard has a leader\n  %[1]s raft-status | grep UNHEALTHY    # empty when all are healthy", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			views := shardViews(c)
			counts := map[string]int{}
			for _, n := range c.Nodes {
				counts[n.ID] = 0
			}
			for _, v := range views {
				if v.Leader != "" {
					counts[v.Leader]++
				}
			}
			var cgTerm uint64
			for _, n := range c.Nodes {
				if n.Report != nil {
					for _, g := range n.Report.Groups {
						if g.ID == node.ClusterGroup && g.State == "Leader" {
							cgTerm = g.Term
						}
					}
				}
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"cluster_group": map[string]any{"leader": c.Leader, "term": cgTerm}, "leader_count": counts, "shards": views})
			}
			var lc []string
			for _, n := range c.Nodes {
				lc = append(lc, fmt.Sprintf("%s=%d", n.ID, counts[n.ID]))
			}
			f.printf("leader_count %s\n", strings.Join(lc, " "))
			f.printf("cluster group: leader %s, term %d\n", orNone(c.Leader), cgTerm)
			tw := tabwriter.NewWriter(f.o.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "shard\tstatus\tleader\tterm\tcommit\treplicas")
			for _, v := range views {
				st := "LEADER"
				if v.Leader == "" || v.Status != "healthy" {
					st = "UNHEALTHY"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s (%d/%d running)\n", v.ID, st, orNone(v.Leader), v.Term, v.Commit, strings.Join(v.Replicas, ","), v.Running, len(v.Replicas))
			}
			return tw.Flush()
		},
	}
}

func newShardStats(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "shard-stats",
		Short: "Metadata shards: health and replicas of each, and per node",
		Long: `shard-stats prints one line per metadata shard: "healthy" or "UNHEALTHY", its
replicas and how many run, its leader; then the replicas and leaderships per
node.

--json fields: total, healthy, per_node{node: {replicas, leading}},
shards[] (as raft-status).`,
		Example: fmt.Sprintf("  %[1]s shard-stats | grep -c healthy   # 256: all shards\n  %[1]s shard-stats | grep replicas", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			views := shardViews(c)
			type per struct {
				Replicas int `json:"replicas"`
				Leading  int `json:"leading"`
			}
			pn := map[string]*per{}
			for _, n := range c.Nodes {
				pn[n.ID] = &per{}
			}
			healthy := 0
			for _, v := range views {
				if v.Status == "healthy" {
					healthy++
				}
				for _, r := range v.Replicas {
					if pn[r] != nil {
						pn[r].Replicas++
					}
				}
				if pn[v.Leader] != nil {
					pn[v.Leader].Leading++
				}
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"total": len(views), "healthy": healthy, "per_node": pn, "shards": views})
			}
			for _, v := range views {
				f.printf("shard %d %s replicas %d (%d running) leader %s\n", v.ID, v.Status, len(v.Replicas), v.Running, orNone(v.Leader))
			}
			f.printf("shards: %d, %d with every check passed\n", len(views), healthy)
			for _, n := range c.Nodes {
				f.printf("%s: %d shard replicas, leads %d\n", n.ID, pn[n.ID].Replicas, pn[n.ID].Leading)
			}
			return nil
		},
	}
}

func newShardDistribution(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "shard-distribution NODE",
		Short: "The metadata shards placed on one node",
		Long: `shard-distribution says how many metadata shard replicas the cluster's
placement puts on NODE, how many it leads, and which. A node that is not a
member has "0 shards (node removed)".

--json fields: node, member, shards, leading, shard_ids[].`,
		Example: fmt.Sprintf("  %s shard-distribution node-2", f.o.Prog),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			id := args[0]
			member := false
			for _, n := range c.Nodes {
				member = member || n.ID == id
			}
			var ids []uint32
			leading := 0
			for _, v := range shardViews(c) {
				for _, r := range v.Replicas {
					if r == id {
						ids = append(ids, v.ID)
					}
				}
				if v.Leader == id {
					leading++
				}
			}
			if ids == nil {
				ids = []uint32{}
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"node": id, "member": member, "shards": len(ids), "leading": leading, "shard_ids": ids})
			}
			if !member {
				f.printf("%s: 0 shards (node removed)\n", id)
				return nil
			}
			f.printf("%s: %d shards (leading %d)\n", id, len(ids), leading)
			parts := make([]string, len(ids))
			for i, g := range ids {
				parts[i] = strconv.FormatUint(uint64(g), 10)
			}
			f.printf("shards: %s\n", strings.Join(parts, " "))
			return nil
		},
	}
}
