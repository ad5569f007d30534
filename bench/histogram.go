package bench

import (
	"math"
	"math/bits"
)

// Histogram geometry: log-linear buckets. Values below 2^(histSubBits+1) ns
// get one bucket each; above, every power of two is split into 2^histSubBits
// equal buckets, so a bucket is at most 1/64 of its lower bound wide and
// reporting its midpoint is off by at most 1/128 (0.78%). Values of
// 2^(histMaxShift+histSubBits+1) ns (137 s) and more share the last bucket;
// min and max stay exact.
const (
	histSubBits  = 6
	histSub      = 1 << histSubBits
	histMaxShift = 30
	histBuckets  = (histMaxShift+1)*histSub + histSub // 2048 buckets, 16 KiB
)

// Histogram is a latency distribution in nanoseconds with fixed memory
// (16 KiB of counters, allocated once by newHistogram) and no allocation per
// Record. It has one writer and is not safe for concurrent use.
type Histogram struct {
	counts *[histBuckets]uint64
	n      uint64
	sum    uint64  // ns; overflows only after ~580 years of summed latency
	sumSq  float64 // ns², for the standard deviation
	min    int64
	max    int64
}

func newHistogram() Histogram {
	return Histogram{counts: new([histBuckets]uint64), min: math.MaxInt64}
}

// histIndex is the bucket of v ns (v >= 0).
func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - (histSubBits + 1)
	if shift > histMaxShift {
		return histBuckets - 1
	}
	return shift*histSub + int(v>>uint(shift))
}

// histBounds returns the lowest value of bucket i and its width, in ns.
func histBounds(i int) (low, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	shift := uint(i/histSub - 1)
	return uint64(i%histSub+histSub) << shift, 1 << shift
}

// Record adds one sample of v ns; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(uint64(v))]++
	h.n++
	h.sum += uint64(v)
	f := float64(v)
	h.sumSq += f * f
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h. h must have counters (or o be empty).
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		*h = newHistogram()
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.sumSq += o.sumSq
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// reset forgets every sample, keeping the counters' memory.
func (h *Histogram) reset() {
	if h.counts != nil {
		clear(h.counts[:])
	}
	h.n, h.sum, h.sumSq, h.min, h.max = 0, 0, 0, math.MaxInt64, 0
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest sample in ns, 0 when empty.
func (h *Histogram) Min() int64 {
	if h.n == 0 {
		return 0
	}
	return h.min
}

// Max is the largest sample in ns.
func (h *Histogram) Max() int64 { return h.max }

// Mean is the exact mean in ns, 0 when empty.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}

// Stddev is the population standard deviation in ns, 0 when empty.
func (h *Histogram) Stddev() float64 {
	if h.n == 0 {
		return 0
	}
	m := h.Mean()
	v := h.sumSq/float64(h.n) - m*m
	if v <= 0 {
		return 0
	}
	return math.Sqrt(v)
}

// Percentile returns the sample of rank ceil(p/100·N) (at least 1) in ns, to
// within 0.8%: the midpoint of its bucket, clamped to [Min, Max]. It is 0
// when the histogram is empty; p is clamped to [0, 100].
func (h *Histogram) Percentile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	p = min(max(p, 0), 100)
	rank := uint64(math.Ceil(p / 100 * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := histBounds(i)
			v := int64(low + width/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
