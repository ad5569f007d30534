package bench

import "math/bits"

// permutation orders [0, n) pseudo-randomly: at(s) for s = 0, 1, 2, ...
// visits every value once in each pass of n, a new order each pass. It is
// how random jobs visit their blocks by default, like fio's random map: a
// size-based random job touches every block exactly once. It needs no
// memory and is computed from s alone, so workers sharing a job's sequence
// numbers share the order.
type permutation struct {
	n    uint64 // values, >= 1
	bits uint   // smallest b with 2^b >= n
	mask uint64 // 2^bits - 1
	seed uint64
}

func newPermutation(n int64, seed uint64) *permutation {
	b := uint(bits.Len64(uint64(n - 1)))
	return &permutation{n: uint64(n), bits: b, mask: 1<<b - 1, seed: seed}
}

// at returns the s-th value (s >= 0).
func (p *permutation) at(s int64) int64 {
	pass, x := uint64(s)/p.n, uint64(s)%p.n
	st := p.seed + pass
	key := splitmix64(&st)
	// scramble is a bijection on [0, 2^bits); applying it until the value
	// falls below n (cycle walking) is a bijection on [0, n), and takes
	// fewer than two steps on average since 2^bits < 2n.
	for {
		x = p.scramble(x, key)
		if x < p.n {
			return int64(x)
		}
	}
}

// scramble mixes x within bits bits: each step (xor with a constant,
// multiplication by an odd number, addition, x ^= x>>k with k >= 1) is a
// bijection modulo 2^bits.
func (p *permutation) scramble(x, key uint64) uint64 {
	m, k := p.mask, p.bits/2+1
	x = (x ^ key) & m
	x = (x * 0x9e3779b97f4a7c15) & m
	x ^= x >> k
	x = (x * (key | 1)) & m
	x ^= x >> k
	x = (x + key>>32) & m
	x = (x * 0xbf58476d1ce4e5b9) & m
	x ^= x >> k
	return x
}
