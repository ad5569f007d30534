package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
)

// Alerts: every control process evaluates the runbook's critical alert rules every
// AlertEvery on what it knows (the rules of tools/prometheus/alerts.yml, on the same
// figures its /metrics exports), and keeps each alert's transitions (pending, firing,
// resolved) in DIR/alerts.jsonl: at most MaxAlertHistory events, the file rewritten from
// memory when it passes MaxAlertFileBytes. Cluster-wide rules (node_down) are answered by
// the node asked; per-node rules (raft_leader_unavailable, flash_usage_critical) by each
// node about itself. An alert is pending while its condition holds for less than its
// "for" (as in Prometheus) and firing after; a firing alert inside a maintenance window is
// held (it does not page).

// Alert evaluation limits.
const (
	AlertEvery        = 5 * time.Second
	MaxAlertHistory   = 1000
	MaxAlertFileBytes = 2 << 20
	MaxAlertLineBytes = 4096
	MaxAlertSince     = 31 * 24 * time.Hour
)

// AlertRules are the rules, as tools/prometheus/alerts.yml holds them (a test checks).
var AlertRules = []AlertRule{
	{Name: "raft_leader_unavailable", Expr: "cfs_raft_groups_leaderless > 0", For: "30s", Severity: "critical",
		Summary: "No leader for a Raft group: check node status, restart a hung node"},
	{Name: "replication_lag_high", Expr: "replication_lag_s3 > 300", For: "1m", Severity: "critical",
		Summary: "Cross-site replication lag over 5 min: check the network, add replication workers"},
	{Name: "metadata_corruption_detected", Expr: "increase(metadata_corruption_detected_total[1h]) > 0", For: "0s", Severity: "critical",
		Summary: "fsck found a metadata inconsistency: start metadata recovery"},
	{Name: "flash_usage_critical", Expr: "cfs_flash_used_bytes / cfs_flash_capacity_bytes > 0.95", For: "1m", Severity: "critical",
		Summary: "Storage over 95%: evict to S3 or scale out"},
	{Name: "node_down", Expr: `max by (node) (cfs_node_state{state="DOWN"}) == 1`, For: "5m", Severity: "critical",
		Summary: "Node offline over 5 min: check hardware and network, recover by hand if needed"},
}

// alertNodeScoped are the rules each node evaluates about itself.
var alertNodeScoped = map[string]bool{"raft_leader_unavailable": true, "flash_usage_critical": true}

// alertSkipped are the rules nothing backs yet: they are listed, never evaluated.
var alertSkipped = []SkippedAlert{
	{Alert: "replication_lag_high", Reason: "not supported yet: no S3 tiering, so no replication_lag_s3"},
	{Alert: "metadata_corruption_detected", Reason: "not supported yet: no metadata fsck (the metadata service is issue 5)"},
}

func ruleFor(name string) time.Duration {
	for _, r := range AlertRules {
		if r.Name == name {
			d, _ := time.ParseDuration(r.For)
			return d
		}
	}
	return 0
}

type alertKey struct{ alert, subject string }

type alertState struct {
	path    string
	mu      sync.Mutex
	active  map[alertKey]*AlertEvent
	history []AlertEvent
	size    int64 // bytes in the file
}

func newAlertState(path string) *alertState {
	return &alertState{path: path, active: map[alertKey]*AlertEvent{}}
}

// ParseAlertHistory reads alert events, one JSON object a line, keeping the last max;
// lines over MaxAlertLineBytes and lines that do not parse are skipped and counted.
func ParseAlertHistory(r io.Reader, max int) (events []AlertEvent, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxAlertLineBytes)
	for {
		if !sc.Scan() {
			if errors.Is(sc.Err(), bufio.ErrTooLong) {
				bad++ // a line over the limit ends the read: what came before it is kept
				return events, bad, nil
			}
			return events, bad, sc.Err()
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e AlertEvent
		if json.Unmarshal(line, &e) != nil || e.Alert == "" || len(e.Alert) > 64 || len(e.Subject) > 256 || len(e.Value) > 1024 {
			bad++
			continue
		}
		events = append(events, e)
		if len(events) > max {
			events = events[len(events)-max:]
		}
	}
}

