package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistogramBuckets(t *testing.T) {
	// Every value falls inside its bucket, buckets tile the range, and a
	// bucket is at most 1/64 of its lower bound wide.
	prevEnd := uint64(0)
	for i := range histBuckets {
		low, width := histBounds(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, low, prevEnd)
		}
		if width > 1 && float64(width)/float64(low) > 1.0/64 {
			t.Fatalf("bucket %d [%d, +%d) is wider than 1/64", i, low, width)
		}
		if histIndex(low) != i || histIndex(low+width-1) != i {
			t.Fatalf("bucket %d: histIndex(%d)=%d histIndex(%d)=%d", i, low, histIndex(low), low+width-1, histIndex(low+width-1))
		}
		prevEnd = low + width
	}
	if histIndex(math.MaxUint64) != histBuckets-1 {
		t.Fatal("huge values must land in the last bucket")
	}
}

func TestHistogramPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHistogram()
	var ref []int64
	for range 200_000 {
		// Log-normal around 80 µs with a long tail, plus a few outliers.
		v := int64(math.Exp(rng.NormFloat64()*0.8 + math.Log(80_000)))
		if rng.IntN(1000) == 0 {
			v = rng.Int64N(20_000_000_000)
		}
		h.Record(v)
		ref = append(ref, v)
	}
	slices.Sort(ref)
	for _, p := range append(percentileList, 0, 100) {
		rank := int(math.Ceil(p / 100 * float64(len(ref))))
		want := ref[max(rank, 1)-1]
		got := h.Percentile(p)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("p%v = %d, reference %d: error %.3f%% > 1%%", p, got, want, rel*100)
		}
	}
	if h.Min() != ref[0] || h.Max() != ref[len(ref)-1] {
		t.Errorf("min/max = %d/%d, want %d/%d", h.Min(), h.Max(), ref[0], ref[len(ref)-1])
	}
	var sum float64
	for _, v := range ref {
		sum += float64(v)
	}
	mean := sum / float64(len(ref))
	if math.Abs(h.Mean()-mean) > 1e-6*mean {
		t.Errorf("mean = %f, want %f", h.Mean(), mean)
	}
	var ss float64
	for _, v := range ref {
		ss += (float64(v) - mean) * (float64(v) - mean)
	}
	if sd := math.Sqrt(ss / float64(len(ref))); math.Abs(h.Stddev()-sd) > 1e-6*sd {
		t.Errorf("stddev = %f, want %f", h.Stddev(), sd)
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	var empty Histogram
	if empty.Percentile(50) != 0 || empty.Min() != 0 || empty.Mean() != 0 || empty.Stddev() != 0 {
		t.Fatal("an empty histogram must report zeros")
	}
	a, b := newHistogram(), newHistogram()
	for v := int64(1); v <= 100; v++ {
		a.Record(v)
		b.Record(v + 100)
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&empty)
	if m.Count() != 200 || m.Min() != 1 || m.Max() != 200 || m.Percentile(50) != 100 || m.Percentile(100) != 200 {
		t.Fatalf("merged: n=%d min=%d max=%d p50=%d p100=%d", m.Count(), m.Min(), m.Max(), m.Percentile(50), m.Percentile(100))
	}
	a.Record(-5)
	if a.Min() != 0 {
		t.Fatal("negative samples must count as 0")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := newHistogram()
	b.ReportAllocs()
	for i := range b.N {
		h.Record(int64(i&0xffff) * 37)
	}
}

// BenchmarkNow measures the clock read done per completion batch (and per
// submission batch) in the device loop.
func BenchmarkNow(b *testing.B) {
	var sink int64
	for range b.N {
		sink += Now()
	}
	if sink == 0 {
		b.Log(sink)
	}
}
