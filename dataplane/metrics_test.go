package dataplane

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestServeMetrics scrapes a real dataplane's /metrics after a write and a read: every
// name of metrics.DataplaneExported is there, and the I/O done is counted per core.
func TestServeMetrics(t *testing.T) {
	n, _ := startNode(t, testNodeConfig(t))
	ms, err := ServeMetrics(n, "127.0.0.1:0", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	ctx := ctxT(t)
	cl := NewClient(n.Addr().String(), netio.ClientOptions{})
	defer cl.Close()
	id := chunkstore.ID{Lo: 7}
	if err := cl.WriteShard(ctx, id, 1, 0, []byte("metrics")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, _, err := cl.ReadShard(ctx, id, 0, buf); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + ms.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range metrics.DataplaneExported {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	sum := func(name string) (v float64, cores int) {
		for _, m := range fams[name].GetMetric() {
			cores++
			if h := m.GetHistogram(); h != nil {
				v += float64(h.GetSampleCount())
			} else {
				v += m.GetCounter().GetValue()
			}
		}
		return v, cores
	}
	if v, cores := sum(metrics.DataplaneReads); v != 1 || cores != n.Store().Partitions() {
		t.Errorf("%s: %v over %d cores, want 1 over %d", metrics.DataplaneReads, v, cores, n.Store().Partitions())
	}
	if v, _ := sum(metrics.IOReadLatency); v != 1 {
		t.Errorf("%s counted %v reads, want 1", metrics.IOReadLatency, v)
	}
	if v, _ := sum(metrics.DataplaneWrites); v != 1 {
		t.Errorf("%s: %v, want 1", metrics.DataplaneWrites, v)
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("no Go or process metrics")
	}
	if r, err := hc.Get("http://" + ms.Addr().String() + "/"); err != nil || r.StatusCode != http.StatusNotFound {
		t.Errorf("GET /: %v, %v; want 404 (only /metrics is served)", r, err)
	}
}
