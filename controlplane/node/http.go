package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/claudefs/claudefs/controlplane/multiraft"
	"github.com/claudefs/claudefs/controlplane/pki"
)

// MaxRequestBytes bounds a client API request body.
const MaxRequestBytes = 1 << 20

// forwardedHeader marks a request one node forwarded to another; it is not forwarded again.
const forwardedHeader = "X-Cfs-Forwarded"

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", n.handleStatus)
	mux.HandleFunc("POST /v1/cluster-token", n.handleToken)
	mux.HandleFunc("POST /v1/join", n.handleJoin)
	mux.HandleFunc("POST /v1/kv/{group}", n.handleKV)
	n.adminRoutes(mux) // admin.go: /v1/admin/…, /metrics
	return n.requireCert(mux)
}

func (n *Node) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (n *Node) fail(w http.ResponseWriter, status int, code string, err error, hint string) {
	n.writeJSON(w, status, &ErrorResponse{Error: err.Error(), Code: code, Node: n.cfg.ID, Hint: hint})
}

// decode reads a JSON body of at most MaxRequestBytes into v, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	alive := n.gossip.Alive()
	s := &Status{NodeID: n.cfg.ID, ClusterName: st.Name, Epoch: st.Epoch, ShardsReady: len(st.ShardMap) > 0,
		Uptime: time.Since(n.start).Seconds(), Config: st.Config}
	if id, _ := n.cgroup.Leader(); id != "" {
		s.Leader = id
	}
	for _, id := range st.NodeIDs() {
		m := st.Nodes[id]
		_, up := alive[id]
		s.Nodes = append(s.Nodes, NodeStatus{ID: id, State: m.State, Since: m.Since, Alive: up, RaftAddr: m.RaftAddr,
			GossipAddr: m.GossipAddr, ClientAddr: m.ClientAddr, DataplaneAddr: m.DataplaneAddr})
	}
	groups := n.host.Groups()
	sort.Slice(groups, func(i, j int) bool { return groups[i].ID < groups[j].ID })
	for _, g := range groups {
		s.Groups.Total++
		if g.LeaderID != "" {
			s.Groups.WithLeader++
		}
		if g.State == "Leader" {
			s.Groups.Leading++
		}
		if r.URL.Query().Get("groups") == "1" {
			s.GroupList = append(s.GroupList, GroupStatus{ID: g.ID, State: g.State, Leader: g.LeaderID, LastIndex: g.LastIndex, AppliedIdx: g.AppliedIndex})
		}
	}
	n.writeJSON(w, http.StatusOK, s)
}

// toLeader forwards r to the client API of group's leader and reports whether it did (or
// answered an error). It returns false when this node is the leader and should serve.
func (n *Node) toLeader(w http.ResponseWriter, r *http.Request, g *multiraft.Group, body any, out any) bool {
	if isLeader(g) {
		return false
	}
	id, _ := g.Leader()
	if id == "" {
		n.fail(w, http.StatusServiceUnavailable, "no_leader", fmt.Errorf("group %d has no leader right now", g.ID()), "an election is under way; retry in a second")
		return true
	}
	if r.Header.Get(forwardedHeader) != "" {
		n.fail(w, http.StatusServiceUnavailable, "not_leader", fmt.Errorf("not the leader of group %d (the leader is %s)", g.ID(), id), "retry")
		return true
	}
	st, err := n.localState()
	var addr string
	if err == nil && st.Nodes[id] != nil {
		addr = st.Nodes[id].ClientAddr
	}
	if addr == "" {
		n.fail(w, http.StatusServiceUnavailable, "no_leader", fmt.Errorf("the leader %s of group %d has no known client address", id, g.ID()), "retry")
		return true
	}
	n.forward(w, r, addr, id, body)
	return true
}

