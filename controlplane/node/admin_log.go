package node

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Log levels by module, changed at run time by `cfs admin set-log-level` and kept until
// the process restarts (the runbook's "temporary" debug logging). The modules:
//
//	control  the control process's own messages: at DEBUG every admin request, each
//	         alert evaluation and each configuration push to the dataplane is logged
//	raft     the Raft library of every group on the node (hashicorp/raft's own levels;
//	         default WARN)
//
// The runbook's Rust-style names are accepted: claudefs::raft is raft, claudefs::control
// (and claudefs::metadata, whose service runs in the control process) is control.

// LogLevels are the levels set-log-level takes.
var LogLevels = []string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}

// LogModules are the modules set-log-level takes.
var LogModules = []string{"control", "raft"}

var levelRank = map[string]int{"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}

type logLevels struct {
	mu sync.Mutex
	m  map[string]string
}

func newLogLevels() *logLevels {
	return &logLevels{m: map[string]string{"control": "INFO", "raft": "WARN"}}
}

func (l *logLevels) all() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.m))
	for k, v := range l.m {
		out[k] = v
	}
	return out
}

func (l *logLevels) enabled(module, level string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return levelRank[level] >= levelRank[l.m[module]]
}

// NormalizeLogModule maps a module name as the runbook writes it to ours.
func NormalizeLogModule(m string) (string, error) {
	m = strings.ToLower(strings.TrimSpace(m))
	m = strings.TrimPrefix(m, "claudefs::")
	switch m {
	case "control", "metadata", "admin":
		return "control", nil
	case "raft":
		return "raft", nil
	}
	return "", fmt.Errorf("unknown log module %q: the modules are %s", m, strings.Join(LogModules, ", "))
}

// NormalizeLogLevel checks a level name.
func NormalizeLogLevel(l string) (string, error) {
	l = strings.ToUpper(strings.TrimSpace(l))
	if l == "WARNING" {
		l = "WARN"
	}
	if _, ok := levelRank[l]; !ok {
		return "", fmt.Errorf("unknown log level %q: want one of %s", l, strings.Join(LogLevels, ", "))
	}
	return l, nil
}

// debugf logs when module logs at DEBUG.
func (n *Node) debugf(module, format string, args ...any) {
	if n.adm != nil && n.adm.levels.enabled(module, "DEBUG") {
		n.logf("DEBUG "+format, args...)
	}
}

// setLogLevel sets module's level on this node.
func (n *Node) setLogLevel(module, level string) error {
	if module == "raft" {
		if err := n.host.SetRaftLogLevel(level); err != nil {
			return err
		}
	}
	n.adm.levels.mu.Lock()
	old := n.adm.levels.m[module]
	n.adm.levels.m[module] = level
	n.adm.levels.mu.Unlock()
	n.logf("log level of %s: %s → %s (until this process restarts)", module, old, level)
	return nil
}

func checkLogRequest(req *LogLevelRequest) error {
	var err error
	if req.Module, err = NormalizeLogModule(req.Module); err != nil {
		return err
	}
	req.Level, err = NormalizeLogLevel(req.Level)
	return err
}

func (n *Node) handleLocalLogLevel(w http.ResponseWriter, r *http.Request) {
	var req LogLevelRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if err := checkLogRequest(&req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if err := n.setLogLevel(req.Module, req.Level); err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	n.writeJSON(w, http.StatusOK, &NodeLogLevel{Node: n.cfg.ID, Module: req.Module, Level: req.Level})
}

// handleLogLevel sets a level on every member (or req.Node), in parallel.
func (n *Node) handleLogLevel(w http.ResponseWriter, r *http.Request) {
	var req LogLevelRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if err := checkLogRequest(&req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "modules: "+strings.Join(LogModules, ", ")+"; levels: "+strings.Join(LogLevels, ", "))
		return
	}
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	var ids []string
	for _, id := range st.NodeIDs() {
		if req.Node == "" || req.Node == id {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		n.fail(w, http.StatusNotFound, "bad_request", fmt.Errorf("no node %q (members: %s)", req.Node, strings.Join(st.NodeIDs(), ", ")), "")
		return
	}
	out := &LogLevelResponse{Nodes: make([]NodeLogLevel, len(ids))}
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func(res *NodeLogLevel, id, addr string) {
			defer wg.Done()
			*res = NodeLogLevel{Node: id, Module: req.Module, Level: req.Level}
			if id == n.cfg.ID {
				if err := n.setLogLevel(req.Module, req.Level); err != nil {
					res.Error = err.Error()
				}
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), AdminPeerTimeout)
			defer cancel()
			one := LogLevelRequest{Module: req.Module, Level: req.Level}
			if err := n.client.Do(ctx, addr, http.MethodPost, "/v1/admin/local/log-level", &one, res); err != nil {
				res.Error = err.Error()
			}
		}(&out.Nodes[i], id, st.Nodes[id].ClientAddr)
	}
	wg.Wait()
	n.writeJSON(w, http.StatusOK, out)
}
