package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/claudefs/claudefs/dataplane/sidecar"
)

// Configuration keys. The dataplane's keys (dpconfig's table: ranges, live or restart)
// are persisted in the cluster group and pushed to every node's dataplane over its
// sidecar channel at once, and again whenever a dataplane restarts (configLoop). Control
// keys are persisted and reported. Keys the runbook tunes that nothing here backs yet are
// refused as not supported, naming why.

// controlKeys are the control process's own keys: canonical value check and what is in
// force on a node.
var controlKeys = map[string]struct {
	check   func(string) (string, error)
	inForce func(*Node) string
	help    string
}{
	"raft.write_combining": {
		check: func(v string) (string, error) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return "", fmt.Errorf("bad value %q for raft.write_combining: want true or false", v)
			}
			return strconv.FormatBool(b), nil
		},
		inForce: func(n *Node) string { return strconv.FormatBool(n.cfg.WriteCombining) },
		help:    "combine all Raft groups' log appends into shared durable writes; a node reads it from its node.json at start",
	},
	InodeLimitKey: {
		check: func(v string) (string, error) {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n < minInodeLimit || n > maxInodeLimit {
				return "", fmt.Errorf("bad value %q for %s: want a count of inodes in %d..%d (default %d)", v, InodeLimitKey, minInodeLimit, uint64(maxInodeLimit), meta.DefaultInodeLimit)
			}
			return strconv.FormatUint(n, 10), nil
		},
		inForce: func(n *Node) string {
			st, err := n.localState()
			if err != nil {
				return ""
			}
			return strconv.FormatUint(InodeLimit(st.Config), 10)
		},
		help: "the most inodes the file system holds; creates past it fail with ENOSPC (each shard learns the others' counts every 10 s, so the limit may be overshot by that round's creates)",
	},
}

// Bounds of metadata.inode_limit.
const (
	minInodeLimit = 1024
	maxInodeLimit = 1 << 40
)

// unsupportedKeys are runbook keys with nothing behind them yet.
var unsupportedKeys = map[string]string{
	"dedupe.mode":           "there is no deduplication in this build yet",
	"dedupe.min_file_size":  "there is no deduplication in this build yet",
	"compression.level":     "there is no compression in this build yet",
	"transport.enable_rdma": "there is no RDMA transport in this build (TCP only)",
}

// errNotSupported marks a key nothing backs yet.
var errNotSupported = errors.New("not supported yet")

// CheckConfig validates key=value and returns the canonical value and the key's scope
// ("dataplane" or "control").
func CheckConfig(key, value string) (canon, scope string, err error) {
	if why, ok := unsupportedKeys[key]; ok {
		return "", "", fmt.Errorf("%w: %s (%s)", errNotSupported, key, why)
	}
	if ck, ok := controlKeys[key]; ok {
		canon, err := ck.check(value)
		return canon, "control", err
	}
	canon, err = dpconfig.Check(key, value)
	if err != nil {
		return "", "", err
	}
	return canon, "dataplane", nil
}

func (n *Node) handleConfigSet(w http.ResponseWriter, r *http.Request) {
	var req ConfigSetRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	canon, scope, err := CheckConfig(req.Key, req.Value)
	switch {
	case errors.Is(err, errNotSupported):
		n.fail(w, http.StatusBadRequest, "not_supported", err, "")
		return
	case errors.Is(err, dpconfig.ErrUnknownKey):
		n.fail(w, http.StatusBadRequest, "bad_key", err, "cfs admin config get lists the keys")
		return
	case err != nil:
		n.fail(w, http.StatusBadRequest, "bad_value", err, "")
		return
	}
	if n.toLeader(w, r, n.cgroup, &req, nil) {
		return
	}
	if _, err := n.propose(r.Context(), &cluster.Command{Op: cluster.OpSetConfig, Key: req.Key, Value: canon}); err != nil {
		n.applyFail(w, err)
		return
	}
	n.logf("config %s = %s persisted in the cluster group", req.Key, canon)
	resp := &ConfigSetResponse{Key: req.Key, Value: canon, Persisted: true, Scope: scope}
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	ids := st.NodeIDs()
	resp.Nodes = make([]NodeConfigResult, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func(res *NodeConfigResult, id, addr string) {
			defer wg.Done()
			res.Node = id
			if id == n.cfg.ID {
				*res = n.applyLocal(r.Context(), req.Key, canon)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), AdminPeerTimeout)
			defer cancel()
			if err := n.client.Do(ctx, addr, http.MethodPost, "/v1/admin/local/config", &ConfigSetRequest{Key: req.Key, Value: canon}, res); err != nil {
				res.Node, res.Error = id, err.Error()+" (the node applies the persisted value when it is back)"
			}
		}(&resp.Nodes[i], id, st.Nodes[id].ClientAddr)
	}
	wg.Wait()
	n.writeJSON(w, http.StatusOK, resp)
}

