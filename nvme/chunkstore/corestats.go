package chunkstore

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// ErrQueueFull is the refusal of a data request (put, get, delete) by a
// partition already holding its queue limit of them (SetQueueLimit). It is
// not ErrBusy: the caller should not wait for room but answer "busy" to its
// own caller, who retries later.
var ErrQueueFull = errors.New("chunk store partition is at its queue limit")

// MaxQueueLimit is the largest queue limit SetQueueLimit accepts: a
// partition's inbox holds this many requests.
const MaxQueueLimit = inboxCap

// LatencyBuckets is the number of buckets of a Histogram.
const LatencyBuckets = 32

// Histogram counts latencies in log2 microsecond buckets: bucket 0 holds
// those under 1 µs, bucket b (1 <= b < LatencyBuckets-1) those in
// [2^(b-1), 2^b) µs, and the last bucket everything from 2^(LatencyBuckets-2)
// µs (about 18 minutes) up.
type Histogram [LatencyBuckets]uint64

// LatencyBucket is the bucket of a latency d.
func LatencyBucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	return min(bits.Len64(us), LatencyBuckets-1)
}

// BucketUpper is the exclusive upper bound of bucket b (the last bucket has
// none; it returns the largest Duration).
func BucketUpper(b int) time.Duration {
	if b >= LatencyBuckets-1 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(1<<b) * time.Microsecond
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// CoreStats are one partition's (one I/O core's) figures: its Stats, and
// what it is holding and how long its requests took.
type CoreStats struct {
	Partition int
	Stats
	// Queued is the number of data requests the partition has accepted
	// and not answered yet (its current queue depth).
	Queued int
	// QueueLimit is the queue limit in force (0: none but the inbox).
	QueueLimit int
	// DeviceOps is the I/Os the partition has handed to its engine and not
	// reaped yet.
	DeviceOps int
	// Refused counts data requests refused with ErrQueueFull.
	Refused uint64
	// Failed counts data requests answered with an error.
	Failed uint64
	// ReadLatency (gets) and WriteLatency (puts and deletes) count every
	// answered data request by the time from its acceptance by the
	// partition to its answer: inbox wait, combining, device I/O and
	// checksum verification included.
	ReadLatency, WriteLatency Histogram
}

// SetQueueLimit bounds the data requests (puts, gets, deletes, in any of
// their forms) each partition holds at once, accepted and not answered:
// one more is refused at once with ErrQueueFull. n = 0 lifts the limit
// (the inbox, MaxQueueLimit requests, still bounds asynchronous calls).
// It applies to requests sent from then on.
func (s *Store) SetQueueLimit(n int) error {
	if n < 0 || n > MaxQueueLimit {
		return fmt.Errorf("chunkstore: queue limit %d out of range [0, %d]", n, MaxQueueLimit)
	}
	s.queueLimit.Store(int32(n))
	return nil
}

// QueueLimit is the limit set by SetQueueLimit (0: none).
func (s *Store) QueueLimit() int { return int(s.queueLimit.Load()) }

// admit counts a data request into p's queue, or refuses it when p holds
// its limit already.
func (p *partition) admit() error {
	n := p.queued.Add(1)
	if lim := p.s.queueLimit.Load(); lim > 0 && n > lim {
		p.queued.Add(-1)
		p.refused.Add(1)
		return fmt.Errorf("%w: partition %d holds %d requests already; retry later", ErrQueueFull, p.idx, lim)
	}
	return nil
}

// account records a data request's answer; it runs on the partition's
// goroutine from finish.
func (p *partition) account(r *request, err error) {
	p.queued.Add(-1)
	if err != nil {
		p.failed++
	}
	b := LatencyBucket(time.Since(p.s.t0) - time.Duration(r.t0))
	if r.kind == opGet {
		p.readLat[b]++
	} else {
		p.writeLat[b]++
	}
}

func (r *request) isData() bool { return r.kind == opPut || r.kind == opGet || r.kind == opDelete }

func (p *partition) coreStats(cs *CoreStats) {
	cs.Partition = p.idx
	cs.Stats = p.snapshotStats()
	cs.Queued = int(p.queued.Load())
	cs.QueueLimit = int(p.s.queueLimit.Load())
	cs.DeviceOps = p.opsLive
	cs.Refused = p.refused.Load()
	cs.Failed = p.failed
	cs.ReadLatency, cs.WriteLatency = p.readLat, p.writeLat
}

// PartitionStats returns each partition's figures, in partition order.
func (s *Store) PartitionStats() ([]CoreStats, error) {
	out := make([]CoreStats, len(s.parts))
	for i, p := range s.parts {
		r := getReq(opStats, ID{})
		r.core = &out[i]
		err := p.call(r)
		putReq(r)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
