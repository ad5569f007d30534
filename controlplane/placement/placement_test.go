package placement

import (
	"errors"
	"fmt"
	"testing"
)

func testMap(nodes, devsPerNode, k, m int) *Map {
	mp := &Map{Epoch: 1, K: k, M: m, PGs: 1024}
	for n := 1; n <= nodes; n++ {
		for d := 0; d < devsPerNode; d++ {
			mp.Devices = append(mp.Devices, Device{ID: fmt.Sprintf("node-%d/dev%d", n, d), Node: fmt.Sprintf("node-%d", n)})
		}
	}
	return mp
}

func TestPlaceRespectsNodeCap(t *testing.T) {
	for _, tc := range []struct{ nodes, devs, k, m int }{
		{3, 1, 4, 2}, {3, 4, 4, 2}, {6, 2, 4, 2}, {4, 3, 8, 3}, {1, 6, 4, 2}, {10, 1, 4, 2},
	} {
		mp := testMap(tc.nodes, tc.devs, tc.k, tc.m)
		if err := mp.Validate(); err != nil {
			t.Fatal(err)
		}
		n := tc.k + tc.m
		limit := (n + tc.nodes - 1) / tc.nodes
		for pg := uint32(0); pg < uint32(mp.PGs); pg++ {
			devs, err := mp.Place(pg)
			if err != nil {
				t.Fatalf("%+v pg %d: %v", tc, pg, err)
			}
			if len(devs) != n {
				t.Fatalf("%+v pg %d: %d devices, want %d", tc, pg, len(devs), n)
			}
			perNode, seen := map[string]int{}, map[string]int{}
			devLimit := (n + len(mp.Devices) - 1) / len(mp.Devices)
			for _, d := range devs {
				if seen[d.ID]++; seen[d.ID] > devLimit {
					t.Fatalf("%+v pg %d: device %s holds %d shards, want ≤ %d", tc, pg, d.ID, seen[d.ID], devLimit)
				}
				perNode[d.Node]++
				if perNode[d.Node] > limit {
					t.Fatalf("%+v pg %d: node %s holds %d shards, cap %d", tc, pg, d.Node, perNode[d.Node], limit)
				}
			}
		}
	}
}

func TestPlaceIsDeterministicAndSpread(t *testing.T) {
	a, b := testMap(6, 2, 4, 2), testMap(6, 2, 4, 2)
	// Device order in the map must not matter.
	for i, j := 0, len(b.Devices)-1; i < j; i, j = i+1, j-1 {
		b.Devices[i], b.Devices[j] = b.Devices[j], b.Devices[i]
	}
	uses := map[string]int{}
	for pg := uint32(0); pg < uint32(a.PGs); pg++ {
		x, _ := a.Place(pg)
		y, _ := b.Place(pg)
		for i := range x {
			if x[i].ID != y[i].ID {
				t.Fatalf("pg %d shard %d: %s vs %s depending on device order", pg, i, x[i].ID, y[i].ID)
			}
			uses[x[i].ID]++
		}
	}
	// 1024 PGs × 6 shards over 12 devices: 512 each on average; rendezvous keeps it close.
	for id, n := range uses {
		if n < 400 || n > 624 {
			t.Errorf("device %s holds %d shards, want about 512", id, n)
		}
	}
}

func TestPlaceMovesLittleOnChange(t *testing.T) {
	before := testMap(6, 1, 4, 2)
	after := testMap(6, 1, 4, 2)
	after.Epoch = 2
	after.Devices[5].State = DeviceOut // node-6 goes out
	moved := 0
	for pg := uint32(0); pg < uint32(before.PGs); pg++ {
		x, _ := before.Place(pg)
		y, err := after.Place(pg)
		if err != nil {
			t.Fatal(err)
		}
		kept := map[string]bool{}
		for _, d := range y {
			kept[d.ID] = true
			if d.Node == "node-6" {
				t.Fatalf("pg %d placed on an out device", pg)
			}
		}
		for _, d := range x {
			if !kept[d.ID] {
				moved++
			}
		}
	}
	// Only shards that were on node-6 have to move: about 1024 of 6144.
	if moved > 1024*12/10 {
		t.Fatalf("%d shards moved after one of six devices went out; want about 1024", moved)
	}
}

