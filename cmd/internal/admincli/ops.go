package admincli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

func (f *flags) alerts(ctx context.Context, since string) (*node.AlertsResponse, error) {
	if _, err := node.ParseSince(since); err != nil {
		return nil, err
	}
	var a node.AlertsResponse
	_, err := f.call(ctx, http.MethodGet, "/v1/admin/alerts?since="+url.QueryEscape(since), nil, &a)
	return &a, err
}

func newAlerts(f *flags) *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "alerts [--since 24h]",
		Short: "Critical alerts: active now, and their history",
		Long: `alerts shows the runbook's critical alerts (the rules of
tools/prometheus/alerts.yml, evaluated every 5 s by each control process on
its own figures): those pending (condition true, not yet for its "for") or
firing now, and every transition since --since. node_down fires after 5 min
DOWN, so a node just lost shows as pending first. A firing alert inside a
maintenance window is "held". Rules nothing backs yet are listed as not
evaluated.

--json fields: node, since, rules[] {name, expr, for, severity, summary},
active[] and history[] {alert, subject, state (pending, firing, resolved),
since, at, value, held}, maintenance_window, not_evaluated[] {alert, reason}.`,
		Example: fmt.Sprintf("  %[1]s alerts --since 24h\n  %[1]s alerts --json | jq -r '.active[] | select(.state==\"firing\") | .alert'", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := node.ParseSince(since); err != nil {
				return err
			}
			ctx, cancel := f.ctx()
			defer cancel()
			a, err := f.alerts(ctx, since)
			if err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(a)
			}
			if len(a.Active) == 0 {
				f.printf("No active alerts.\n")
			} else {
				tw := tabwriter.NewWriter(f.o.Stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "ALERT\tSUBJECT\tSTATE\tSINCE\tVALUE")
				for _, e := range a.Active {
					st := e.State
					if e.Held {
						st += " (held: maintenance window)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Alert, e.Subject, st, e.Since.Format(time.RFC3339), e.Value)
				}
				tw.Flush()
			}
			f.printf("\nHistory since %s (%d transitions):\n", a.Since.Format(time.RFC3339), len(a.History))
			for _, e := range a.History {
				f.printf("  %s  %-28s %-10s %-9s %s\n", e.At.Format(time.RFC3339), e.Alert, e.Subject, e.State, e.Value)
			}
			for _, s := range a.Skipped {
				f.printf("not evaluated: %s: %s\n", s.Alert, s.Reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "24h", "history window: a duration like 1h, 24h or 7d (at most 31d)")
	return cmd
}

// StorageNode is one node in `storage stats --json`.
type StorageNode struct {
	Name          string  `json:"name"`
	Device        string  `json:"device"`
	CapacityBytes int64   `json:"capacity_bytes"`
	UsedBytes     int64   `json:"used_bytes"`
	FreeBytes     int64   `json:"free_bytes"`
	LiveBytes     int64   `json:"live_bytes"`
	LiveChunks    int64   `json:"live_chunks"`
	UsagePct      float64 `json:"usage_pct"`
	Error         string  `json:"error,omitempty"`
}

// StorageJSON is `storage stats --json`.
type StorageJSON struct {
	Nodes         []StorageNode `json:"nodes"`
	CapacityBytes int64         `json:"capacity_bytes"`
	UsedBytes     int64         `json:"used_bytes"`
	UsagePct      float64       `json:"usage_pct"`
	Reporting     int           `json:"nodes_reporting"`
}

func storageOf(c *node.AdminCluster) *StorageJSON {
	s := &StorageJSON{Nodes: []StorageNode{}}
	for _, n := range c.Nodes {
		sn := StorageNode{Name: n.ID, Error: n.Error}
		if n.Report != nil && n.Report.Dataplane != nil {
			h := n.Report.Dataplane.Health
			sn.Device, sn.CapacityBytes, sn.UsedBytes, sn.FreeBytes, sn.LiveBytes, sn.LiveChunks = h.Device, h.CapacityBytes, h.UsedBytes, h.FreeBytes, h.LiveBytes, h.LiveChunks
			if h.CapacityBytes > 0 {
				sn.UsagePct = round1(100 * float64(h.UsedBytes) / float64(h.CapacityBytes))
			}
			s.CapacityBytes += h.CapacityBytes
			s.UsedBytes += h.UsedBytes
			s.Reporting++
		} else if n.Report != nil && sn.Error == "" {
			sn.Error = n.Report.DPError
		}
		s.Nodes = append(s.Nodes, sn)
	}
	if s.CapacityBytes > 0 {
		s.UsagePct = round1(100 * float64(s.UsedBytes) / float64(s.CapacityBytes))
	}
	return s
}

func bytesH(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTP"[exp])
}

func newStorageStats(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Each node's device: capacity, used, free, usage",
		Long: `storage stats shows each node's dataplane store as it reports itself over its
sidecar channel: segment space, segments in use (live and dead data), free,
live data. --json fields: nodes[] of name, device, capacity_bytes,
used_bytes, free_bytes, live_bytes, live_chunks, usage_pct, error; and the
totals capacity_bytes, used_bytes, usage_pct, nodes_reporting.`,
		Example: fmt.Sprintf("  %s storage stats --json | jq '.nodes[] | {name, usage_pct}'", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			s := storageOf(c)
			if f.asJSON {
				return f.printJSON(s)
			}
			tw := tabwriter.NewWriter(f.o.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tCAPACITY\tUSED\tFREE\tLIVE\tUSAGE\tDEVICE")
			for _, n := range s.Nodes {
				if n.Error != "" {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%s\n", n.Name, n.Error)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f%%\t%s\n", n.Name, bytesH(n.CapacityBytes), bytesH(n.UsedBytes), bytesH(n.FreeBytes), bytesH(n.LiveBytes), n.UsagePct, n.Device)
			}
			fmt.Fprintf(tw, "total\t%s\t%s\t\t\t%.1f%%\t(%d of %d nodes reporting)\n", bytesH(s.CapacityBytes), bytesH(s.UsedBytes), s.UsagePct, s.Reporting, len(s.Nodes))
			return tw.Flush()
		},
	}
}

// CapacityJSON is `capacity-check --json`.
type CapacityJSON struct {
	Storage     StorageJSON `json:"storage"`
	StorageWarn bool        `json:"storage_over_80pct"`
	// Metadata is the inode figure in words; Inodes the numbers.
	Metadata       string             `json:"metadata"`
	Inodes         *node.InodeFigures `json:"inodes,omitempty"`
	InodesPct      float64            `json:"inodes_pct"`
	InodesWarn     bool               `json:"inodes_over_80pct"`
	ReplicationLag string             `json:"replication_lag"`
	QoS            string             `json:"qos"`
}

func newCapacityCheck(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "capacity-check",
		Short: "Usage against limits: storage, inodes (and what is not measurable yet)",
		Long: `capacity-check sums the dataplanes' storage and the metadata shards' inodes
and warns over 80% of either (the inode limit is metadata.inode_limit, default
64M; config set changes it). Replication lag and QoS classes are "not supported
yet": there is no S3 tiering or QoS in this build.

--json fields: storage (as storage stats), storage_over_80pct, metadata,
inodes {used, limit, shards_counted, missing}, inodes_pct, inodes_over_80pct,
replication_lag, qos.`,
		Example: fmt.Sprintf("  %s capacity-check", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			var c node.AdminCluster
			if _, err := f.call(ctx, http.MethodGet, "/v1/admin/cluster?inodes=1", nil, &c); err != nil {
				return f.fail(err)
			}
			s := storageOf(&c)
			out := &CapacityJSON{Storage: *s, StorageWarn: s.UsagePct > 80, Inodes: c.Inodes,
				ReplicationLag: lagNote, QoS: "not supported yet: no QoS workload classes in this build"}
			if in := c.Inodes; in != nil && in.Limit > 0 {
				out.InodesPct = float64(in.Used) / float64(in.Limit) * 100
				out.InodesWarn = out.InodesPct > 80
				out.Metadata = fmt.Sprintf("%d of %d inodes (%.1f%%) over %d shards", in.Used, in.Limit, out.InodesPct, in.Shards)
				if len(in.Missing) > 0 {
					out.Metadata += fmt.Sprintf("; %d shards did not answer and are not counted", len(in.Missing))
				}
			} else {
				out.Metadata = "unknown: " + c.AnsweredBy + " gave no inode figures"
			}
			if f.asJSON {
				return f.printJSON(out)
			}
			f.printf("Storage: %.1f%% of %s (%d of %d nodes reporting)\n", s.UsagePct, bytesH(s.CapacityBytes), s.Reporting, len(s.Nodes))
			f.printf("Metadata: %s\n", out.Metadata)
			f.printf("Replication lag: %s\n", out.ReplicationLag)
			f.printf("QoS: %s\n", out.QoS)
			if out.StorageWarn {
				f.printf("WARNING: storage over 80%%: evict or scale out (runbook: Cluster Scaling)\n")
			}
			if out.InodesWarn {
				f.printf("WARNING: inodes over 80%% of metadata.inode_limit: raise it (cfsctl config set metadata.inode_limit=N) or remove files\n")
			}
			return nil
		},
	}
}

