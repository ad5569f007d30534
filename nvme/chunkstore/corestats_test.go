package chunkstore

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLatencyBucket(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 0}, {0, 0}, {999 * time.Nanosecond, 0},
		{time.Microsecond, 1}, {2*time.Microsecond - 1, 1},
		{2 * time.Microsecond, 2}, {3 * time.Microsecond, 2}, {4 * time.Microsecond, 3},
		{time.Millisecond, 10}, {time.Second, 20},
		{time.Duration(1<<30) * time.Microsecond, LatencyBuckets - 1}, {time.Duration(1<<63 - 1), LatencyBuckets - 1},
	} {
		b := LatencyBucket(c.d)
		if b != c.want {
			t.Errorf("LatencyBucket(%v) = %d, want %d", c.d, b, c.want)
		}
		if b < LatencyBuckets-1 && c.d >= BucketUpper(b) {
			t.Errorf("%v lands in bucket %d whose upper bound is %v", c.d, b, BucketUpper(b))
		}
		if b > 0 && c.d < BucketUpper(b-1) {
			t.Errorf("%v lands in bucket %d but is under bucket %d's bound %v", c.d, b, b-1, BucketUpper(b-1))
		}
	}
}

// TestOnPartitionThread pins each partition from the hook and checks the
// hook ran once per partition, on the thread that owns the partition.
func TestOnPartitionThread(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	var mu sync.Mutex
	tids := map[int]int{} // partition -> thread
	opts := testOpts(16 << 20)
	opts.OnPartitionThread = func(p int) {
		var set unix.CPUSet
		set.Set(cpus[p%len(cpus)])
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Errorf("partition %d: pinning: %v", p, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := tids[p]; dup {
			t.Errorf("hook called twice for partition %d", p)
		}
		tids[p] = unix.Gettid()
	}
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), opts)
	defer s.Close()
	if len(tids) != s.Partitions() {
		t.Fatalf("hook ran for %d partitions, the store has %d", len(tids), s.Partitions())
	}
	for p, tid := range tids {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			t.Fatalf("partition %d thread %d: %v (did it exit?)", p, tid, err)
		}
		if got.Count() != 1 || !got.IsSet(cpus[p%len(cpus)]) {
			t.Errorf("partition %d thread %d: affinity has %d CPUs, want only CPU %d", p, tid, got.Count(), cpus[p%len(cpus)])
		}
	}
	// The partitions still work on their pinned threads.
	id := ID{Lo: 1}
	if err := s.Put(id, 1, pattern(id, 1, 5000)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id, pattern(id, 1, 5000), 1)
}

// TestQueueLimit floods a store whose queue limit is 1: requests beyond
// it are refused with ErrQueueFull (not ErrBusy), the accepted ones all
// complete, and the per-partition figures add up.
func TestQueueLimit(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dev"), testOpts(32<<20))
	defer s.Close()
	for _, bad := range []int{-1, MaxQueueLimit + 1} {
		if err := s.SetQueueLimit(bad); err == nil {
			t.Errorf("SetQueueLimit(%d) accepted", bad)
		}
	}
	if err := s.SetQueueLimit(1); err != nil {
		t.Fatal(err)
	}
	if s.QueueLimit() != 1 {
		t.Fatalf("QueueLimit %d, want 1", s.QueueLimit())
	}
	const n = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted, refused, failed int
	data := pattern(ID{}, 1, 4096)
	for i := 0; i < n; i++ {
		id := ID{Lo: uint64(i)}
		wg.Add(1)
		err := s.PutAsync(id, 1, data, func(err error) {
			mu.Lock()
			if err != nil {
				failed++
			}
			mu.Unlock()
			wg.Done()
		})
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrQueueFull) && !errors.Is(err, ErrBusy):
			refused++
			wg.Done()
		default:
			t.Fatalf("put %d: %v", i, err)
		}
	}
	wg.Wait()
	if refused == 0 || failed != 0 {
		t.Fatalf("%d accepted, %d refused, %d failed: want some refused and none failed", accepted, refused, failed)
	}
	// Synchronous calls are limited the same way, and a lifted limit
	// admits again.
	if err := s.SetQueueLimit(0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, _, err := s.Get(ID{Lo: uint64(i)}, 0, make([]byte, 10)); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	cores, err := s.PartitionStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(cores) != s.Partitions() {
		t.Fatalf("%d partition stats for %d partitions", len(cores), s.Partitions())
	}
	var puts, writes, reads, refusedSeen, failedReads uint64
	var sum Stats
	for i, c := range cores {
		if c.Partition != i || c.Queued != 0 || c.QueueLimit != 0 {
			t.Errorf("partition %d: %+v, want index %d, nothing queued, no limit", i, c, i)
		}
		puts += c.Puts
		writes += c.WriteLatency.Count()
		reads += c.ReadLatency.Count()
		refusedSeen += c.Refused
		failedReads += c.Failed
		sum.add(&c.Stats)
	}
	if puts != uint64(accepted) || writes != uint64(accepted) || refusedSeen != uint64(refused) || reads != n {
		t.Errorf("partitions saw %d puts, %d write latencies, %d refusals, %d read latencies; want %d, %d, %d, %d",
			puts, writes, refusedSeen, reads, accepted, accepted, refused, n)
	}
	if failedReads != uint64(n-accepted) { // the refused ids were never written: not found
		t.Errorf("%d failed requests, want %d (gets of the refused puts)", failedReads, n-accepted)
	}
	total, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if total != sum {
		t.Errorf("Stats %+v is not the sum of PartitionStats %+v", total, sum)
	}
}
