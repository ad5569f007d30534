// Package placement computes where data and metadata live from the cluster map alone.
//
// Nothing here is stored per chunk: a stripe hashes to a placement group, and a placement
// group maps to an ordered list of k+m devices by rendezvous (highest-random-weight)
// hashing under a per-node cap, so every node that holds the same Map computes the same
// answer. A membership change yields a new Map with a higher Epoch; the devices a placement
// group keeps are the ones rendezvous hashing still ranks first, so a change moves only
// what it must.
//
// Invariants of Place, for a Map that validates:
//   - the k+m devices are distinct when the map has at least k+m usable devices; with
//     fewer, shards are spread so no device holds more than its fair share;
//   - no node holds more than ceil((k+m)/nodes) of them, where nodes counts the nodes
//     with at least one usable device; losing any one node therefore loses at most
//     ceil((k+m)/nodes) shards, which is ≤ m whenever the cluster has enough nodes
//     (3 nodes with EC 4+2: two shards per node);
//   - the result depends only on the Map's devices, k, m and the placement group.
package placement

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Limits on the map's shape; a map past them is refused by Validate.
const (
	MaxDevices         = 1 << 16
	MaxShardsPerStripe = 64      // k+m
	MaxPGs             = 1 << 20 // placement groups
)

// DeviceState says whether a device may receive new shards.
type DeviceState uint8

const (
	// DeviceUp devices hold and receive shards.
	DeviceUp DeviceState = iota
	// DeviceOut devices are excluded from placement (their node is DOWN, DRAINING or gone).
	DeviceOut
)

// Device is one storage device of the cluster map.
type Device struct {
	ID    string      `json:"id"`   // unique in the map, e.g. "node-1/dev0"
	Node  string      `json:"node"` // the node (failure domain) it lives on
	State DeviceState `json:"state"`
}

// Map is the part of the cluster map placement needs. Maps are values: build a new one
// for every change and give it a higher Epoch.
type Map struct {
	Epoch   uint64   `json:"epoch"`
	K       int      `json:"k"`   // data shards per stripe
	M       int      `json:"m"`   // parity shards per stripe
	PGs     int      `json:"pgs"` // placement groups
	Devices []Device `json:"devices"`
}

// Validate reports the first thing wrong with m, naming the field.
func (m *Map) Validate() error {
	switch {
	case m.K < 1 || m.M < 0 || m.K+m.M > MaxShardsPerStripe:
		return fmt.Errorf("placement: EC %d+%d: want k ≥ 1, m ≥ 0, k+m ≤ %d", m.K, m.M, MaxShardsPerStripe)
	case m.PGs < 1 || m.PGs > MaxPGs:
		return fmt.Errorf("placement: %d placement groups: want 1..%d", m.PGs, MaxPGs)
	case len(m.Devices) > MaxDevices:
		return fmt.Errorf("placement: %d devices: at most %d", len(m.Devices), MaxDevices)
	}
	seen := make(map[string]bool, len(m.Devices))
	for _, d := range m.Devices {
		if d.ID == "" || d.Node == "" {
			return fmt.Errorf("placement: device %q on node %q: id and node must be set", d.ID, d.Node)
		}
		if seen[d.ID] {
			return fmt.Errorf("placement: device %q listed twice", d.ID)
		}
		seen[d.ID] = true
	}
	return nil
}

// ErrNotEnoughDevices means the map has fewer usable devices (or nodes) than a stripe needs.
var ErrNotEnoughDevices = errors.New("placement: not enough usable devices for a stripe")

// score is the rendezvous weight of device id for placement group pg. It must be the same
// on every node, so it is computed with a fixed-key hash of our own (FNV-1a, then a
// 64-bit finaliser) rather than maphash, whose seed differs per process.
func score(pg uint32, id string) uint64 {
	h := uint64(14695981039346656037)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], pg)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	// splitmix64 finaliser: FNV's low bits are weak for short keys.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// PG returns the placement group of a stripe of object ino.
func (m *Map) PG(ino, stripe uint64) uint32 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], ino)
	binary.LittleEndian.PutUint64(b[8:], stripe)
	return uint32(score(0, string(b[:])) % uint64(m.PGs))
}

// Place returns the k+m devices of placement group pg, in shard order (data shards first).
func (m *Map) Place(pg uint32) ([]Device, error) {
	n := m.K + m.M
	type cand struct {
		d Device
		s uint64
	}
	cands := make([]cand, 0, len(m.Devices))
	nodes := map[string]bool{}
	for _, d := range m.Devices {
		if d.State != DeviceUp {
			continue
		}
		cands = append(cands, cand{d, score(pg, d.ID)})
		nodes[d.Node] = true
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: the map (epoch %d) has no device up", ErrNotEnoughDevices, m.Epoch)
	}
	perNode := (n + len(nodes) - 1) / len(nodes)
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].s != cands[j].s {
			return cands[i].s > cands[j].s
		}
		return cands[i].d.ID < cands[j].d.ID
	})
	// Each pass over the ranking takes every device at most once more; a device holds
	// several shards of one stripe only when the map has fewer devices than shards.
	out := make([]Device, 0, n)
	used := make(map[string]int, len(nodes))
	for pass := 0; pass < n; pass++ {
		took := false
		for _, c := range cands {
			if used[c.d.Node] >= perNode || deviceUses(out, c.d.ID) > pass {
				continue
			}
			used[c.d.Node]++
			out = append(out, c.d)
			took = true
			if len(out) == n {
				return out, nil
			}
		}
		if !took {
			break
		}
	}
	// Devices are concentrated on few nodes: the cap cannot be met.
	return nil, fmt.Errorf("%w: EC %d+%d with at most %d per node over %d nodes (epoch %d)", ErrNotEnoughDevices, m.K, m.M, perNode, len(nodes), m.Epoch)
}

func deviceUses(out []Device, id string) int {
	n := 0
	for _, d := range out {
		if d.ID == id {
			n++
		}
	}
	return n
}