// StatsJSON is `stats --summary --json`.
type StatsJSON struct {
	Time         time.Time         `json:"time"`
	Cluster      *StatusJSON       `json:"cluster"`
	Storage      *StorageJSON      `json:"storage"`
	Reads        uint64            `json:"dataplane_reads"`
	Writes       uint64            `json:"dataplane_writes"`
	BytesRead    uint64            `json:"dataplane_bytes_read"`
	BytesWritten uint64            `json:"dataplane_bytes_written"`
	Failed       uint64            `json:"dataplane_failed"`
	ActiveAlerts []node.AlertEvent `json:"active_alerts"`
}

func (f *flags) statsSummary(ctx context.Context) (*StatsJSON, *node.AdminCluster, error) {
	c, err := f.cluster(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	out := &StatsJSON{Time: time.Now().UTC(), Cluster: summarize(c), Storage: storageOf(c)}
	for _, n := range c.Nodes {
		if n.Report == nil || n.Report.Dataplane == nil {
			continue
		}
		for _, core := range n.Report.Dataplane.Stats.Cores {
			out.Reads += core.Reads
			out.Writes += core.Writes
			out.BytesRead += core.BytesRead
			out.BytesWritten += core.BytesWritten
			out.Failed += core.Failed
		}
	}
	a, err := f.alerts(ctx, "24h")
	if err != nil {
		return nil, nil, err
	}
	out.ActiveAlerts = a.Active
	return out, c, nil
}

func newStats(f *flags) *cobra.Command {
	var summary bool
	cmd := &cobra.Command{
		Use:   "stats [--summary]",
		Short: "An operational summary: status, storage, I/O counters, active alerts",
		Long: `stats --summary gathers the shift summary: the cluster's status (as status),
storage (as storage stats), the dataplanes' I/O counters since they started
and the active alerts. --json fields: time, cluster, storage,
dataplane_reads, dataplane_writes, dataplane_bytes_read,
dataplane_bytes_written, dataplane_failed, active_alerts[].`,
		Example: fmt.Sprintf("  %s stats --summary --json > /var/log/claudefs/shift-summary-$(date +%%Y%%m%%d).json", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			s, _, err := f.statsSummary(ctx)
			if err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(s)
			}
			f.printf("Cluster %s: %s, %d/%d nodes healthy, %d/%d Raft groups healthy\n", s.Cluster.ClusterName, s.Cluster.Status, s.Cluster.NodesHealthy, s.Cluster.Nodes, s.Cluster.Groups.Healthy, s.Cluster.Groups.Total)
			f.printf("Storage: %.1f%% of %s\n", s.Storage.UsagePct, bytesH(s.Storage.CapacityBytes))
			f.printf("Dataplane I/O since start: %d reads (%s), %d writes (%s), %d failed\n", s.Reads, bytesH(int64(s.BytesRead)), s.Writes, bytesH(int64(s.BytesWritten)), s.Failed)
			f.printf("Active alerts: %d\n", len(s.ActiveAlerts))
			return nil
		},
	}
	cmd.Flags().BoolVar(&summary, "summary", true, "the summary (the only form there is)")
	return cmd
}

