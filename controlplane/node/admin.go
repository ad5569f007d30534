package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/procfs"
)

// admin is the control process's admin state: metrics, log levels, the alert evaluator
// and a sidecar client of its own (calls wait their turn on one connection).
type admin struct {
	metrics *metrics.Control
	dp      *sidecar.Client
	levels  *logLevels
	alerts  *alertState
}

// startAdmin makes the admin state and starts its loops (CPU sampling, alert rules,
// keeping the dataplane's live configuration equal to the cluster's) until ctx ends.
func (n *Node) startAdmin(ctx context.Context, wg *sync.WaitGroup) {
	a := n.adm
	wg.Add(3)
	go func() { defer wg.Done(); a.metrics.CPU.Run(ctx, 5*time.Second) }()
	go func() { defer wg.Done(); n.alertLoop(ctx) }()
	go func() { defer wg.Done(); n.configLoop(ctx) }()
}

// newAdmin is called before the client API serves.
func (n *Node) newAdmin() {
	n.adm = &admin{
		metrics: metrics.NewControl(),
		dp:      sidecar.NewClient(DataplaneSocket(n.dir), sidecar.ClientOptions{Timeout: 3 * time.Second}),
		levels:  newLogLevels(),
		alerts:  newAlertState(AlertsFile(n.dir)),
	}
	n.adm.metrics.Reg.MustRegister(&nodeCollector{n: n})
	if err := n.adm.alerts.load(); err != nil {
		n.logf("alert history %s: %v (starting a new one)", AlertsFile(n.dir), err)
	}
}

// AlertsFile is where a node keeps its alert history.
func AlertsFile(dir string) string { return dir + "/alerts.jsonl" }

// adminRoutes registers the admin API on mux.
func (n *Node) adminRoutes(mux *http.ServeMux) {
	h := func(pattern string, fn http.HandlerFunc) { mux.HandleFunc(pattern, n.instrument(pattern, fn)) }
	h("GET /v1/admin/cluster", n.handleAdminCluster)
	h("GET /v1/admin/local", n.handleAdminLocal)
	h("GET /v1/admin/config", n.handleConfigGet)
	h("POST /v1/admin/config", n.handleConfigSet)
	h("GET /v1/admin/local/config", n.handleLocalConfigGet)
	h("POST /v1/admin/local/config", n.handleLocalConfigSet)
	h("POST /v1/admin/log-level", n.handleLogLevel)
	h("POST /v1/admin/local/log-level", n.handleLocalLogLevel)
	h("PUT /v1/admin/maintenance", n.handleSetWindow)
	h("DELETE /v1/admin/maintenance", n.handleClearWindow)
	h("POST /v1/admin/node-stop", n.handleNodeStop)
	h("GET /v1/admin/alerts", n.handleAlerts)
	h("GET /v1/admin/metrics", n.handleMetricsJSON)
	n.profileRoutes(h)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.adm.metrics.Reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
}

// statusWriter records the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (n *Node) instrument(route string, fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		fn(sw, r)
		n.adm.metrics.AdminRequestCount.WithLabelValues(route, fmt.Sprint(sw.code)).Inc()
		n.debugf("control", "admin: %s %s from %s: %d in %s", r.Method, r.URL.RequestURI(), r.RemoteAddr, sw.code, time.Since(start).Round(time.Microsecond))
	}
}

func windowOf(w *cluster.Window, now time.Time) *AdminWindow {
	if w == nil {
		return nil
	}
	end := w.Start.Add(w.Duration)
	return &AdminWindow{Start: w.Start, End: end, Active: !now.Before(w.Start) && now.Before(end)}
}

