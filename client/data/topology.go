package data

import (
	"fmt"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/placement"
)

// Topology is what the data path needs of the cluster map: the placement
// map (devices, k+m, placement groups, epoch) and each node's dataplane
// address.
type Topology struct {
	Map        placement.Map
	Dataplanes map[string]string // node id → dataplane address
}

// TopologyOf derives the data path's topology from the cluster state.
//
// Every device of every member counts as usable, whatever its node's
// health: shards are placed by membership, so a stripe's devices stay the
// same while a node is down (its shards read as missing and are
// reconstructed) instead of moving to devices that never received them.
// Moving data when membership changes is rebalance's job.
func TopologyOf(st *cluster.State) (Topology, error) {
	m := st.PlacementMap()
	for i := range m.Devices {
		m.Devices[i].State = placement.DeviceUp
	}
	if err := m.Validate(); err != nil {
		return Topology{}, err
	}
	if len(m.Devices) == 0 {
		return Topology{}, fmt.Errorf("data: the cluster map has no devices yet")
	}
	t := Topology{Map: m, Dataplanes: map[string]string{}}
	for id, n := range st.Nodes {
		if n.DataplaneAddr != "" {
			t.Dataplanes[id] = n.DataplaneAddr
		}
	}
	return t, nil
}

// place returns the dataplane address of each of the k+m shards of stripe
// s of ino, in shard order.
func (t *Topology) place(ino uint64, s uint64) ([]string, error) {
	devs, err := t.Map.Place(t.Map.PG(ino, s))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(devs))
	for i, d := range devs {
		a, ok := t.Dataplanes[d.Node]
		if !ok {
			return nil, fmt.Errorf("data: node %s (device %s) has no dataplane address in the cluster map", d.Node, d.ID)
		}
		out[i] = a
	}
	return out, nil
}