func newHealthReport(f *flags) *cobra.Command {
	var period string
	cmd := &cobra.Command{
		Use:   "health-report [--period 8h]",
		Short: "Warnings and degradation over a period: status, alert history",
		Long: `health-report says the cluster's status now, its warnings (nodes not
HEALTHY, unhealthy shards, storage over 80%) and every alert transition in
--period. --json fields: period, status (as status), warnings[], alerts
(as alerts --json).`,
		Example: fmt.Sprintf("  %s health-report --period 8h", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := node.ParseSince(period); err != nil {
				return err
			}
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			a, err := f.alerts(ctx, period)
			if err != nil {
				return f.fail(err)
			}
			s := summarize(c)
			warnings := append([]string{}, s.Reasons...)
			if st := storageOf(c); st.UsagePct > 80 {
				warnings = append(warnings, fmt.Sprintf("storage at %.1f%%", st.UsagePct))
			}
			for _, n := range c.Nodes {
				if n.Error != "" {
					warnings = append(warnings, fmt.Sprintf("%s: %s", n.ID, n.Error))
				}
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"period": period, "status": s, "warnings": warnings, "alerts": a})
			}
			f.printf("Health report for the last %s: cluster %s is %s\n", period, s.ClusterName, s.Status)
			if len(warnings) == 0 {
				f.printf("Warnings: none\n")
			}
			for _, w := range warnings {
				f.printf("WARNING: %s\n", w)
			}
			f.printf("Alert transitions: %d\n", len(a.History))
			for _, e := range a.History {
				f.printf("  %s  %s %s %s %s\n", e.At.Format(time.RFC3339), e.Alert, e.Subject, e.State, e.Value)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&period, "period", "8h", "how far back: 1h, 8h, 24h, 7d (at most 31d)")
	return cmd
}

