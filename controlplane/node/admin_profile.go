package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/profiling"
)

// Profiling routes of the admin API (registered by adminRoutes):
//
//	GET /v1/admin/profile?duration=30s&process=dataplane|control[&node=N]   ProfileResponse
//	GET /v1/admin/processes[?interval=1s][&node=N]                          ProcessesResponse
//
// With node=N another node answers (forwarded once: a forwarded request naming a third
// node is refused). A profile takes its duration (1 s..120 s) before it answers.

// ProfileResponse is GET /v1/admin/profile: a CPU profile in pprof's format (gzipped
// protobuf, base64 in JSON). The dataplane's samples carry the labels core, role and op
// (dataplane/labels.go).
type ProfileResponse struct {
	Node       string `json:"node"`
	Process    string `json:"process"` // dataplane, control
	PID        int    `json:"pid"`
	DurationNs int64  `json:"duration_ns"`
	Pprof      []byte `json:"pprof"`
}

// The processes a profile can be taken of.
const (
	ProcessDataplane = "dataplane"
	ProcessControl   = "control"
)

// profileSlack is how long past its duration a profile may take to come back.
const profileSlack = 15 * time.Second

func (n *Node) profileRoutes(h func(string, http.HandlerFunc)) {
	h("GET /v1/admin/profile", n.handleProfile)
	h("GET /v1/admin/processes", n.handleProcesses)
}

// forwardTo answers r from node id (another member) when the query names one; it
// reports whether it did (the answer, or an error, has been written).
func (n *Node) forwardTo(w http.ResponseWriter, r *http.Request, id string, timeout time.Duration) bool {
	if id == "" || id == n.cfg.ID {
		return false
	}
	if r.Header.Get(forwardedHeader) != "" {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("%s was asked (by a forward) to answer for %s", n.cfg.ID, id), "")
		return true
	}
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return true
	}
	m := st.Nodes[id]
	if m == nil {
		n.fail(w, http.StatusNotFound, "bad_request", fmt.Errorf("no node %q in cluster %q (members: %s)", id, st.Name, strings.Join(st.NodeIDs(), ", ")), "cfs admin node-list shows the members")
		return true
	}
	// A client whose only bound is the request's context (the shared one gives up sooner).
	long := *n.client.HTTP
	long.Timeout = 0
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+m.ClientAddr+r.URL.RequestURI(), nil)
	req.Header.Set(forwardedHeader, n.cfg.ID)
	resp, err := long.Do(req)
	if err != nil {
		n.fail(w, http.StatusBadGateway, "unavailable", fmt.Errorf("asking %s at %s: %w", id, m.ClientAddr, err), "is the node up? cfs admin node-status "+id)
		return true
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = copyLimited(w, resp.Body, MaxResponseBytes)
	return true
}

// ParseProfileDuration reads a profile's duration ("" is 30 s), 1 s..120 s.
func ParseProfileDuration(s string) (time.Duration, error) {
	if s == "" {
		return 30 * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %v (e.g. 30s)", s, err)
	}
	if d < sidecar.MinProfile || d > sidecar.MaxProfile {
		return 0, fmt.Errorf("duration %v out of range %v..%v", d, sidecar.MinProfile, sidecar.MaxProfile)
	}
	return d, nil
}

func (n *Node) handleProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d, err := ParseProfileDuration(q.Get("duration"))
	if err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	process := q.Get("process")
	if process == "" {
		process = ProcessDataplane
	}
	if process != ProcessDataplane && process != ProcessControl {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("process %q: want dataplane or control", process), "")
		return
	}
	if n.forwardTo(w, r, q.Get("node"), d+profileSlack) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d+profileSlack)
	defer cancel()
	resp := &ProfileResponse{Node: n.cfg.ID, Process: process, DurationNs: int64(d)}
	n.logf("admin: a %s CPU profile of the %s for %s, asked by %s", d, process, n.cfg.ID, r.RemoteAddr)
	if process == ProcessControl {
		resp.PID = os.Getpid()
		resp.Pprof, err = profiling.CPU(ctx, d, sidecar.MaxProfileBytes)
		if errors.Is(err, profiling.ErrBusy) {
			n.fail(w, http.StatusConflict, "busy", fmt.Errorf("%s: a CPU profile of the control process is already being taken", n.cfg.ID), "wait for it to finish")
			return
		}
	} else {
		// Its own sidecar connection: the shared client serves metrics and config
		// meanwhile.
		sc := sidecar.NewClient(DataplaneSocket(n.dir), sidecar.ClientOptions{Timeout: 10 * time.Second})
		defer sc.Close()
		var h sidecar.Health
		if h, err = sc.Health(ctx); err == nil {
			resp.PID = h.PID
			var p sidecar.CPUProfile
			p, err = sc.ProfileCPU(ctx, d)
			resp.Pprof = p.Pprof
		}
		if errors.Is(err, sidecar.ErrBusy) {
			n.fail(w, http.StatusConflict, "busy", fmt.Errorf("%s's dataplane: %w", n.cfg.ID, err), "wait for the running profile to finish")
			return
		}
		if err != nil {
			n.fail(w, http.StatusServiceUnavailable, "unavailable", fmt.Errorf("%s's dataplane: %w", n.cfg.ID, err), "is the dataplane running? cfs admin node-status "+n.cfg.ID)
			return
		}
	}
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", fmt.Errorf("%s: %w", n.cfg.ID, err), "")
		return
	}
	n.writeJSON(w, http.StatusOK, resp)
}
