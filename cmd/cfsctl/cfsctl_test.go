package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/cmd/internal/admincli"
	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ctl runs cfsctl in-process against endpoints and returns stdout, stderr, exit status.
func ctl(endpoints string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(append([]string{"--endpoint", endpoints}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func ctlJSON(t *testing.T, endpoints string, v any, args ...string) {
	t.Helper()
	out, errs, code := ctl(endpoints, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("cfsctl %v: exit %d: %s", args, code, errs)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("cfsctl %v --json: %v\n%s", args, err, out)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range []string{"status", "node-status", "node-list", "alerts", "capacity-check", "stats", "health-report", "storage stats",
		"raft-status", "shard-stats", "shard-distribution", "config get", "config set", "metrics", "hardware-stats", "network-health",
		"set-log-level", "set-maintenance-window", "clear-maintenance-window", "node-stop", "cluster-token",
		"profile", "flamegraph", "workload-analysis", "process-top", "perf-profile", "perf-generate-flamegraph"} {
		out, _, code := ctl("127.0.0.1:1", append(strings.Fields(c), "--help")...)
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: exit %d, example shown: %v", c, code, strings.Contains(out, "Examples:"))
		}
	}
	// no client certificate: exit 1, saying where to get one
	t.Setenv(node.EnvCert, "")
	t.Setenv(node.EnvCA, "")
	if _, errs, code := ctl("127.0.0.1:1", "status", "--node-dir", t.TempDir()); code != 1 || !strings.Contains(errs, "set CLAUDEFS_CERT (cfs dev env prints it)") {
		t.Errorf("status without a certificate: exit %d: %s", code, errs)
	}
	// a node that is not there: exit 1, naming the address and what to try
	certs := t.TempDir()
	if err := node.InitClusterTLS(certs, &node.Config{ID: "node-1", ClusterName: "t", ClientAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(node.EnvCert, node.AdminFile(certs))
	t.Setenv(node.EnvCA, node.CAFile(certs))
	_, errs, code := ctl("127.0.0.1:1", "status")
	if code != 1 || !strings.Contains(errs, "127.0.0.1:1") || !strings.Contains(errs, "unreachable") {
		t.Errorf("status against nothing: exit %d: %s", code, errs)
	}
	if _, _, code := ctl("127.0.0.1:1", "alerts", "--since", "forever"); code != 2 {
		t.Errorf("a bad --since: exit %d, want 2", code)
	}
}

// TestPerfCommands records this process with perf while it burns CPU and
// draws the recording, when perf works on the machine.
func TestPerfCommands(t *testing.T) {
	if _, err := exec.LookPath("perf"); err != nil {
		t.Skip("perf not installed (make tools installs linux-perf)")
	}
	dir := t.TempDir()
	data, svg := filepath.Join(dir, "perf.data"), filepath.Join(dir, "cpu.svg")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		x := uint64(1)
		for {
			select {
			case <-stop:
				return
			default:
				for i := 0; i < 1e5; i++ {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
		}
	}()
	var pj admincli.PerfProfileJSON
	out, errs, code := ctl("127.0.0.1:1", "perf-profile", "--duration", "1s", "--pid", fmt.Sprint(os.Getpid()), "-o", data, "--json")
	if code != 0 {
		if strings.Contains(errs, "perf could not record") || strings.Contains(errs, "offers no perf events") || strings.Contains(errs, "refuses perf events") {
			t.Skipf("perf does not record here: %s", errs)
		}
		t.Fatalf("perf-profile: exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &pj); err != nil || pj.Samples == 0 || pj.File != data {
		t.Fatalf("perf-profile --json: %v %+v", err, pj)
	}
	if _, errs, code := ctl("127.0.0.1:1", "perf-generate-flamegraph", "--input", data, "--output", svg); code != 0 {
		t.Fatalf("perf-generate-flamegraph: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.Contains(string(b), "<title>cfsctl.test") {
		t.Fatalf("the SVG does not name the command recorded: %v\n%.600s", err, b)
	}
	if _, errs, code := ctl("127.0.0.1:1", "perf-generate-flamegraph", "--input", filepath.Join(dir, "absent"), "--output", svg); code != 1 || !strings.Contains(errs, "perf-profile") {
		t.Errorf("a missing recording: exit %d: %s", code, errs)
	}
}

// TestAgainstDevCluster runs the commands against a 3-node dev cluster of real processes
// with 256 shards and checks their --json against the cluster's own state.
func TestAgainstDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	bin := t.TempDir()
	cfs := filepath.Join(bin, "cfs")
	if out, err := exec.Command("go", "build", "-o", cfs, "github.com/claudefs/claudefs/cmd/cfs").CombinedOutput(); err != nil {
		t.Fatalf("building cfs: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command(cfs, "dev", "up", "--dir", dir, "--nodes", "3", "--shards", "256", "--device-size", "128M", "--wait", "150s").CombinedOutput(); err != nil {
		t.Fatalf("cfs dev up: %v\n%s", err, out)
	}
	var stopped []int
	t.Cleanup(func() {
		for _, p := range stopped {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
		if out, err := exec.Command(cfs, "dev", "down", "--dir", dir).CombinedOutput(); err != nil {
			t.Errorf("cfs dev down: %v\n%s", err, out)
		}
	})
	// As an operator would: eval "$(cfs dev env --dir DIR)".
	env, err := exec.Command(cfs, "dev", "env", "--dir", dir).Output()
	if err != nil {
		t.Fatalf("cfs dev env: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			t.Fatalf("cfs dev env: line %q", line)
		}
		t.Setenv(k, v)
	}
	creds := node.FindCreds("", "", "", "")
	tc, err := creds.TLSConfig()
	if err != nil {
		t.Fatalf("the credentials cfs dev env names: %v", err)
	}
	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	var nodeDirs []string
	var cfgs []*node.Config
	for i := 1; i <= 3; i++ {
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
		c, err := node.LoadConfig(nd)
		if err != nil {
			t.Fatal(err)
		}
		nodeDirs, cfgs = append(nodeDirs, nd), append(cfgs, c)
	}
	eps := cfgs[0].ClientAddr + "," + cfgs[1].ClientAddr + "," + cfgs[2].ClientAddr

	t.Run("status", func(t *testing.T) {
		var s admincli.StatusJSON
		for deadline := time.Now().Add(30 * time.Second); ; {
			ctlJSON(t, eps, &s, "status")
			if s.Status == "HEALTHY" || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if s.Status != "HEALTHY" || s.Groups.Total != 256 || s.Groups.Healthy != 256 || s.Nodes != 3 || s.NodesHealthy != 3 || s.ReplicationLag != nil {
			t.Fatalf("status: %+v; want HEALTHY, 256/256 groups, 3/3 nodes, no invented lag", s)
		}
		out, _, code := ctl(eps, "status")
		if code != 0 || !strings.Contains(out, "Raft Groups: 256/256 healthy") || !strings.Contains(out, "Status: HEALTHY") {
			t.Fatalf("status: exit %d\n%s", code, out)
		}
	})

	t.Run("raft and shards", func(t *testing.T) {
		var r struct {
			LeaderCount map[string]int `json:"leader_count"`
			Shards      []struct {
				Status   string   `json:"status"`
				Leader   string   `json:"leader"`
				Replicas []string `json:"replicas"`
			} `json:"shards"`
		}
		var d struct {
			Shards  int  `json:"shards"`
			Member  bool `json:"member"`
			Leading int  `json:"leading"`
		}
		// Leaderships move back to their preferred replicas for a while after start: retry
		// until two reads agree.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			ctlJSON(t, eps, &r, "raft-status")
			ctlJSON(t, eps, &d, "shard-distribution", "node-2")
			if d.Leading == r.LeaderCount["node-2"] || time.Now().After(deadline) {
				break
			}
		}
		sum := 0
		for _, n := range r.LeaderCount {
			sum += n
		}
		if len(r.Shards) != 256 || sum != 256 {
			t.Fatalf("raft-status: %d shards, leaderships %v", len(r.Shards), r.LeaderCount)
		}
		if !d.Member || d.Shards != 256 || d.Leading != r.LeaderCount["node-2"] {
			t.Fatalf("shard-distribution node-2: %+v (3 replicas on 3 nodes: every shard; leads %d)", d, r.LeaderCount["node-2"])
		}
	})

	t.Run("storage matches the dataplanes", func(t *testing.T) {
		var s admincli.StorageJSON
		ctlJSON(t, eps, &s, "storage", "stats")
		if len(s.Nodes) != 3 || s.Reporting != 3 {
			t.Fatalf("storage stats: %+v", s)
		}
		for i, n := range s.Nodes {
			sc := sidecar.NewClient(node.DataplaneSocket(nodeDirs[i]), sidecar.ClientOptions{})
			h, err := sc.Health(context.Background())
			sc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if n.Name != cfgs[i].ID || n.CapacityBytes != h.CapacityBytes || n.Device != h.Device {
				t.Fatalf("storage stats %+v, the dataplane says capacity %d device %s", n, h.CapacityBytes, h.Device)
			}
		}
	})

	t.Run("config set reaches the dataplanes", func(t *testing.T) {
		if _, errs, code := ctl(eps, "config", "set", "nvme.queue_depth=64"); code != 0 {
			t.Fatalf("config set: exit %d: %s", code, errs)
		}
		for _, nd := range nodeDirs {
			sc := sidecar.NewClient(node.DataplaneSocket(nd), sidecar.ClientOptions{})
			st, err := sc.Stats(context.Background())
			sc.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range st.Cores {
				if c.QueueLimit != 64 {
					t.Fatalf("%s: core %d queue limit %d after config set nvme.queue_depth=64", nd, c.Partition, c.QueueLimit)
				}
			}
		}
		var g node.AdminConfig
		ctlJSON(t, eps, &g, "config", "get", "nvme.queue_depth")
		if g.Cluster["nvme.queue_depth"] != "64" || len(g.Nodes) != 3 || g.Nodes[2].Values[0].Value != "64" {
			t.Fatalf("config get: %+v", g)
		}
		_, errs, code := ctl(eps, "config", "set", "nvme.queue_depth=5000")
		if code != 1 || !strings.Contains(errs, "1..4096") {
			t.Fatalf("out of range: exit %d: %s (want the valid range)", code, errs)
		}
		if _, errs, code := ctl(eps, "config", "set", "compression.level=1"); code != 1 || !strings.Contains(errs, "not supported yet") {
			t.Fatalf("compression.level: exit %d: %s", code, errs)
		}
	})

	t.Run("set-log-level changes what control logs", func(t *testing.T) {
		logf := filepath.Join(nodeDirs[1], "control.log")
		count := func() int {
			b, _ := os.ReadFile(logf)
			return bytes.Count(b, []byte("DEBUG alerts: evaluated"))
		}
		before := count()
		time.Sleep(node.AlertEvery + time.Second)
		if count() != before {
			t.Fatal("DEBUG lines before set-log-level")
		}
		if _, errs, code := ctl(eps, "set-log-level", "--module", "claudefs::metadata", "--level", "DEBUG"); code != 0 {
			t.Fatalf("set-log-level: %s", errs)
		}
		time.Sleep(node.AlertEvery + time.Second)
		if count() == before {
			t.Fatal("no DEBUG lines after set-log-level DEBUG")
		}
		ctl(eps, "set-log-level", "--module", "control", "--level", "INFO")
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := https.Get("https://" + cfgs[0].ClientAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metrics.Exported {
			if _, ok := fams[name]; !ok && name != metrics.AdminRequests {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if h := fams[metrics.MetadataReplicateLatency]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
			t.Errorf("metadata_replicate_latency observed nothing after config set (a cluster group apply)")
		}
		out, _, code := ctl(eps, "metrics", "--node", "node-3", "--metric", "cpu_usage,replication_lag_s3")
		if code != 0 || !strings.Contains(out, `cpu_usage{cpu="0"}`) || !strings.Contains(out, "replication_lag_s3: not supported yet") {
			t.Fatalf("metrics --node node-3: exit %d\n%s", code, out)
		}
	})

	t.Run("the API refuses missing and foreign certificates", func(t *testing.T) {
		other := t.TempDir()
		if err := node.InitClusterTLS(other, &node.Config{ID: "node-1", ClusterName: "other", ClientAddr: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
		cert := os.Getenv(node.EnvCert)
		t.Setenv(node.EnvCert, node.AdminFile(other))
		if _, errs, code := ctl(eps, "status"); code != 1 || !strings.Contains(errs, "not signed by this cluster's CA") || !strings.Contains(errs, node.AdminFile(other)) {
			t.Errorf("another cluster's certificate: exit %d: %s", code, errs)
		}
		t.Setenv(node.EnvCert, cert)
		t.Setenv(node.EnvCA, node.CAFile(other))
		if _, errs, code := ctl(eps, "status"); code != 1 || !strings.Contains(errs, "is not signed by the CA in "+node.CAFile(other)) {
			t.Errorf("another cluster's CA: exit %d: %s", code, errs)
		}
	})

	t.Run("a real Prometheus scrapes every node", func(t *testing.T) {
		prom, err := exec.LookPath("prometheus")
		if err != nil {
			t.Skip("prometheus not installed (make tools installs Debian's prometheus package)")
		}
		pdir := t.TempDir()
		rules, _ := filepath.Abs("../../tools/prometheus/alerts.yml")
		cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n"+
			"  - job_name: claudefs-control\n    scheme: https\n    tls_config: {ca_file: %q, cert_file: %q, key_file: %q}\n    static_configs:\n      - targets: [%q, %q, %q]\n"+
			"  - job_name: claudefs-dataplane\n    static_configs:\n      - targets: [%q, %q, %q]\n",
			rules, creds.CA, creds.Cert, creds.Cert, cfgs[0].ClientAddr, cfgs[1].ClientAddr, cfgs[2].ClientAddr,
			cfgs[0].MetricsAddr, cfgs[1].MetricsAddr, cfgs[2].MetricsAddr)
		if err := os.WriteFile(filepath.Join(pdir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		cmd := exec.Command(prom, "--config.file="+filepath.Join(pdir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(pdir, "data"),
			"--web.listen-address="+addr)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		query := func(q string) (int, error) {
			resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			var r struct {
				Data struct {
					Result []struct {
						Value []any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
				return 0, err
			}
			return len(r.Data.Result), nil
		}
		// Both processes of every node: the control processes over HTTPS with the
		// operator's certificate, the dataplanes' plain-HTTP /metrics.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			up, err1 := query("up == 1")
			groups, err2 := query("cfs_raft_groups")
			dps, err3 := query(`count by (instance) (cfs_dataplane_cpu_seconds_total{job="claudefs-dataplane"})`)
			if up == 6 && groups == 3 && dps == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus: %d targets up (want 6), %d with cfs_raft_groups, %d dataplanes with cpu seconds (%v, %v, %v)\n%s",
					up, groups, dps, err1, err2, err3, log.String())
			}
		}
		for _, q := range []string{
			`count by (instance) (io_read_latency_bucket{job="claudefs-control"})`,
			`count by (instance) (io_read_latency_bucket{job="claudefs-dataplane"})`,
			`count by (instance) (cfs_dataplane_reads_total{job="claudefs-dataplane"})`,
			`count by (instance) (cfs_dataplane_queue_depth{job="claudefs-dataplane"})`,
			`count by (instance) (cfs_dataplane_queue_limit{job="claudefs-dataplane"} == 64)`, // config set nvme.queue_depth=64 above
		} {
			if n, err := query(q); err != nil || n != 3 {
				t.Errorf("%s: %d instances, want 3 (%v)", q, n, err)
			}
		}
	})

	t.Run("profiling", func(t *testing.T) {
		// Load on node-2's dataplane while it is profiled, asked through node-1.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			cl := dataplane.NewClient(cfgs[1].DataplaneAddr, netio.ClientOptions{})
			defer cl.Close()
			data := bytes.Repeat([]byte("p"), 4096)
			for i := 0; ctx.Err() == nil; i++ {
				_ = cl.WriteShard(ctx, chunkstore.ID{Hi: 77, Lo: uint64(i % 64)}, uint64(i+1), 1<<40, data)
			}
		}()
		defer func() { cancel(); <-done }()
		ep := cfgs[0].ClientAddr
		file := filepath.Join(t.TempDir(), "node-2.pprof")
		var pj admincli.ProfileJSON
		ctlJSON(t, ep, &pj, "profile", "--node", cfgs[1].ID, "--duration", "1s", "-o", file)
		if pj.Node != cfgs[1].ID || pj.Process != "dataplane" || pj.Samples == 0 || pj.PID <= 0 || len(pj.Cores) == 0 {
			t.Fatalf("profile: %+v", pj)
		}
		if b, err := os.ReadFile(file); err != nil || len(b) != pj.Bytes || b[0] != 0x1f {
			t.Fatalf("the pprof file: %d bytes, %v", len(b), err)
		}
		// The file drawn, and one core of it.
		svg, errs, code := ctl(ep, "flamegraph", "--input", file, "--core", pj.Cores[0])
		if code != 0 || !strings.HasPrefix(svg, "<?xml") || !strings.Contains(svg, "<title>") {
			t.Fatalf("flamegraph --input --core %s: exit %d: %s", pj.Cores[0], code, errs)
		}
		if _, errs, code := ctl(ep, "flamegraph", "--input", file, "--core", "63"); code != 1 || !strings.Contains(errs, "no samples of core 63") {
			t.Errorf("--core of a core not in the profile: exit %d: %s", code, errs)
		}
		if _, errs, code := ctl(ep, "flamegraph", "--input", file, "--operation", "delete"); code != 1 || !strings.Contains(errs, "no samples of operation delete") {
			t.Errorf("--operation of an operation not in the profile: exit %d: %s", code, errs)
		}
		if _, errs, code := ctl(ep, "flamegraph", "--input", file, "--operation", "mkdir"); code != 2 || !strings.Contains(errs, `--operation "mkdir"`) {
			t.Errorf("a bad --operation: exit %d: %s", code, errs)
		}
		var wl admincli.WorkloadJSON
		ctlJSON(t, ep, &wl, "workload-analysis", "--node", cfgs[1].ID, "--duration", "1s")
		var sum float64
		for _, b := range wl.Buckets {
			sum += b.Percent
		}
		if wl.Node != cfgs[1].ID || wl.Samples == 0 || len(wl.Buckets) != 8 || sum < 99.9 || sum > 100.1 {
			t.Fatalf("workload-analysis: %+v", wl)
		}
		var pt node.ProcessesResponse
		ctlJSON(t, ep, &pt, "process-top", "--node", cfgs[1].ID, "--interval", "300ms")
		names := map[string]bool{}
		for _, p := range pt.Processes {
			names[p.Name] = p.PID > 0 && p.RSSBytes > 0 && p.Threads > 0
		}
		io := 0
		for _, th := range pt.Threads {
			if th.Role == "io" {
				io++
			}
		}
		if pt.Node != cfgs[1].ID || !names["control"] || !names["dataplane"] || !names["supervisor"] || io == 0 {
			t.Fatalf("process-top: %+v", pt)
		}
		var cj admincli.ProfileJSON
		ctlJSON(t, ep, &cj, "profile", "--node", cfgs[2].ID, "--process", "control", "--duration", "1s", "-o", file)
		if cj.Node != cfgs[2].ID || cj.Process != "control" || cj.PID <= 0 || cj.Bytes == 0 {
			t.Fatalf("profile --process control: %+v", cj)
		}
		if _, errs, code := ctl(ep, "profile", "--node", "node-9", "--duration", "1s", "-o", file); code != 1 || !strings.Contains(errs, `no node "node-9"`) {
			t.Errorf("profile of an unknown node: exit %d: %s", code, errs)
		}
	})

	t.Run("maintenance window", func(t *testing.T) {
		var w node.AdminWindow
		ctlJSON(t, eps, &w, "set-maintenance-window", "--start", "now", "--duration", "1h")
		if !w.Active || w.End.Sub(w.Start) != time.Hour {
			t.Fatalf("window %+v", w)
		}
		var s admincli.StatusJSON
		ctlJSON(t, eps, &s, "status")
		if s.Window == nil || !s.Window.Active {
			t.Fatalf("status does not show the window: %+v", s.Window)
		}
		if _, errs, code := ctl(eps, "clear-maintenance-window"); code != 0 {
			t.Fatal(errs)
		}
		// status reads the answering node's replica of the cluster group: it learns the
		// commit within a heartbeat.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			s = admincli.StatusJSON{}
			ctlJSON(t, eps, &s, "status")
			if s.Window == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("window still there 3 s after clear: %+v", s.Window)
			}
		}
	})

	t.Run("a stopped node is DOWN and alerts", func(t *testing.T) {
		pids, err := supervise.ReadPids(node.PidFile(nodeDirs[2]))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pids {
			if syscall.Kill(p, syscall.SIGSTOP) == nil {
				stopped = append(stopped, p)
			}
		}
		start := time.Now()
		var down time.Duration
		for time.Since(start) < 15*time.Second {
			var ns struct {
				Nodes []admincli.NodeJSON `json:"nodes"`
			}
			ctlJSON(t, eps, &ns, "node-status", "--all")
			if len(ns.Nodes) == 3 && ns.Nodes[2].State == "DOWN" {
				down = time.Since(start)
				if ns.Nodes[2].Error == "" {
					t.Errorf("node-3 DOWN but no reason shown for its missing report")
				}
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if down == 0 || down > 10*time.Second {
			t.Fatalf("node-3 not DOWN within 10 s of SIGSTOP (%v)", down)
		}
		t.Logf("node-3 DOWN %v after SIGSTOP", down.Round(100*time.Millisecond))
		var a node.AlertsResponse
		for deadline := time.Now().Add(3 * node.AlertEvery); ; {
			ctlJSON(t, eps, &a, "alerts", "--since", "1h")
			found := false
			for _, e := range a.Active {
				found = found || (e.Alert == "node_down" && e.Subject == "node-3" && e.State == "pending")
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alerts never listed node_down for node-3: %+v", a.Active)
			}
			time.Sleep(time.Second)
		}
		var s admincli.StatusJSON
		ctlJSON(t, eps, &s, "status")
		if s.Status == "HEALTHY" || s.NodeStates["node-3"] != "DOWN" {
			t.Fatalf("status with node-3 stopped: %+v", s)
		}
		for _, p := range stopped {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
		stopped = nil
	})

	t.Run("node-stop", func(t *testing.T) {
		pids, err := supervise.ReadPids(node.PidFile(nodeDirs[2]))
		if err != nil {
			t.Fatal(err)
		}
		var res node.NodeStopResponse
		for deadline := time.Now().Add(20 * time.Second); ; { // node-3 is coming back from SIGSTOP
			out, errs, code := ctl(eps, "node-stop", "node-3", "--json")
			if code == 0 {
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node-stop: %s", errs)
			}
			time.Sleep(time.Second)
		}
		if res.Stopped != "supervisor" || res.Pid != pids["supervisor"] {
			t.Fatalf("node-stop: %+v, supervisor pid %d", res, pids["supervisor"])
		}
		for deadline := time.Now().Add(30 * time.Second); syscall.Kill(res.Pid, 0) == nil; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("node-3's supervisor still runs 30 s after node-stop")
			}
		}
	})
}