func newConfigSet(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY=VALUE",
		Short: "Set a configuration key cluster-wide (persisted; applied live where possible)",
		Long: `config set checks KEY=VALUE against the key's range (a bad value is refused
with the valid range), persists it in the cluster group, and applies it on
every node at once: dataplane keys over each dataplane's sidecar channel
(live keys take effect now; the others say "restart required"), and again
whenever a dataplane restarts. Keys the runbook names that nothing backs yet
(dedupe.*, compression.level, transport.enable_rdma) are refused as not
supported. KEY VALUE (two words) is accepted too.

--json fields: key, value, persisted, scope, nodes[] {node, applied,
restart_required, in_force, error}.`,
		Example: fmt.Sprintf("  %[1]s config set nvme.queue_depth=128\n  %[1]s config set network.tcp_sndbuf=16M", f.o.Prog),
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var key, value string
			if len(args) == 2 {
				key, value = args[0], args[1]
			} else {
				var ok bool
				if key, value, ok = strings.Cut(args[0], "="); !ok {
					return fmt.Errorf("%q: want KEY=VALUE", args[0])
				}
			}
			key, value = strings.TrimSpace(key), strings.TrimSpace(value)
			ctx, cancel := f.ctx()
			defer cancel()
			var res node.ConfigSetResponse
			_, err := f.call(ctx, http.MethodPost, "/v1/admin/config", &node.ConfigSetRequest{Key: key, Value: value}, &res)
			if err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(&res)
			}
			f.printf("%s = %s: persisted in the cluster group\n", res.Key, res.Value)
			for _, n := range res.Nodes {
				switch {
				case n.Error != "":
					f.printf("  %s: not applied now: %s\n", n.Node, n.Error)
				case n.Applied:
					f.printf("  %s: in force (%s)\n", n.Node, n.InForce)
				case n.RestartRequired:
					f.printf("  %s: restart required (%s stays in force until then)\n", n.Node, n.InForce)
				}
			}
			return nil
		},
	}
}

func newConfigGet(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "get [KEY]",
		Short: "Show configuration: the cluster's value and each node's value in force",
		Long: `config get shows KEY (or every key): the value persisted in the cluster group
(if set there) and the value in force on each node's dataplane, with the
key's range and whether it applies live. --json fields: cluster{key: value},
nodes[] {node, values[] {key, value, default, range, live, help}, error}.`,
		Example: fmt.Sprintf("  %[1]s config get nvme.queue_depth\n  %[1]s config get --json | jq '.cluster'", f.o.Prog),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := ""
			if len(args) == 1 {
				key = args[0]
			}
			ctx, cancel := f.ctx()
			defer cancel()
			var c node.AdminConfig
			path := "/v1/admin/config"
			if key != "" {
				path += "?key=" + url.QueryEscape(key)
			}
			if _, err := f.call(ctx, http.MethodGet, path, nil, &c); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(&c)
			}
			// key → node → value in force
			type row struct {
				rng, def string
				live     bool
				per      []string
			}
			rows := map[string]*row{}
			var order []string
			for _, n := range c.Nodes {
				if n.Error != "" {
					fmt.Fprintf(f.o.Stderr, "%s: %s\n", n.Node, n.Error)
					continue
				}
				for _, v := range n.Values {
					r := rows[v.Key]
					if r == nil {
						r = &row{rng: v.Range, def: v.Default, live: v.Live}
						rows[v.Key] = r
						order = append(order, v.Key)
					}
					r.per = append(r.per, n.Node+"="+v.Value)
				}
			}
			for k := range c.Cluster {
				if rows[k] == nil {
					rows[k] = &row{}
					order = append(order, k)
				}
			}
			if len(order) == 0 {
				return f.fail(errors.New("no node's dataplane answered; see the errors above"))
			}
			for _, k := range order {
				r := rows[k]
				cv, set := c.Cluster[k]
				if !set {
					cv = "(default " + r.def + ")"
				}
				mode := "restart"
				if r.live {
					mode = "live"
				}
				f.printf("%s = %s  in force: %s  [%s; %s]\n", k, cv, strings.Join(r.per, " "), r.rng, mode)
			}
			return nil
		},
	}
}

