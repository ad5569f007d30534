// Package metrics holds the Prometheus metrics of a ClaudeFS node: their names (stable:
// dashboards in tools/grafana and the rules in tools/prometheus/alerts.yml read them),
// the registry each process serves on /metrics, and the per-core CPU sampler.
//
// Names follow the runbook where it names a metric (create_file_latency,
// metadata_replicate_latency, io_read_latency, cpu_usage); the others carry a cfs_ prefix.
// Latencies are in seconds.
package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/procfs"
)

// The metric names, as exported.
const (
	CreateFileLatency        = "create_file_latency"        // histogram, s: a file create, end to end (metadata service)
	MetadataReplicateLatency = "metadata_replicate_latency" // histogram, s: a Raft apply, proposal to commit and apply
	IOReadLatency            = "io_read_latency"            // histogram, s: dataplane reads, admission to answer
	CPUUsage                 = "cpu_usage"                  // gauge 0..1 per core ("cpu" label)
	NodeState                = "cfs_node_state"             // gauge 1 for a member's current state (node, state)
	RaftGroups               = "cfs_raft_groups"            // gauge: groups hosted here
	RaftGroupsLeading        = "cfs_raft_groups_leading"    // gauge: of those, led here
	RaftGroupsLeaderless     = "cfs_raft_groups_leaderless" // gauge: of those, with no known leader
	FlashUsedBytes           = "cfs_flash_used_bytes"       // gauge: the dataplane store's segments in use
	FlashCapacityBytes       = "cfs_flash_capacity_bytes"   // gauge: the dataplane store's segment space
	DataplaneUp              = "cfs_dataplane_up"           // gauge 1/0: the dataplane answers its sidecar channel
	DataplaneReads           = "cfs_dataplane_reads_total"  // counter
	DataplaneWrites          = "cfs_dataplane_writes_total" // counter
	DataplaneReadBytes       = "cfs_dataplane_read_bytes_total"
	DataplaneWriteBytes      = "cfs_dataplane_written_bytes_total"
	DataplaneFailed          = "cfs_dataplane_failed_total"
	DataplaneQueueLimit      = "cfs_dataplane_queue_limit" // gauge: nvme.queue_depth in force, per core
	AdminRequests            = "cfs_admin_requests_total"  // counter by path and code

	// Exported by the dataplane process itself only (dataplane/metrics.go).
	IOWriteLatency       = "io_write_latency"                 // histogram, s: dataplane writes and deletes, admission to answer
	DataplaneDeletes     = "cfs_dataplane_deletes_total"      // counter per core
	DataplaneRefused     = "cfs_dataplane_refused_total"      // counter per core: refused at the queue limit
	DataplaneQueueDepth  = "cfs_dataplane_queue_depth"        // gauge per core: data requests held now
	DataplaneCPUSeconds  = "cfs_dataplane_cpu_seconds_total"  // counter per core and mode (user, system)
	DataplaneInFlight    = "cfs_dataplane_requests_in_flight" // gauge: received, not yet answered
	DataplaneBadRequests = "cfs_dataplane_bad_requests_total" // counter by kind of bad input
)

// Exported lists every metric name a control process exports (the Go and process
// collectors' go_* and process_* aside); tests check dashboards and rules against it.
var Exported = []string{CreateFileLatency, MetadataReplicateLatency, IOReadLatency, CPUUsage, NodeState,
	RaftGroups, RaftGroupsLeading, RaftGroupsLeaderless, FlashUsedBytes, FlashCapacityBytes, DataplaneUp,
	DataplaneReads, DataplaneWrites, DataplaneReadBytes, DataplaneWriteBytes, DataplaneFailed, DataplaneQueueLimit,
	AdminRequests}

// DataplaneExported lists every metric name the dataplane process serves on its own
// /metrics (cfs dataplane --metrics-listen), Go and process collectors aside. Its I/O
// figures carry a core label; the control process's copies of the same names (above)
// are the sums it reads over the sidecar channel, for cfsctl metrics.
var DataplaneExported = []string{IOReadLatency, IOWriteLatency, DataplaneReads, DataplaneWrites, DataplaneDeletes,
	DataplaneReadBytes, DataplaneWriteBytes, DataplaneFailed, DataplaneRefused, DataplaneQueueDepth, DataplaneQueueLimit,
	DataplaneCPUSeconds, DataplaneInFlight, DataplaneBadRequests}

// NotExported are metric names the runbook uses that nothing backs yet; alert rules on
// them exist but never fire, and cfsctl says "not supported yet" for them.
var NotExported = map[string]string{
	"replication_lag_s3":                 "no S3 tiering yet",
	"metadata_corruption_detected_total": "no metadata fsck yet (the metadata service is issue 5)",
}