func (n *Node) handleToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if n.toLeader(w, r, n.cgroup, &req, nil) {
		return
	}
	secret, err := newToken()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	tok := &cluster.Token{Hash: cluster.HashToken(secret), NodeType: req.NodeType}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil || ttl <= 0 || ttl > cluster.MaxTokenTTL {
			n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("ttl %q: want a duration in (0, %s]", req.TTL, cluster.MaxTokenTTL), "")
			return
		}
		tok.Expires = time.Now().UTC().Add(ttl)
	}
	if _, err := n.propose(r.Context(), &cluster.Command{Op: cluster.OpAddToken, Token: tok}); err != nil {
		n.applyFail(w, err)
		return
	}
	exp := tok.Expires
	if exp.IsZero() {
		exp = time.Now().UTC().Add(cluster.TokenTTL)
	}
	n.writeJSON(w, http.StatusOK, &TokenResponse{Token: JoinToken(secret, pki.Pin(n.tls.ca.Cert)), Expires: exp})
}

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	if n.toLeader(w, r, n.cgroup, &req, nil) {
		return
	}
	if req.Devices < 0 || req.Devices > 64 {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("devices %d: want 0..64", req.Devices), "")
		return
	}
	// The CSR is checked before the token is spent on it.
	if _, err := pki.ParseCSR([]byte(req.CSR)); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("the join request's csr: %w", err), "join with a cfs that sends a certificate request")
		return
	}
	res, err := n.propose(r.Context(), &cluster.Command{Op: cluster.OpJoin, Secret: req.Token, Node: &cluster.Node{
		RaftAddr: req.RaftAddr, GossipAddr: req.GossipAddr, ClientAddr: req.ClientAddr, DataplaneAddr: req.DataplaneAddr, Devices: make([]string, req.Devices)}})
	if err != nil {
		n.applyFail(w, err)
		return
	}
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	cert, err := n.issueNodeCert(req.CSR, res.NodeID, &req)
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", fmt.Errorf("issuing the certificate of %s: %w", res.NodeID, err), "")
		return
	}
	caKey, err := pki.KeyPEM(n.tls.ca.Key)
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	resp := &JoinResponse{NodeID: res.NodeID, ClusterName: st.Name, CACert: string(pki.CertPEM(n.tls.ca.Cert)), CAKey: string(caKey), Cert: cert}
	for _, id := range st.NodeIDs() {
		if id != res.NodeID {
			resp.Seeds = append(resp.Seeds, st.Nodes[id].GossipAddr)
		}
	}
	n.logf("%s joined from %s", res.NodeID, req.ClientAddr)
	n.writeJSON(w, http.StatusOK, resp)
}

// applyFail answers an error of propose or a group Apply.
func (n *Node) applyFail(w http.ResponseWriter, err error) {
	var refused *refusedError
	var nl *multiraft.NotLeaderError
	switch {
	case errors.As(err, &refused):
		code := "bad_request"
		if errors.Is(err, cluster.ErrTokenUsed) || strings.Contains(refused.msg, "token") {
			code = "token"
		}
		n.fail(w, http.StatusBadRequest, code, err, "")
	case errors.As(err, &nl):
		n.fail(w, http.StatusServiceUnavailable, "not_leader", err, "leadership moved; retry")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		n.fail(w, http.StatusGatewayTimeout, "unavailable", err, "the group did not commit in time (is a majority of its replicas up?); retry")
	default:
		n.fail(w, http.StatusServiceUnavailable, "unavailable", err, "retry")
	}
}