func (f *flags) nodeAddr(ctx context.Context, id string) (string, error) {
	c, err := f.cluster(ctx, true)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, n := range c.Nodes {
		if n.ID == id {
			return n.ClientAddr, nil
		}
		ids = append(ids, n.ID)
	}
	return "", fmt.Errorf("no node %q in cluster %s (members: %s)", id, c.ClusterName, strings.Join(ids, ", "))
}

func newMetrics(f *flags) *cobra.Command {
	var nodeID, names string
	cmd := &cobra.Command{
		Use:   "metrics [--node NODE] [--metric a,b] [--json]",
		Short: "A node's current metrics (what its /metrics exports)",
		Long: `metrics shows the metrics a node's control process exports on /metrics
(Prometheus), read now: counters and gauges with their labels, histograms
as count, p50 and p99 (seconds). Without --node, the node answering. --metric
keeps the named metrics (a name matches itself and the names it prefixes);
names the runbook uses that nothing backs yet are reported as not supported.

--json fields: node, metrics[] {name, help, type, samples[] {labels, value,
sum, p50, p99}}, not_supported{name: why}, missing[].`,
		Example: fmt.Sprintf("  %[1]s metrics --node node-2 --metric cpu_usage,metadata_replicate_latency\n  %[1]s metrics --json | jq '.metrics[].name'", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			var m node.MetricsResponse
			if nodeID != "" {
				addr, err := f.nodeAddr(ctx, nodeID)
				if err != nil {
					return f.fail(err)
				}
				if err := f.callAt(ctx, addr, http.MethodGet, "/v1/admin/metrics", nil, &m); err != nil {
					return f.fail(err)
				}
			} else if _, err := f.call(ctx, http.MethodGet, "/v1/admin/metrics", nil, &m); err != nil {
				return f.fail(err)
			}
			notSup := map[string]string{}
			var missing []string
			if names != "" {
				var keep []node.MetricFamily
				for _, want := range strings.Split(names, ",") {
					want = strings.TrimSpace(want)
					if want == "" {
						continue
					}
					if why, ok := metrics.NotExported[want]; ok {
						notSup[want] = "not supported yet: " + why
						continue
					}
					found := false
					for _, mf := range m.Metrics {
						if mf.Name == want || strings.HasPrefix(mf.Name, want+"_") {
							keep = append(keep, mf)
							found = true
						}
					}
					if !found {
						missing = append(missing, want)
					}
				}
				m.Metrics = keep
			}
			if f.asJSON {
				if err := f.printJSON(map[string]any{"node": m.Node, "metrics": m.Metrics, "not_supported": notSup, "missing": missing}); err != nil {
					return err
				}
			} else {
				for _, mf := range m.Metrics {
					for _, s := range mf.Samples {
						name := mf.Name + labelString(s.Labels)
						if mf.Type == "histogram" || mf.Type == "summary" {
							f.printf("%s count=%g p50=%s p99=%s\n", name, s.Value, ms(s.P50), ms(s.P99))
						} else {
							f.printf("%s %g\n", name, s.Value)
						}
					}
				}
				for k, why := range notSup {
					f.printf("%s: %s\n", k, why)
				}
			}
			if len(missing) > 0 {
				return f.fail(fmt.Errorf("%s exports no metric named %s (%s metrics --json | jq -r '.metrics[].name' lists them)", m.Node, strings.Join(missing, ", "), f.o.Prog))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&nodeID, "node", "", "the node to read (default: the node answering)")
	cmd.Flags().StringVar(&names, "metric", "", "comma-separated metric names to keep")
	return cmd
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	ks := make([]string, 0, len(l))
	for k := range l {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// HardwareJSON is one node in `hardware-stats --json`.
type HardwareJSON struct {
	Node           string    `json:"node"`
	CPUs           int       `json:"cpus"`
	CPUUsage       []float64 `json:"cpu_usage"`
	CPUUsageAvg    float64   `json:"cpu_usage_avg"`
	Load1          float64   `json:"load1"`
	MemTotal       uint64    `json:"mem_total_bytes"`
	MemAvailable   uint64    `json:"mem_available_bytes"`
	Kernel         string    `json:"kernel_version"`
	Device         string    `json:"device"`
	CapacityBytes  int64     `json:"capacity_bytes"`
	IOCores        int       `json:"io_cores"`
	NVMeQueueDepth int       `json:"nvme_queue_depth"` // per core, in force
	InFlight       int       `json:"nvme_in_flight"`   // requests held by the cores now
	Error          string    `json:"error,omitempty"`
}

func newHardwareStats(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "hardware-stats",
		Short: "Each node's CPUs, memory, kernel, device and NVMe queue depth",
		Long: `hardware-stats shows, per node: CPUs and their busy fraction over the last
5 s, load, memory, kernel, and its dataplane's device, I/O cores and
nvme_queue_depth (requests each core admits, in force) with the requests
held now. --json fields: nodes[] of node, cpus, cpu_usage[], cpu_usage_avg,
load1, mem_total_bytes, mem_available_bytes, kernel_version, device,
capacity_bytes, io_cores, nvme_queue_depth, nvme_in_flight, error.`,
		Example: fmt.Sprintf("  %s hardware-stats | grep nvme_queue_depth", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, false)
			if err != nil {
				return f.fail(err)
			}
			out := []HardwareJSON{}
			for _, n := range c.Nodes {
				h := HardwareJSON{Node: n.ID, Error: n.Error}
				if r := n.Report; r != nil {
					h.CPUs, h.CPUUsage, h.Load1, h.MemTotal, h.MemAvailable, h.Kernel = r.Host.CPUs, r.Host.CPUUsage, r.Host.Load1, r.Host.MemTotal, r.Host.MemAvail, r.Host.Kernel
					for _, u := range r.Host.CPUUsage {
						h.CPUUsageAvg += u / float64(len(r.Host.CPUUsage))
					}
					if d := r.Dataplane; d != nil {
						h.Device, h.CapacityBytes, h.IOCores = d.Health.Device, d.Health.CapacityBytes, len(d.Stats.Cores)
						for _, core := range d.Stats.Cores {
							h.NVMeQueueDepth = max(h.NVMeQueueDepth, core.QueueLimit)
							h.InFlight += core.QueueDepth
						}
					} else if h.Error == "" {
						h.Error = r.DPError
					}
				}
				out = append(out, h)
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"nodes": out})
			}
			for _, h := range out {
				f.printf("%s:\n", h.Node)
				if h.Error != "" {
					f.printf("  error: %s\n", h.Error)
				}
				f.printf("  cpus: %d  cpu_usage_avg: %.0f%%  load1: %.2f\n", h.CPUs, h.CPUUsageAvg*100, h.Load1)
				f.printf("  memory: %s total, %s available\n", bytesH(int64(h.MemTotal)), bytesH(int64(h.MemAvailable)))
				f.printf("  kernel_version: %s\n", h.Kernel)
				f.printf("  device: %s (%s)\n", orDash(h.Device), bytesH(h.CapacityBytes))
				f.printf("  io_cores: %d  nvme_queue_depth: %d  nvme_in_flight: %d\n", h.IOCores, h.NVMeQueueDepth, h.InFlight)
			}
			return nil
		},
	}
}

