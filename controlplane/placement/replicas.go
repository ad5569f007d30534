package placement

import (
	"fmt"
	"sort"
)

// Replicas assigns each of groups Raft groups (numbered first, first+1, …) to r distinct
// nodes, spreading them evenly: every node ends with ⌊groups·r/len(nodes)⌋ or one more
// replicas, and every node is the first (preferred leader) replica of ⌊groups/len(nodes)⌋
// or one more groups. The answer depends only on the arguments (nodes are sorted first),
// so every node that runs it agrees. r is capped at len(nodes).
func Replicas(first uint32, groups int, nodes []string, r int) (map[uint32][]string, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("placement: no nodes to place %d groups on", groups)
	}
	if groups < 0 || groups > MaxPGs {
		return nil, fmt.Errorf("placement: %d groups: want 0..%d", groups, MaxPGs)
	}
	if r < 1 {
		return nil, fmt.Errorf("placement: %d replicas per group: want at least 1", r)
	}
	sorted := append([]string(nil), nodes...)
	sort.Strings(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, fmt.Errorf("placement: node %q listed twice", sorted[i])
		}
	}
	r = min(r, len(sorted))
	count := make(map[string]int, len(sorted))
	leads := make(map[string]int, len(sorted))
	out := make(map[uint32][]string, groups)
	for i := 0; i < groups; i++ {
		g := first + uint32(i)
		// Preferred leader: the node leading fewest groups so far; ties by rendezvous score.
		lead := pick(g, sorted, nil, func(n string) int { return leads[n]*len(sorted) + count[n] })
		chosen := []string{lead}
		for len(chosen) < r {
			chosen = append(chosen, pick(g, sorted, chosen, func(n string) int { return count[n] }))
		}
		for _, n := range chosen {
			count[n]++
		}
		leads[lead]++
		out[g] = chosen
	}
	return out, nil
}

// pick returns the node not in exclude with the lowest load, ties broken by the highest
// rendezvous score for group g, then by name.
func pick(g uint32, nodes, exclude []string, load func(string) int) string {
	best, bestLoad, bestScore := "", 0, uint64(0)
next:
	for _, n := range nodes {
		for _, x := range exclude {
			if x == n {
				continue next
			}
		}
		l, s := load(n), score(g, n)
		if best == "" || l < bestLoad || (l == bestLoad && s > bestScore) {
			best, bestLoad, bestScore = n, l, s
		}
	}
	return best
}