// applyLocal puts key=value in force on this node.
func (n *Node) applyLocal(ctx context.Context, key, value string) NodeConfigResult {
	res := NodeConfigResult{Node: n.cfg.ID}
	if ck, ok := controlKeys[key]; ok {
		res.InForce = ck.inForce(n)
		res.Applied = res.InForce == value
		res.RestartRequired = !res.Applied
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sr, err := n.adm.dp.ConfigSet(ctx, key, value)
	if err != nil {
		res.Error = fmt.Sprintf("dataplane of %s: %v", n.cfg.ID, err)
		return res
	}
	res.Applied, res.RestartRequired, res.InForce = sr.Applied, sr.RestartRequired, sr.Value
	return res
}

func (n *Node) handleLocalConfigSet(w http.ResponseWriter, r *http.Request) {
	var req ConfigSetRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	canon, _, err := CheckConfig(req.Key, req.Value)
	if err != nil {
		n.fail(w, http.StatusBadRequest, "bad_value", err, "")
		return
	}
	n.writeJSON(w, http.StatusOK, n.applyLocal(r.Context(), req.Key, canon))
}

// localConfig is this node's dataplane keys (one key, or all), control keys added.
func (n *Node) localConfig(ctx context.Context, key string) ([]sidecar.ConfigValue, error) {
	if ck, ok := controlKeys[key]; ok || key == "" {
		var out []sidecar.ConfigValue
		if key != "" {
			return []sidecar.ConfigValue{{Key: key, Value: ck.inForce(n), Range: "true or false", Default: "false", Help: ck.help}}, nil
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		vals, err := n.adm.dp.ConfigGet(ctx)
		if err != nil {
			return nil, fmt.Errorf("dataplane of %s: %w", n.cfg.ID, err)
		}
		out = append(out, vals...)
		for k, ck := range controlKeys {
			out = append(out, sidecar.ConfigValue{Key: k, Value: ck.inForce(n), Range: "true or false", Default: "false", Help: ck.help})
		}
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := n.adm.dp.ConfigGetKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("dataplane of %s: %w", n.cfg.ID, err)
	}
	return []sidecar.ConfigValue{v}, nil
}

func (n *Node) handleLocalConfigGet(w http.ResponseWriter, r *http.Request) {
	vals, err := n.localConfig(r.Context(), r.URL.Query().Get("key"))
	if err != nil {
		code := "unavailable"
		if errors.Is(err, dpconfig.ErrUnknownKey) {
			code = "bad_key"
		}
		n.fail(w, http.StatusServiceUnavailable, code, err, "")
		return
	}
	n.writeJSON(w, http.StatusOK, vals)
}

func (n *Node) handleConfigGet(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key != "" {
		if why, ok := unsupportedKeys[key]; ok {
			n.fail(w, http.StatusBadRequest, "not_supported", fmt.Errorf("%w: %s (%s)", errNotSupported, key, why), "")
			return
		}
		if _, ok := controlKeys[key]; !ok {
			if _, err := dpconfig.Lookup(key); err != nil {
				n.fail(w, http.StatusBadRequest, "bad_key", err, "cfs admin config get lists the keys")
				return
			}
		}
	}
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	out := &AdminConfig{Cluster: map[string]string{}}
	for k, v := range st.Config {
		if key == "" || k == key {
			out.Cluster[k] = v
		}
	}
	ids := st.NodeIDs()
	out.Nodes = make([]NodeConfig, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func(nc *NodeConfig, id, addr string) {
			defer wg.Done()
			nc.Node = id
			var err error
			if id == n.cfg.ID {
				nc.Values, err = n.localConfig(r.Context(), key)
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), AdminPeerTimeout)
				defer cancel()
				path := "/v1/admin/local/config"
				if key != "" {
					path += "?key=" + url.QueryEscape(key)
				}
				err = n.client.Do(ctx, addr, http.MethodGet, path, nil, &nc.Values)
			}
			if err != nil {
				nc.Error = err.Error()
			}
		}(&out.Nodes[i], id, st.Nodes[id].ClientAddr)
	}
	wg.Wait()
	n.writeJSON(w, http.StatusOK, out)
}

// configLoop keeps this node's dataplane's live keys equal to the cluster group's
// configuration: after each cluster change, and every 5 s to catch a restarted dataplane
// (it starts from its flags).
func (n *Node) configLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	applied := map[string]string{}
	var started time.Time
	lastErr := ""
	for {
		if st, err := n.localState(); err == nil && len(st.Config) > 0 {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			h, err := n.adm.dp.Health(hctx)
			cancel()
			if err == nil {
				if !h.StartedAt.Equal(started) {
					applied, started = map[string]string{}, h.StartedAt
				}
				for k, v := range st.Config {
					key, err := dpconfig.Lookup(k)
					if err != nil || !key.Live || applied[k] == v {
						continue
					}
					res := n.applyLocal(ctx, k, v)
					if res.Error != "" {
						if res.Error != lastErr {
							n.logf("config %s = %s not applied to the dataplane: %s", k, v, res.Error)
						}
						lastErr = res.Error
						continue
					}
					applied[k] = v
					n.debugf("control", "config %s = %s in force on the dataplane (%s)", k, v, res.InForce)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.csm.Changed():
		}
	}
}