// PeerJSON is one link in `network-health --json`.
type PeerJSON struct {
	From       string  `json:"from"`
	To         string  `json:"to"`
	LatencyMs  float64 `json:"latency_ms"` // a TCP connect to the peer's client API
	PacketLoss string  `json:"packet_loss"`
	Error      string  `json:"error,omitempty"`
}

func newNetworkHealth(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "network-health",
		Short: "Latency between every pair of nodes, and the dataplanes' bad-input counters",
		Long: `network-health asks each node to time a TCP connect to every other node's
client API (its latency, in ms) and reads each dataplane's counters of bad
network input (CRC errors, truncated frames…). Packet loss is not measured
yet (it needs ICMP or a probe protocol): it says so.

--json fields: links[] {from, to, latency_ms, packet_loss, error},
dataplanes{node: network counters}.`,
		Example: fmt.Sprintf("  %s network-health | grep -E 'latency|packet_loss'", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			c, err := f.cluster(ctx, true)
			if err != nil {
				return f.fail(err)
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			links := []PeerJSON{}
			dps := map[string]any{}
			for _, n := range c.Nodes {
				wg.Add(1)
				go func(id, addr string) {
					defer wg.Done()
					var r node.NodeReport
					tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					err := f.callAt(tctx, addr, http.MethodGet, "/v1/admin/local?peers=1", nil, &r)
					cancel()
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						links = append(links, PeerJSON{From: id, Error: fmt.Sprintf("%s did not report: %v", id, err)})
						return
					}
					for _, p := range r.Peers {
						links = append(links, PeerJSON{From: id, To: p.ID, LatencyMs: p.RTTms, PacketLoss: "not supported yet", Error: p.Error})
					}
					if r.Dataplane != nil {
						dps[id] = r.Dataplane.Stats.Network
					}
				}(n.ID, n.ClientAddr)
			}
			wg.Wait()
			sort.Slice(links, func(i, j int) bool {
				if links[i].From != links[j].From {
					return links[i].From < links[j].From
				}
				return links[i].To < links[j].To
			})
			if f.asJSON {
				return f.printJSON(map[string]any{"links": links, "dataplanes": dps})
			}
			bad := false
			for _, l := range links {
				if l.Error != "" {
					bad = true
					f.printf("%s -> %s: ERROR %s\n", l.From, orDash(l.To), l.Error)
					continue
				}
				f.printf("%s -> %s: latency %.3fms packet_loss not supported yet\n", l.From, l.To, l.LatencyMs)
			}
			for id, d := range dps {
				f.printf("%s dataplane network counters: %+v\n", id, d)
			}
			if bad {
				return f.fail(errors.New("some links failed (above): check those nodes and the network between them"))
			}
			return nil
		},
	}
}