func (n *Node) handleAdminCluster(w http.ResponseWriter, r *http.Request) {
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	if !st.Bootstrapped() {
		n.fail(w, http.StatusServiceUnavailable, "unavailable", fmt.Errorf("%s has not learnt the cluster's state yet", n.cfg.ID), "it is starting or not yet joined; retry in a few seconds")
		return
	}
	out := &AdminCluster{ClusterName: st.Name, AnsweredBy: n.cfg.ID, Epoch: st.Epoch, Shards: st.Shards, Replicas: st.Replicas,
		ShardMap: st.ShardMap, Config: st.Config, Window: windowOf(st.Window, time.Now())}
	out.Leader, _ = n.cgroup.Leader()
	if r.URL.Query().Get("inodes") == "1" {
		ictx, cancel := context.WithTimeout(r.Context(), AdminPeerTimeout)
		out.Inodes, _ = n.inodeFigures(ictx, st)
		cancel()
	}
	alive := n.gossip.Alive()
	placed := map[string]int{}
	for _, reps := range st.ShardMap {
		for _, id := range reps {
			placed[id]++
		}
	}
	ids := st.NodeIDs()
	out.Nodes = make([]AdminNode, len(ids))
	withReports := r.URL.Query().Get("reports") != "0"
	var wg sync.WaitGroup
	for i, id := range ids {
		m := st.Nodes[id]
		_, up := alive[id]
		out.Nodes[i] = AdminNode{ID: id, Type: m.Type, State: m.State, Since: m.Since, Alive: up, ClientAddr: m.ClientAddr,
			DataplaneAddr: m.DataplaneAddr, Shards: placed[id]}
		if !withReports {
			continue
		}
		wg.Add(1)
		go func(an *AdminNode) {
			defer wg.Done()
			rep, err := n.reportOf(r.Context(), an.ID, an.ClientAddr, false)
			if err != nil {
				an.Error = err.Error()
			}
			an.Report = rep
		}(&out.Nodes[i])
	}
	wg.Wait()
	if withReports {
		out.Groups = shardHealth(st, out.Nodes)
	}
	n.writeJSON(w, http.StatusOK, out)
}

// reportOf is node id's own report: built here for this node, asked for otherwise.
func (n *Node) reportOf(ctx context.Context, id, addr string, peers bool) (*NodeReport, error) {
	if id == n.cfg.ID {
		return n.localReport(ctx, peers), nil
	}
	ctx, cancel := context.WithTimeout(ctx, AdminPeerTimeout)
	defer cancel()
	path := "/v1/admin/local"
	if peers {
		path += "?peers=1"
	}
	var rep NodeReport
	if err := n.client.Do(ctx, addr, http.MethodGet, path, nil, &rep); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s at %s did not answer within %s (stopped, hung or partitioned?)", id, addr, AdminPeerTimeout)
		}
		return nil, err
	}
	return &rep, nil
}

// ShardLeader is a shard's leader as its replicas' reports (states, each taken at a
// slightly different moment) show it: the replica reporting itself Leader, else the
// leader a majority of the shard's replicas name (a report caught mid-transfer of
// leadership). It also counts the replicas running the group.
func ShardLeader(replicas []string, reports map[string]GroupReport) (leader string, running int) {
	named := map[string]int{}
	for _, id := range replicas {
		g, ok := reports[id]
		if !ok {
			continue
		}
		switch g.State {
		case "Leader":
			leader = id
			running++
		case "Follower", "Candidate":
			if g.State == "Follower" {
				running++
			}
			if g.Leader != "" {
				named[g.Leader]++
			}
		}
	}
	if leader != "" {
		return leader, running
	}
	for id, votes := range named {
		if votes > len(replicas)/2 && slices.Contains(replicas, id) {
			return id, running
		}
	}
	return "", running
}