// load reads the history file's last MaxAlertFileBytes; active alerts are not restored
// (they are re-evaluated within AlertEvery).
func (a *alertState) load() error {
	f, err := os.Open(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > MaxAlertFileBytes {
		if _, err := f.Seek(fi.Size()-MaxAlertFileBytes, io.SeekStart); err != nil {
			return err
		}
	}
	ev, bad, err := ParseAlertHistory(io.LimitReader(f, MaxAlertFileBytes), MaxAlertHistory)
	a.mu.Lock()
	a.history, a.size = ev, fi.Size()
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if bad > 1 { // the first line after a seek is usually cut
		return fmt.Errorf("%d unreadable lines skipped", bad)
	}
	return nil
}

// record appends e to the history (memory and file); a.mu is held.
func (a *alertState) record(e AlertEvent) error {
	a.history = append(a.history, e)
	if len(a.history) > MaxAlertHistory {
		a.history = a.history[len(a.history)-MaxAlertHistory:]
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if a.size+int64(len(b)) > MaxAlertFileBytes {
		var buf bytes.Buffer
		for _, h := range a.history {
			hb, _ := json.Marshal(h)
			buf.Write(hb)
			buf.WriteByte('\n')
		}
		if err := writeFileAtomic(a.path, buf.Bytes()); err != nil {
			return err
		}
		a.size = int64(buf.Len())
		return nil
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		a.size += int64(len(b))
	}
	return err
}

// step moves the alerts to the conditions holding now (key → value shown).
func (a *alertState) step(now time.Time, conds map[alertKey]string, window *cluster.Window) []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	held := window != nil && !now.Before(window.Start) && now.Before(window.Start.Add(window.Duration))
	for k, v := range conds {
		e := a.active[k]
		if e == nil {
			e = &AlertEvent{Alert: k.alert, Subject: k.subject, State: "pending", Since: now, At: now, Value: v}
			if ruleFor(k.alert) == 0 {
				e.State = "firing"
			}
			e.Held = held && e.State == "firing"
			a.active[k] = e
			if err := a.record(*e); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		e.Value = v
		if e.State == "pending" && now.Sub(e.Since) >= ruleFor(k.alert) {
			e.State, e.At, e.Held = "firing", now, held
			if err := a.record(*e); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for k, e := range a.active {
		if _, ok := conds[k]; ok {
			continue
		}
		delete(a.active, k)
		r := *e
		r.State, r.At, r.Held = "resolved", now, false
		if err := a.record(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// alertConditions evaluates the rules on this node's knowledge now.
func (n *Node) alertConditions(ctx context.Context) (map[alertKey]string, *cluster.Window) {
	conds := map[alertKey]string{}
	st, err := n.localState()
	var win *cluster.Window
	if err == nil {
		win = st.Window
		for _, id := range st.NodeIDs() {
			if m := st.Nodes[id]; m.State == cluster.Down {
				conds[alertKey{"node_down", id}] = "DOWN since " + m.Since.UTC().Format(time.RFC3339)
			}
		}
	}
	var leaderless []string
	for _, g := range n.host.Groups() {
		if g.LeaderID == "" {
			leaderless = append(leaderless, strconv.FormatUint(uint64(g.ID), 10))
		}
	}
	if len(leaderless) > 0 {
		shown := leaderless
		if len(shown) > 16 {
			shown = append(shown[:16:16], "…")
		}
		conds[alertKey{"raft_leader_unavailable", n.cfg.ID}] = fmt.Sprintf("%d groups without a leader: %s", len(leaderless), strings.Join(shown, ","))
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	h, err := n.adm.dp.Health(hctx)
	cancel()
	if err == nil && h.CapacityBytes > 0 {
		if u := float64(h.UsedBytes) / float64(h.CapacityBytes); u > 0.95 {
			conds[alertKey{"flash_usage_critical", n.cfg.ID}] = fmt.Sprintf("%.1f%% used", u*100)
		}
	}
	return conds, win
}

func (n *Node) alertLoop(ctx context.Context) {
	t := time.NewTicker(AlertEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		conds, win := n.alertConditions(ctx)
		for _, err := range n.adm.alerts.step(time.Now().UTC(), conds, win) {
			n.logf("alert history %s: %v", n.adm.alerts.path, err)
		}
		n.debugf("control", "alerts: evaluated %d rules, %d conditions hold", len(AlertRules)-len(alertSkipped), len(conds))
	}
}

// ParseSince reads --since: a Go duration or a number of days ("7d"), at most MaxAlertSince.
func ParseSince(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var v int
		v, err = strconv.Atoi(days)
		d = time.Duration(v) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 || d > MaxAlertSince {
		return 0, fmt.Errorf("since %q: want a duration like 1h, 24h or 7d, at most 31d", s)
	}
	return d, nil
}

// localAlerts is this node's evaluation since t; nodeScoped keeps only its own per-node rules.
func (n *Node) localAlerts(since time.Time, nodeScoped bool) *AlertsResponse {
	a := n.adm.alerts
	keep := func(e *AlertEvent) bool { return !nodeScoped || (alertNodeScoped[e.Alert] && e.Subject == n.cfg.ID) }
	out := &AlertsResponse{Node: n.cfg.ID, Since: since, Rules: AlertRules, Skipped: alertSkipped, Active: []AlertEvent{}, History: []AlertEvent{}}
	a.mu.Lock()
	for _, e := range a.active {
		if keep(e) {
			out.Active = append(out.Active, *e)
		}
	}
	for i := range a.history {
		if e := &a.history[i]; !e.At.Before(since) && keep(e) {
			out.History = append(out.History, *e)
		}
	}
	a.mu.Unlock()
	if st, err := n.localState(); err == nil {
		out.Window = windowOf(st.Window, time.Now())
	}
	return out
}

func (n *Node) handleAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sinceS := q.Get("since")
	if sinceS == "" {
		sinceS = "24h"
	}
	d, err := ParseSince(sinceS)
	if err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	since := time.Now().UTC().Add(-d)
	if q.Get("local") == "1" {
		n.writeJSON(w, http.StatusOK, n.localAlerts(since, true))
		return
	}
	out := n.localAlerts(since, false)
	st, err := n.localState()
	if err == nil {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range st.NodeIDs() {
			if id == n.cfg.ID {
				continue
			}
			wg.Add(1)
			go func(id, addr string) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(r.Context(), AdminPeerTimeout)
				defer cancel()
				var o AlertsResponse
				err := n.client.Do(ctx, addr, http.MethodGet, "/v1/admin/alerts?local=1&since="+sinceS, nil, &o)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					out.Skipped = append(out.Skipped, SkippedAlert{Alert: "raft_leader_unavailable,flash_usage_critical", Reason: fmt.Sprintf("%s not evaluated: %v", id, err)})
					return
				}
				keep := func(e AlertEvent) bool { return alertNodeScoped[e.Alert] && e.Subject == id }
				for _, e := range o.Active {
					if keep(e) {
						out.Active = append(out.Active, e)
					}
				}
				for _, e := range o.History {
					if keep(e) {
						out.History = append(out.History, e)
					}
				}
			}(id, st.Nodes[id].ClientAddr)
		}
		wg.Wait()
	}
	sort.Slice(out.Active, func(i, j int) bool { return out.Active[i].Since.Before(out.Active[j].Since) })
	sort.Slice(out.History, func(i, j int) bool { return out.History[i].At.Before(out.History[j].At) })
	n.writeJSON(w, http.StatusOK, out)
}