func newSetLogLevel(f *flags) *cobra.Command {
	var module, level, nodeID string
	cmd := &cobra.Command{
		Use:   "set-log-level --module MODULE --level LEVEL [--node NODE]",
		Short: "Change what a module logs, on every node (until the process restarts)",
		Long: fmt.Sprintf(`set-log-level changes a module's log level in every node's control process
(or --node's), at once, until that process restarts. Modules: %s (the
runbook's claudefs::NAME works too; claudefs::metadata is control, where
the metadata service runs). Levels: %s. At DEBUG the control module logs
every admin request, each alert evaluation and each configuration push;
raft is the Raft library's own logging (default WARN).

--json fields: nodes[] {node, module, level, error}.`, strings.Join(node.LogModules, ", "), strings.Join(node.LogLevels, ", ")),
		Example: fmt.Sprintf("  %[1]s set-log-level --module claudefs::metadata --level DEBUG\n  %[1]s set-log-level --module raft --level INFO --node node-2", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := node.NormalizeLogModule(module); err != nil {
				return err
			}
			if _, err := node.NormalizeLogLevel(level); err != nil {
				return err
			}
			ctx, cancel := f.ctx()
			defer cancel()
			var res node.LogLevelResponse
			if _, err := f.call(ctx, http.MethodPost, "/v1/admin/log-level", &node.LogLevelRequest{Module: module, Level: level, Node: nodeID}, &res); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				if err := f.printJSON(&res); err != nil {
					return err
				}
			}
			var failed []string
			for _, n := range res.Nodes {
				if n.Error != "" {
					failed = append(failed, n.Node+": "+n.Error)
				} else if !f.asJSON {
					f.printf("%s: %s logs at %s\n", n.Node, n.Module, n.Level)
				}
			}
			if len(failed) > 0 {
				return f.fail(fmt.Errorf("not changed on %s", strings.Join(failed, "; ")))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&module, "module", "control", "module: "+strings.Join(node.LogModules, ", "))
	cmd.Flags().StringVar(&level, "level", "", "level: "+strings.Join(node.LogLevels, ", "))
	cmd.Flags().StringVar(&nodeID, "node", "", "only this node (default: every node)")
	return cmd
}

// ParseStart reads --start: RFC 3339, with or without seconds ("2026-03-15T02:00Z"), or "now".
func ParseStart(s string) (time.Time, error) {
	if s == "now" {
		return time.Now().UTC(), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z07:00", "2006-01-02T15:04Z"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("--start %q: want a time like 2026-03-15T02:00Z (RFC 3339) or now", s)
}

func newSetWindow(f *flags) *cobra.Command {
	var start, duration string
	cmd := &cobra.Command{
		Use:   "set-maintenance-window --start TIME --duration DURATION",
		Short: "Announce a maintenance window: alerts firing inside it are held",
		Long: `set-maintenance-window records a window in the cluster group (replacing any
earlier one). Alerts that fire inside it are shown as held and do not page.
--json fields: start, end, active.`,
		Example: fmt.Sprintf("  %s set-maintenance-window --start \"2026-03-15T02:00Z\" --duration 4h", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := ParseStart(start)
			if err != nil {
				return err
			}
			if d, err := time.ParseDuration(duration); err != nil || d <= 0 || d > 7*24*time.Hour {
				return fmt.Errorf("--duration %q: want a duration in (0, 168h], like 4h", duration)
			}
			ctx, cancel := f.ctx()
			defer cancel()
			var w node.AdminWindow
			if _, err := f.call(ctx, http.MethodPut, "/v1/admin/maintenance", &node.WindowRequest{Start: t, Duration: duration}, &w); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(&w)
			}
			f.printf("Maintenance window: %s to %s (active now: %v)\n", w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339), w.Active)
			return nil
		},
	}
	cmd.Flags().StringVar(&start, "start", "", "start, like 2026-03-15T02:00Z, or now")
	cmd.Flags().StringVar(&duration, "duration", "", "length, like 4h")
	return cmd
}

