package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The dataplane serves its own figures as Prometheus text on plain HTTP at
// metrics.listen (GET /metrics, nothing else): read-only counters Prometheus scrapes
// without credentials, as node exporters are. The figures are read from the node at
// scrape time (the same ones the sidecar channel's stats answer), so there is no second
// copy to keep in step.

var (
	dpCore        = []string{"core"}
	descDPReadLat = prometheus.NewDesc(metrics.IOReadLatency, "Seconds from a read's admission by its I/O core to its answer (log2 µs buckets), per core.", dpCore, nil)
	descDPWrLat   = prometheus.NewDesc(metrics.IOWriteLatency, "Seconds from a write's or delete's admission by its I/O core to its answer (log2 µs buckets), per core.", dpCore, nil)
	descDPReads   = prometheus.NewDesc(metrics.DataplaneReads, "Successful reads, per I/O core.", dpCore, nil)
	descDPWrites  = prometheus.NewDesc(metrics.DataplaneWrites, "Successful writes, per I/O core.", dpCore, nil)
	descDPDeletes = prometheus.NewDesc(metrics.DataplaneDeletes, "Successful deletes, per I/O core.", dpCore, nil)
	descDPRBytes  = prometheus.NewDesc(metrics.DataplaneReadBytes, "Bytes read, per I/O core.", dpCore, nil)
	descDPWBytes  = prometheus.NewDesc(metrics.DataplaneWriteBytes, "Bytes written, per I/O core.", dpCore, nil)
	descDPFailed  = prometheus.NewDesc(metrics.DataplaneFailed, "Data requests answered with an error, per I/O core.", dpCore, nil)
	descDPRefused = prometheus.NewDesc(metrics.DataplaneRefused, "Data requests refused as busy at the queue limit (nvme.queue_depth), per I/O core.", dpCore, nil)
	descDPQDepth  = prometheus.NewDesc(metrics.DataplaneQueueDepth, "Data requests an I/O core holds now.", dpCore, nil)
	descDPQLimit  = prometheus.NewDesc(metrics.DataplaneQueueLimit, "Data requests an I/O core admits at once (nvme.queue_depth in force).", dpCore, nil)
	descDPCPU     = prometheus.NewDesc(metrics.DataplaneCPUSeconds, "CPU seconds of an I/O core's thread, by mode (user, system; clock-tick resolution).", []string{"core", "mode"}, nil)
	descDPFlight  = prometheus.NewDesc(metrics.DataplaneInFlight, "Requests received and not yet answered.", nil, nil)
	descDPBad     = prometheus.NewDesc(metrics.DataplaneBadRequests, "Shard requests refused for bad input (bad_magic, too_large, …) or because the worker queue was full (worker_busy), by kind.", []string{"kind"}, nil)
)

// statsCollector exports a Node's Stats at each scrape.
type statsCollector struct{ n *Node }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDPReadLat, descDPWrLat, descDPReads, descDPWrites, descDPDeletes, descDPRBytes,
		descDPWBytes, descDPFailed, descDPRefused, descDPQDepth, descDPQLimit, descDPCPU, descDPFlight, descDPBad} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.n.Stats(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descDPReads, err)
		return
	}
	for _, core := range s.Cores {
		l := strconv.Itoa(core.Partition)
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l)
		}
		counter(descDPReads, core.Reads)
		counter(descDPWrites, core.Writes)
		counter(descDPDeletes, core.Deletes)
		counter(descDPRBytes, core.BytesRead)
		counter(descDPWBytes, core.BytesWritten)
		counter(descDPFailed, core.Failed)
		counter(descDPRefused, core.Refused)
		ch <- prometheus.MustNewConstMetric(descDPQDepth, prometheus.GaugeValue, float64(core.QueueDepth), l)
		ch <- prometheus.MustNewConstMetric(descDPQLimit, prometheus.GaugeValue, float64(core.QueueLimit), l)
		ch <- prometheus.MustNewConstMetric(descDPCPU, prometheus.CounterValue, time.Duration(core.UserCPUNs).Seconds(), l, "user")
		ch <- prometheus.MustNewConstMetric(descDPCPU, prometheus.CounterValue, time.Duration(core.SystemCPUNs).Seconds(), l, "system")
		n, sum, cum := metrics.Log2Histogram(core.ReadLatency)
		ch <- prometheus.MustNewConstHistogram(descDPReadLat, n, sum, cum, l)
		n, sum, cum = metrics.Log2Histogram(core.WriteLatency)
		ch <- prometheus.MustNewConstHistogram(descDPWrLat, n, sum, cum, l)
	}
	ch <- prometheus.MustNewConstMetric(descDPFlight, prometheus.GaugeValue, float64(s.Network.InFlight))
	for kind, v := range badInput(s.Network) {
		ch <- prometheus.MustNewConstMetric(descDPBad, prometheus.CounterValue, float64(v), kind)
	}
}

func badInput(s sidecar.NetStats) map[string]uint64 {
	return map[string]uint64{"bad_magic": s.BadMagic, "bad_version": s.BadVersion, "bad_header_crc": s.BadHeaderCRC,
		"too_large": s.TooLarge, "bad_payload_crc": s.BadPayloadCRC, "bad_flags": s.BadFlags, "unknown_opcode": s.UnknownOpcode,
		"truncated": s.Truncated, "window_overrun": s.WindowOverrun, "unknown_response": s.UnknownResponse, "worker_busy": s.WorkerBusy}
}

// MetricsServer serves a Node's /metrics.
type MetricsServer struct {
	l   net.Listener
	srv *http.Server
}

// ServeMetrics listens on addr (port 0 picks one) and serves n's figures, the Go
// runtime's and the process's on GET /metrics until Close.
func ServeMetrics(n *Node, addr string, logf func(string, ...any)) (*MetricsServer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(statsCollector{n}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
	m := &MetricsServer{l: l, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}}
	go func() {
		if err := m.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("metrics: %v", err)
		}
	}()
	return m, nil
}

// Addr is the address the metrics are served on.
func (m *MetricsServer) Addr() net.Addr { return m.l.Addr() }

// Close stops serving.
func (m *MetricsServer) Close() error { return m.srv.Close() }
