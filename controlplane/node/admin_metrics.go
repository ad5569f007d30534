package node

import (
	"context"
	"github.com/claudefs/claudefs/controlplane/meta"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// observeApply records a Raft apply on group (led here) that started at start.
func (n *Node) observeApply(group uint32, start time.Time) {
	if n.adm == nil {
		return
	}
	kind := "shard"
	if group == ClusterGroup {
		kind = "cluster"
	}
	n.adm.metrics.ReplicateLatency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

// onShardApply records a metadata shard's apply led here: its replicate
// latency, and for a file create its create_file_latency (proposal to applied
// on this leader, which is when the client's create returns). The cluster
// group's and the client API's applies are recorded where they are proposed.
func (n *Node) onShardApply(group uint32, cmd []byte, took time.Duration, err error) {
	if group == ClusterGroup || err != nil || !meta.IsCommand(cmd) || n.adm == nil {
		return
	}
	n.adm.metrics.ReplicateLatency.WithLabelValues("shard").Observe(took.Seconds())
	if meta.CreatesFile(cmd) {
		n.adm.metrics.CreateFile.Observe(took.Seconds())
	}
}

// replicateSummary is the count and p99 (seconds) of metadata_replicate_latency here.
func (n *Node) replicateSummary() (uint64, float64) {
	mfs, err := n.adm.metrics.Reg.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.MetadataReplicateLatency {
			continue
		}
		h := mergeHistograms(mf.GetMetric())
		if h == nil {
			return 0, 0
		}
		return h.GetSampleCount(), quantile(h, 0.99)
	}
	return 0, 0
}

// mergeHistograms adds up histograms with the same buckets (the label values of one family).
func mergeHistograms(ms []*dto.Metric) *dto.Histogram {
	var out *dto.Histogram
	for _, m := range ms {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		if out == nil {
			out = &dto.Histogram{SampleCount: new(uint64), SampleSum: new(float64)}
			for _, b := range h.GetBucket() {
				out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: proto(b.GetUpperBound()), CumulativeCount: new(uint64)})
			}
		}
		if len(h.GetBucket()) != len(out.Bucket) {
			continue
		}
		*out.SampleCount += h.GetSampleCount()
		*out.SampleSum += h.GetSampleSum()
		for i, b := range h.GetBucket() {
			*out.Bucket[i].CumulativeCount += b.GetCumulativeCount()
		}
	}
	return out
}

func proto(f float64) *float64 { return &f }

// quantile estimates q of h by linear interpolation inside the bucket holding it, as
// Prometheus's histogram_quantile does; 0 for an empty histogram.
func quantile(h *dto.Histogram, q float64) float64 {
	total := h.GetSampleCount()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	prevBound, prevCount := 0.0, uint64(0)
	for _, b := range h.GetBucket() {
		c := b.GetCumulativeCount()
		if float64(c) >= rank {
			if c == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-float64(prevCount))/float64(c-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), c
	}
	return prevBound // in the +Inf bucket: the highest finite bound
}

// nodeCollector exports the node's view of the cluster and its dataplane's figures (asked
// over the sidecar channel at scrape time, at most 2 s).
type nodeCollector struct{ n *Node }