// LatencyBuckets are the latency histograms' upper bounds in seconds: 1 µs to ~8.4 s by
// powers of two, the dataplane's own log2 µs buckets.
func LatencyBuckets() []float64 { return prometheus.ExponentialBuckets(1e-6, 2, 24) }

// Control is a control process's metrics.
type Control struct {
	Reg               *prometheus.Registry
	CreateFile        prometheus.Histogram
	ReplicateLatency  *prometheus.HistogramVec // by group kind: cluster, shard
	AdminRequestCount *prometheus.CounterVec   // by route and status code
	CPU               *CPUSampler
}

// NewControl registers a control process's metrics; extra collectors (the node's cluster
// view, its dataplane's figures) are registered by the caller.
func NewControl() *Control {
	c := &Control{Reg: prometheus.NewRegistry(), CPU: NewCPUSampler()}
	c.CreateFile = prometheus.NewHistogram(prometheus.HistogramOpts{Name: CreateFileLatency,
		Help: "Seconds to create a file through the metadata service (observed once the metadata service serves creates).", Buckets: LatencyBuckets()})
	c.ReplicateLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetadataReplicateLatency,
		Help: "Seconds from proposing a command to a Raft group led here to its commit and apply.", Buckets: LatencyBuckets()}, []string{"group"})
	c.AdminRequestCount = prometheus.NewCounterVec(prometheus.CounterOpts{Name: AdminRequests,
		Help: "Admin API requests served, by route and HTTP status."}, []string{"route", "code"})
	c.Reg.MustRegister(c.CreateFile, c.ReplicateLatency, c.AdminRequestCount, c.CPU,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return c
}

// CPUSampler measures each core's busy fraction between samples of /proc/stat.
type CPUSampler struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	last map[int64]procfs.CPUStat
	use  map[int64]float64
}

// NewCPUSampler returns a sampler with no figures until two samples were taken.
func NewCPUSampler() *CPUSampler {
	return &CPUSampler{desc: prometheus.NewDesc(CPUUsage, "Busy fraction (0..1) of each CPU over the last sampling interval (5 s).", []string{"cpu"}, nil)}
}

// Run samples every interval until ctx ends.
func (s *CPUSampler) Run(ctx context.Context, interval time.Duration) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if st, err := fs.Stat(); err == nil {
			s.sample(st.CPU)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *CPUSampler) sample(now map[int64]procfs.CPUStat) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil {
		use := make(map[int64]float64, len(now))
		for cpu, b := range now {
			a, ok := s.last[cpu]
			if !ok {
				continue
			}
			if u, ok := Busy(a, b); ok {
				use[cpu] = u
			}
		}
		s.use = use
	}
	s.last = now
}

// Busy is the busy fraction of a CPU between two readings; false when no time passed.
func Busy(a, b procfs.CPUStat) (float64, bool) {
	idle := (b.Idle + b.Iowait) - (a.Idle + a.Iowait)
	busy := (b.User + b.Nice + b.System + b.IRQ + b.SoftIRQ + b.Steal) - (a.User + a.Nice + a.System + a.IRQ + a.SoftIRQ + a.Steal)
	total := idle + busy
	if total <= 0 {
		return 0, false
	}
	u := busy / total
	return min(max(u, 0), 1), true
}

// Usage returns each CPU's busy fraction by CPU number (nil before two samples).
func (s *CPUSampler) Usage() map[int64]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]float64, len(s.use))
	for k, v := range s.use {
		out[k] = v
	}
	return out
}

// Describe implements prometheus.Collector.
func (s *CPUSampler) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect implements prometheus.Collector.
func (s *CPUSampler) Collect(ch chan<- prometheus.Metric) {
	for cpu, u := range s.Usage() {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, u, strconv.FormatInt(cpu, 10))
	}
}

// Log2Histogram converts the dataplane's log2 µs latency buckets (bucket 0: under 1 µs,
// bucket b: [2^(b-1), 2^b) µs, the last: longer) into a Prometheus histogram's cumulative
// counts at LatencyBuckets' bounds, a count and an estimated sum (each bucket's count at
// its midpoint).
func Log2Histogram(buckets []uint64) (count uint64, sum float64, cum map[float64]uint64) {
	bounds := LatencyBuckets()
	cum = make(map[float64]uint64, len(bounds))
	var run uint64
	for b, n := range buckets {
		run += n
		var lo, hi float64 // µs
		if b > 0 {
			lo = float64(uint64(1) << (b - 1))
		}
		hi = float64(uint64(1) << b)
		sum += float64(n) * (lo + hi) / 2 / 1e6
		if b < len(bounds) {
			cum[bounds[b]] = run
		}
	}
	for _, ub := range bounds {
		if _, ok := cum[ub]; !ok {
			cum[ub] = run
		}
	}
	return run, sum, cum
}