func newClearWindow(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:     "clear-maintenance-window",
		Short:   "End the maintenance window",
		Long:    `clear-maintenance-window removes the cluster's maintenance window; alerts page again.`,
		Example: fmt.Sprintf("  %s clear-maintenance-window", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			if _, err := f.call(ctx, http.MethodDelete, "/v1/admin/maintenance", nil, nil); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"cleared": true})
			}
			f.printf("Maintenance window cleared\n")
			return nil
		},
	}
}

func newNodeStop(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "node-stop NODE",
		Short: "Stop a node's processes cleanly (its supervisor, dataplane and control process)",
		Long: `node-stop asks NODE to stop: its supervisor (cfs server run) gets SIGTERM and
stops the dataplane (draining requests in flight) and the control process
(handing over its Raft leaderships), and does not restart them. The cluster
marks the node DOWN. Start it again with cfs server run (or cfs dev up).
--json fields: node, stopped ("supervisor" or "control"), pid.`,
		Example: fmt.Sprintf("  %s node-stop node-3", f.o.Prog),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := f.ctx()
			defer cancel()
			var res node.NodeStopResponse
			if _, err := f.call(ctx, http.MethodPost, "/v1/admin/node-stop", &node.NodeStopRequest{Node: args[0]}, &res); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(&res)
			}
			f.printf("%s: stopping (SIGTERM to its %s, pid %d)\n", res.Node, res.Stopped, res.Pid)
			return nil
		},
	}
}

func newClusterToken(f *flags) *cobra.Command {
	var nodeType string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "cluster-token --node-type storage",
		Short: "Make a join token for a new node (usable once, expires in 1 hour)",
		Long: `cluster-token asks the cluster for a join token and prints it on stdout alone
(so TOKEN=$(cfs admin cluster-token) works). The token admits one node with
'cfs server join --token TOKEN --seed ADDR' and expires an hour after it was
made. Only its hash is stored in the cluster. --json fields: token, expires.`,
		Example: fmt.Sprintf("  TOKEN=$(%[1]s cluster-token --node-type storage)\n  %[1]s cluster-token --node-type storage --json | jq -r .expires", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodeType != "storage" {
				return fmt.Errorf("--node-type %q: only storage nodes exist", nodeType)
			}
			ctx, cancel := f.ctx()
			defer cancel()
			var t node.TokenResponse
			if _, err := f.call(ctx, http.MethodPost, "/v1/cluster-token", &node.TokenRequest{NodeType: nodeType, TTL: ttl.String()}, &t); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(&t)
			}
			f.printf("%s\n", t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&nodeType, "node-type", "storage", "type of node the token admits")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays usable (at most 24h)")
	return cmd
}