func TestPlaceNotEnough(t *testing.T) {
	mp := testMap(2, 2, 4, 2)
	for i := range mp.Devices {
		mp.Devices[i].State = DeviceOut
	}
	if _, err := mp.Place(0); !errors.Is(err, ErrNotEnoughDevices) {
		t.Fatalf("got %v, want ErrNotEnoughDevices", err)
	}
}

func TestValidate(t *testing.T) {
	for name, mp := range map[string]*Map{
		"k0":       {K: 0, M: 2, PGs: 1},
		"too wide": {K: 60, M: 5, PGs: 1},
		"no pgs":   {K: 4, M: 2, PGs: 0},
		"dup":      {K: 1, M: 0, PGs: 1, Devices: []Device{{ID: "a", Node: "n"}, {ID: "a", Node: "n"}}},
		"no node":  {K: 1, M: 0, PGs: 1, Devices: []Device{{ID: "a"}}},
		"too many": {K: 1, M: 0, PGs: MaxPGs + 1},
	} {
		if mp.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, mp)
		}
	}
}

func TestPGRange(t *testing.T) {
	mp := testMap(3, 1, 4, 2)
	hits := make([]int, mp.PGs)
	for ino := uint64(0); ino < 100; ino++ {
		for s := uint64(0); s < 100; s++ {
			pg := mp.PG(ino, s)
			if int(pg) >= mp.PGs {
				t.Fatalf("pg %d out of range", pg)
			}
			hits[pg]++
		}
	}
	empty := 0
	for _, h := range hits {
		if h == 0 {
			empty++
		}
	}
	// 10000 stripes over 1024 PGs: e^-9.8 of them empty, so almost none.
	if empty > 5 {
		t.Fatalf("%d of %d placement groups got no stripe", empty, mp.PGs)
	}
}

func TestReplicasEven(t *testing.T) {
	for _, tc := range []struct{ groups, nodes, r int }{{256, 3, 3}, {257, 5, 3}, {100, 7, 3}, {10, 2, 3}, {64, 4, 1}} {
		var nodes []string
		for i := tc.nodes; i >= 1; i-- {
			nodes = append(nodes, fmt.Sprintf("node-%d", i))
		}
		got, err := Replicas(1, tc.groups, nodes, tc.r)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := Replicas(1, tc.groups, []string(nodes), tc.r)
		count, leads := map[string]int{}, map[string]int{}
		for g := uint32(1); g <= uint32(tc.groups); g++ {
			rs := got[g]
			if want := min(tc.r, tc.nodes); len(rs) != want {
				t.Fatalf("%+v group %d: %d replicas, want %d", tc, g, len(rs), want)
			}
			seen := map[string]bool{}
			for i, n := range rs {
				if seen[n] {
					t.Fatalf("%+v group %d: node %s twice", tc, g, n)
				}
				seen[n] = true
				count[n]++
				if again[g][i] != n {
					t.Fatalf("not deterministic")
				}
			}
			leads[rs[0]]++
		}
		spread := func(m map[string]int) int {
			lo, hi := 1<<30, 0
			for _, n := range nodes {
				lo, hi = min(lo, m[n]), max(hi, m[n])
			}
			return hi - lo
		}
		if spread(count) > 1 || spread(leads) > 1 {
			t.Fatalf("%+v: replicas per node %v, leaders per node %v: want spread ≤ 1", tc, count, leads)
		}
	}
	if _, err := Replicas(1, 3, []string{"a", "a"}, 2); err == nil {
		t.Fatal("duplicate node accepted")
	}
	if _, err := Replicas(1, 3, nil, 3); err == nil {
		t.Fatal("no nodes accepted")
	}
}