var (
	descNodeState   = prometheus.NewDesc(metrics.NodeState, "1 for each member's current state as this node's replica of the cluster group records it.", []string{"node", "state"}, nil)
	descGroups      = prometheus.NewDesc(metrics.RaftGroups, "Raft groups hosted by this node (the cluster group and metadata shard replicas).", nil, nil)
	descLeading     = prometheus.NewDesc(metrics.RaftGroupsLeading, "Raft groups this node leads.", nil, nil)
	descLeaderless  = prometheus.NewDesc(metrics.RaftGroupsLeaderless, "Raft groups hosted here that know no leader.", nil, nil)
	descFlashUsed   = prometheus.NewDesc(metrics.FlashUsedBytes, "Bytes of the dataplane's store segments in use (live and dead data).", nil, nil)
	descFlashCap    = prometheus.NewDesc(metrics.FlashCapacityBytes, "Bytes of the dataplane's store segment space.", nil, nil)
	descDPUp        = prometheus.NewDesc(metrics.DataplaneUp, "1 when the node's dataplane answers its sidecar channel.", nil, nil)
	descReads       = prometheus.NewDesc(metrics.DataplaneReads, "Successful dataplane reads, per I/O core.", []string{"core"}, nil)
	descWrites      = prometheus.NewDesc(metrics.DataplaneWrites, "Successful dataplane writes, per I/O core.", []string{"core"}, nil)
	descReadBytes   = prometheus.NewDesc(metrics.DataplaneReadBytes, "Bytes read by the dataplane, per I/O core.", []string{"core"}, nil)
	descWriteBytes  = prometheus.NewDesc(metrics.DataplaneWriteBytes, "Bytes written by the dataplane, per I/O core.", []string{"core"}, nil)
	descFailed      = prometheus.NewDesc(metrics.DataplaneFailed, "Dataplane data requests answered with an error, per I/O core.", []string{"core"}, nil)
	descQueueLimit  = prometheus.NewDesc(metrics.DataplaneQueueLimit, "Data requests an I/O core admits at once (nvme.queue_depth in force).", []string{"core"}, nil)
	descIOReadLaten = prometheus.NewDesc(metrics.IOReadLatency, "Seconds from a dataplane read's admission by its I/O core to its answer (from the dataplane's log2 µs buckets).", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodeState, descGroups, descLeading, descLeaderless, descFlashUsed, descFlashCap, descDPUp,
		descReads, descWrites, descReadBytes, descWriteBytes, descFailed, descQueueLimit, descIOReadLaten} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if st, err := n.localState(); err == nil {
		states := []cluster.NodeState{cluster.Pending, cluster.Healthy, cluster.Down, cluster.Draining, cluster.Drained}
		for _, id := range st.NodeIDs() {
			for _, s := range states {
				v := 0.0
				if st.Nodes[id].State == s {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descNodeState, prometheus.GaugeValue, v, id, string(s))
			}
		}
	}
	var total, leading, leaderless float64
	for _, g := range n.host.Groups() {
		total++
		if g.State == "Leader" {
			leading++
		}
		if g.LeaderID == "" {
			leaderless++
		}
	}
	ch <- prometheus.MustNewConstMetric(descGroups, prometheus.GaugeValue, total)
	ch <- prometheus.MustNewConstMetric(descLeading, prometheus.GaugeValue, leading)
	ch <- prometheus.MustNewConstMetric(descLeaderless, prometheus.GaugeValue, leaderless)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := n.adm.dp.Health(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descDPUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descDPUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descFlashUsed, prometheus.GaugeValue, float64(h.UsedBytes))
	ch <- prometheus.MustNewConstMetric(descFlashCap, prometheus.GaugeValue, float64(h.CapacityBytes))
	s, err := n.adm.dp.Stats(ctx)
	if err != nil {
		return
	}
	var all []uint64
	for _, core := range s.Cores {
		l := strconv.Itoa(core.Partition)
		ch <- prometheus.MustNewConstMetric(descReads, prometheus.CounterValue, float64(core.Reads), l)
		ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(core.Writes), l)
		ch <- prometheus.MustNewConstMetric(descReadBytes, prometheus.CounterValue, float64(core.BytesRead), l)
		ch <- prometheus.MustNewConstMetric(descWriteBytes, prometheus.CounterValue, float64(core.BytesWritten), l)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(core.Failed), l)
		ch <- prometheus.MustNewConstMetric(descQueueLimit, prometheus.GaugeValue, float64(core.QueueLimit), l)
		if len(core.ReadLatency) > len(all) {
			all = append(all, make([]uint64, len(core.ReadLatency)-len(all))...)
		}
		for i, v := range core.ReadLatency {
			all[i] += v
		}
	}
	count, sum, cum := metrics.Log2Histogram(all)
	ch <- prometheus.MustNewConstHistogram(descIOReadLaten, count, sum, cum)
}

// handleMetricsJSON answers this node's metrics as JSON (histograms summarised).
func (n *Node) handleMetricsJSON(w http.ResponseWriter, _ *http.Request) {
	mfs, err := n.adm.metrics.Reg.Gather()
	if err != nil && len(mfs) == 0 {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	n.writeJSON(w, http.StatusOK, &MetricsResponse{Node: n.cfg.ID, Metrics: FamiliesJSON(mfs)})
}

// FamiliesJSON converts gathered families to the admin API's JSON form.
func FamiliesJSON(mfs []*dto.MetricFamily) []MetricFamily {
	out := make([]MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		f := MetricFamily{Name: mf.GetName(), Help: mf.GetHelp()}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			f.Type = "counter"
		case dto.MetricType_GAUGE:
			f.Type = "gauge"
		case dto.MetricType_HISTOGRAM:
			f.Type = "histogram"
		case dto.MetricType_SUMMARY:
			f.Type = "summary"
		default:
			f.Type = "untyped"
		}
		for _, m := range mf.GetMetric() {
			s := MetricSample{}
			if len(m.GetLabel()) > 0 {
				s.Labels = map[string]string{}
				for _, l := range m.GetLabel() {
					s.Labels[l.GetName()] = l.GetValue()
				}
			}
			switch {
			case m.GetCounter() != nil:
				s.Value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.Value = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				s.Value, s.Sum = float64(h.GetSampleCount()), h.GetSampleSum()
				s.P50, s.P99 = quantile(h, 0.5), quantile(h, 0.99)
			case m.GetSummary() != nil:
				s.Value, s.Sum = float64(m.GetSummary().GetSampleCount()), m.GetSummary().GetSampleSum()
			case m.GetUntyped() != nil:
				s.Value = m.GetUntyped().GetValue()
			}
			if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
				s.Value = 0 // JSON has no NaN
			}
			f.Samples = append(f.Samples, s)
		}
		sort.SliceStable(f.Samples, func(i, j int) bool { return labelKey(f.Samples[i].Labels) < labelKey(f.Samples[j].Labels) })
		out = append(out, f)
	}
	return out
}

func labelKey(l map[string]string) string {
	ks := make([]string, 0, len(l))
	for k := range l {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	s := ""
	for _, k := range ks {
		s += k + "=" + l[k] + ","
	}
	return s
}