// shardHealth counts shards with a leader and with a majority of replicas running.
func shardHealth(st *cluster.State, nodes []AdminNode) ShardHealth {
	reports := map[uint32]map[string]GroupReport{}
	for _, an := range nodes {
		if an.Report == nil {
			continue
		}
		for _, g := range an.Report.Groups {
			if reports[g.ID] == nil {
				reports[g.ID] = map[string]GroupReport{}
			}
			reports[g.ID][an.ID] = g
		}
	}
	h := ShardHealth{Total: len(st.ShardMap)}
	ids := make([]uint32, 0, len(st.ShardMap))
	for g := range st.ShardMap {
		ids = append(ids, g)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, g := range ids {
		leader, running := ShardLeader(st.ShardMap[g], reports[g])
		if leader != "" {
			h.WithLeader++
		}
		if leader != "" && running > len(st.ShardMap[g])/2 {
			h.Healthy++
		} else if len(h.Unhealthy) < 64 {
			h.Unhealthy = append(h.Unhealthy, g)
		}
	}
	return h
}

func (n *Node) handleAdminLocal(w http.ResponseWriter, r *http.Request) {
	n.writeJSON(w, http.StatusOK, n.localReport(r.Context(), r.URL.Query().Get("peers") == "1"))
}

// localReport is this node's report; the dataplane is given at most 1.5 s.
func (n *Node) localReport(ctx context.Context, peers bool) *NodeReport {
	rep := &NodeReport{NodeID: n.cfg.ID, Uptime: time.Since(n.start).Seconds(), LogLevels: n.adm.levels.all()}
	for _, g := range n.host.Groups() {
		rep.Groups = append(rep.Groups, GroupReport{ID: g.ID, State: g.State, Leader: g.LeaderID, Term: g.Term,
			LastIndex: g.LastIndex, CommitIndex: g.CommitIndex, AppliedIdx: g.AppliedIndex})
	}
	rep.ReplicateN, rep.ReplicateP99 = n.replicateSummary()
	dctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	h, err := n.adm.dp.Health(dctx)
	var s sidecar.Stats
	if err == nil {
		s, err = n.adm.dp.Stats(dctx)
	}
	cancel()
	if err != nil {
		rep.DPError = fmt.Sprintf("dataplane of %s not answering on %s: %v", n.cfg.ID, DataplaneSocket(n.dir), err)
	} else {
		rep.Dataplane = &DataplaneReport{Health: h, Stats: s}
		if n.cfg.MetricsAddr != "" {
			rep.Dataplane.MetricsURL = "http://" + n.cfg.MetricsAddr + "/metrics"
		}
	}
	rep.Host = n.hostReport()
	if peers {
		rep.Peers = n.peerRTTs(ctx)
	}
	return rep
}

func (n *Node) hostReport() HostReport {
	hr := HostReport{CPUs: runtime.NumCPU(), Goroutines: runtime.NumGoroutine()}
	use := n.adm.metrics.CPU.Usage()
	if len(use) > 0 {
		hi := int64(0)
		for c := range use {
			hi = max(hi, c)
		}
		if hi < 4096 {
			hr.CPUUsage = make([]float64, hi+1)
			for c, u := range use {
				hr.CPUUsage[c] = u
			}
		}
	}
	var errs []string
	fs, err := procfs.NewDefaultFS()
	if err == nil {
		if la, err := fs.LoadAvg(); err == nil {
			hr.Load1 = la.Load1
		} else {
			errs = append(errs, err.Error())
		}
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil && mi.MemAvailable != nil {
			hr.MemTotal, hr.MemAvail = *mi.MemTotal*1024, *mi.MemAvailable*1024
		} else if err != nil {
			errs = append(errs, err.Error())
		}
		if p, err := fs.Self(); err == nil {
			if ps, err := p.Stat(); err == nil {
				hr.ProcessRSS = uint64(ps.ResidentMemory())
			}
		}
	} else {
		errs = append(errs, err.Error())
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		b := make([]byte, 0, len(u.Release))
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		hr.Kernel = string(b)
	}
	hr.SampleError = strings.Join(errs, "; ")
	return hr
}

// peerRTTs times a TCP connect to each other member's client API, in parallel, 1 s each.
func (n *Node) peerRTTs(ctx context.Context) []PeerReport {
	st, err := n.localState()
	if err != nil {
		return nil
	}
	var out []PeerReport
	for _, id := range st.NodeIDs() {
		if id != n.cfg.ID {
			out = append(out, PeerReport{ID: id, Addr: st.Nodes[id].ClientAddr})
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func(p *PeerReport) {
			defer wg.Done()
			var d net.Dialer
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			t0 := time.Now()
			c, err := d.DialContext(cctx, "tcp", p.Addr)
			if err != nil {
				p.Error = err.Error()
				return
			}
			p.RTTms = float64(time.Since(t0).Microseconds()) / 1000
			c.Close()
		}(&out[i])
	}
	wg.Wait()
	return out
}

func (n *Node) handleSetWindow(w http.ResponseWriter, r *http.Request) {
	var req WindowRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d <= 0 || d > 7*24*time.Hour {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("duration %q: want a duration in (0, 168h], e.g. 4h", req.Duration), "")
		return
	}
	if req.Start.IsZero() {
		n.fail(w, http.StatusBadRequest, "bad_request", errors.New("no start time"), "give --start like 2026-03-15T02:00Z")
		return
	}
	if n.toLeader(w, r, n.cgroup, &req, nil) {
		return
	}
	win := &cluster.Window{Start: req.Start.UTC(), Duration: d}
	if _, err := n.propose(r.Context(), &cluster.Command{Op: cluster.OpSetWindow, Window: win}); err != nil {
		n.applyFail(w, err)
		return
	}
	n.logf("maintenance window set: %s for %s", win.Start.Format(time.RFC3339), d)
	n.writeJSON(w, http.StatusOK, windowOf(win, time.Now()))
}

func (n *Node) handleClearWindow(w http.ResponseWriter, r *http.Request) {
	if n.toLeader(w, r, n.cgroup, struct{}{}, nil) {
		return
	}
	if _, err := n.propose(r.Context(), &cluster.Command{Op: cluster.OpClearWin}); err != nil {
		n.applyFail(w, err)
		return
	}
	n.logf("maintenance window cleared")
	n.writeJSON(w, http.StatusOK, struct{}{})
}

func (n *Node) handleNodeStop(w http.ResponseWriter, r *http.Request) {
	var req NodeStopRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if req.Node != n.cfg.ID {
		st, err := n.localState()
		if err != nil {
			n.fail(w, http.StatusInternalServerError, "internal", err, "")
			return
		}
		m := st.Nodes[req.Node]
		if m == nil {
			n.fail(w, http.StatusNotFound, "bad_request", fmt.Errorf("no node %q in cluster %q (members: %s)", req.Node, st.Name, strings.Join(st.NodeIDs(), ", ")), "cfs admin node-list shows the members")
			return
		}
		if r.Header.Get(forwardedHeader) != "" {
			n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("%s was asked to stop %s", n.cfg.ID, req.Node), "")
			return
		}
		n.forward(w, r, m.ClientAddr, req.Node, &req)
		return
	}
	// Stop the node: its supervisor when it is our parent (it stops the dataplane and
	// this process cleanly and does not restart them), else this process alone.
	resp := &NodeStopResponse{Node: n.cfg.ID, Stopped: "control", Pid: os.Getpid()}
	if pids, err := supervise.ReadPids(PidFile(n.dir)); err == nil && pids["supervisor"] == os.Getppid() && pids["supervisor"] > 1 {
		resp.Stopped, resp.Pid = "supervisor", pids["supervisor"]
	}
	n.logf("node-stop asked by %s: sending SIGTERM to the %s (pid %d)", r.RemoteAddr, resp.Stopped, resp.Pid)
	n.writeJSON(w, http.StatusOK, resp)
	go func() {
		time.Sleep(200 * time.Millisecond) // let the answer leave
		_ = syscall.Kill(resp.Pid, syscall.SIGTERM)
	}()
}
