package node

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/kvsm"
)

// ClusterGroup is the Raft group id of the cluster group; metadata shards are 1..Shards.
const ClusterGroup uint32 = 0

// stateKey holds the cluster group's whole state (JSON) in the group's key range.
var stateKey = []byte("state")

// clusterSM is the cluster group's kvsm.Applier. The state is small and changes rarely,
// so each command reads it, applies, and writes it back whole: there is no cached copy
// that a snapshot restore could leave stale. Watchers learn of changes through changed.
type clusterSM struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced after every applied command
}

func newClusterSM() *clusterSM { return &clusterSM{changed: make(chan struct{})} }

// applyResult is the cluster group's command result.
type applyResult struct {
	cluster.Result
	Error string `json:"error,omitempty"` // the command was refused (same on every replica)
}

func loadState(r kvsm.Reader) (*cluster.State, error) {
	b, found, err := r.Get(stateKey)
	if err != nil {
		return nil, err
	}
	if !found {
		return cluster.NewState(), nil
	}
	return cluster.UnmarshalState(b)
}

// Apply implements kvsm.Applier.
func (c *clusterSM) Apply(w *kvsm.Writer, _ uint64, cmd []byte) ([]byte, error) {
	defer c.notify()
	refuse := func(err error) ([]byte, error) {
		b, _ := json.Marshal(applyResult{Error: err.Error()})
		return b, nil
	}
	command, err := cluster.DecodeCommand(cmd)
	if err != nil {
		return refuse(err)
	}
	st, err := loadState(w)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster state: %w", err)
	}
	res, err := st.Apply(command)
	if err != nil {
		return refuse(err)
	}
	b, err := st.Marshal()
	if err != nil {
		return nil, err
	}
	if err := w.Set(stateKey, b); err != nil {
		return nil, err
	}
	return json.Marshal(applyResult{Result: *res})
}

// Query implements kvsm.Applier: any query answers the whole state.
func (c *clusterSM) Query(r kvsm.Reader, _ []byte) ([]byte, error) {
	b, found, err := r.Get(stateKey)
	if err != nil || found {
		return b, err
	}
	return cluster.NewState().Marshal()
}

func (c *clusterSM) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
}

// Changed returns a channel closed after the next applied command.
func (c *clusterSM) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