func (n *Node) handleKV(w http.ResponseWriter, r *http.Request) {
	gid, err := strconv.ParseUint(r.PathValue("group"), 10, 32)
	if err != nil || gid == uint64(ClusterGroup) {
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("group %q: want a metadata shard number ≥ 1", r.PathValue("group")), "")
		return
	}
	var req KVRequest
	if err := decode(r, &req); err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	g := n.group(uint32(gid))
	if g == nil {
		n.noShardHere(w, r, uint32(gid), &req)
		return
	}
	if n.toLeader(w, r, g, &req, nil) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp := &KVResponse{Node: n.cfg.ID}
	key := []byte(req.Key)
	if req.Op == "get" {
		q, err := kvsm.EncodeGet(key)
		if err == nil {
			var out []byte
			out, err = g.Query(ctx, q)
			if err == nil {
				var it kvsm.Item
				if it, err = kvsm.DecodeGet(out); err == nil {
					resp.Found, resp.Value, resp.OK = it.Found, string(it.Value), true
				}
			}
		}
		if err != nil {
			n.applyFail(w, err)
			return
		}
		n.writeJSON(w, http.StatusOK, resp)
		return
	}
	var op kvsm.Op
	switch req.Op {
	case "put":
		op = kvsm.Put(key, []byte(req.Value))
	case "delete":
		op = kvsm.Delete(key)
	case "cas":
		var old []byte
		if req.Old != "" {
			old = []byte(req.Old)
		}
		op = kvsm.CASValue(key, old, []byte(req.Value))
	default:
		n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("op %q: want get, put, delete or cas", req.Op), "")
		return
	}
	cmd, err := kvsm.EncodeCommand(op)
	if err != nil {
		n.fail(w, http.StatusBadRequest, "bad_request", err, "")
		return
	}
	start := time.Now()
	out, err := g.Apply(ctx, cmd)
	if err != nil {
		n.applyFail(w, err)
		return
	}
	n.observeApply(g.ID(), start)
	res, err := kvsm.DecodeResult(out)
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	if res.Refused != "" {
		n.fail(w, http.StatusBadRequest, "bad_request", errors.New(res.Refused), "")
		return
	}
	resp.OK = res.OK
	resp.Found = len(res.Existed) > 0 && res.Existed[0]
	n.writeJSON(w, http.StatusOK, resp)
}

// noShardHere answers a request for a shard this node does not run: "starting" when the
// shard is placed here but its group is not up yet, else forwarded to a node holding it.
func (n *Node) noShardHere(w http.ResponseWriter, r *http.Request, gid uint32, body any) {
	st, err := n.localState()
	if err != nil {
		n.fail(w, http.StatusInternalServerError, "internal", err, "")
		return
	}
	replicas, ok := st.ShardMap[gid]
	switch {
	case len(st.ShardMap) == 0:
		// Just restarted: this node's copy of the cluster state catches up from
		// the Raft log once the cluster group's leader reaches it.
		n.fail(w, http.StatusServiceUnavailable, "starting", fmt.Errorf("%s does not know the shard map yet", n.cfg.ID), "retry in a second")
		return
	case !ok:
		n.fail(w, http.StatusNotFound, "bad_request", fmt.Errorf("no metadata shard %d (the cluster has %d)", gid, len(st.ShardMap)), "")
		return
	case slices.Contains(replicas, n.cfg.ID):
		n.fail(w, http.StatusServiceUnavailable, "starting", fmt.Errorf("shard %d is still starting on %s", gid, n.cfg.ID), "retry in a second")
		return
	case r.Header.Get(forwardedHeader) != "":
		n.fail(w, http.StatusServiceUnavailable, "not_leader", fmt.Errorf("shard %d has no replica on %s", gid, n.cfg.ID), "retry")
		return
	}
	for _, id := range replicas {
		if m := st.Nodes[id]; m != nil && m.State == cluster.Healthy {
			n.forward(w, r, m.ClientAddr, id, body)
			return
		}
	}
	n.fail(w, http.StatusServiceUnavailable, "unavailable", fmt.Errorf("no healthy node holds shard %d", gid), "retry")
}

// forward sends r (with body) once to the client API at addr (node id) and relays the answer.
// A transport failure after the request may have been sent leaves its outcome unknown:
// it is answered "unavailable", never "not_leader".
func (n *Node) forward(w http.ResponseWriter, r *http.Request, addr, id string, body any) {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, r.Method, "https://"+addr+r.URL.RequestURI(), bytes.NewReader(b))
	req.Header.Set(forwardedHeader, n.cfg.ID)
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.HTTP.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) { // never sent: nothing happened
		n.fail(w, http.StatusServiceUnavailable, "not_leader", fmt.Errorf("%s at %s refused the connection: %w", id, addr, err), "it is down or restarting; retry")
		return
	}
	if err != nil {
		n.fail(w, http.StatusBadGateway, "unavailable", fmt.Errorf("forwarding to %s: %w", id, n.client.explain(addr, err)), "retry")
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, MaxResponseBytes))
}
