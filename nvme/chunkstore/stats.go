package chunkstore

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Stats are a store's counters (since Open) and gauges, summed over its
// partitions.
type Stats struct {
	Puts, Gets, Deletes       uint64
	BytesWritten, BytesRead   uint64 // callers' data bytes
	Batches                   uint64 // combined appends written
	BatchRecords              uint64 // records in those appends
	BatchBytes                uint64 // bytes appended (summaries and padding included)
	Checkpoints               uint64
	SegmentsCleaned           uint64
	Relocated                 uint64 // records moved by cleaning
	CorruptReads, WriteErrors uint64
	LiveChunks                uint64
	LiveBytes                 uint64
	Segments, FreeSegments    uint64
	SegmentSize               uint64
}

func (a *Stats) add(b *Stats) {
	a.Puts += b.Puts
	a.Gets += b.Gets
	a.Deletes += b.Deletes
	a.BytesWritten += b.BytesWritten
	a.BytesRead += b.BytesRead
	a.Batches += b.Batches
	a.BatchRecords += b.BatchRecords
	a.BatchBytes += b.BatchBytes
	a.Checkpoints += b.Checkpoints
	a.SegmentsCleaned += b.SegmentsCleaned
	a.Relocated += b.Relocated
	a.CorruptReads += b.CorruptReads
	a.WriteErrors += b.WriteErrors
	a.LiveChunks += b.LiveChunks
	a.LiveBytes += b.LiveBytes
	a.Segments += b.Segments
	a.FreeSegments += b.FreeSegments
	a.SegmentSize = b.SegmentSize
}

func (p *partition) snapshotStats() Stats {
	st := p.stats
	for _, e := range p.index {
		if !e.tomb {
			st.LiveChunks++
			st.LiveBytes += uint64(e.length)
		}
	}
	st.Segments = uint64(len(p.segs))
	st.FreeSegments = uint64(len(p.free))
	st.SegmentSize = p.s.sb.SegmentSize
	return st
}

// Stats returns the store's counters, summed over its partitions
// (PartitionStats has each one's).
func (s *Store) Stats() (Stats, error) {
	var total Stats
	var cs CoreStats
	for _, p := range s.parts {
		r := getReq(opStats, ID{})
		r.core = &cs
		err := p.call(r)
		putReq(r)
		if err != nil {
			return total, err
		}
		total.add(&cs.Stats)
	}
	return total, nil
}

// Checkpoint writes a checkpoint of every partition and waits for it to be
// durable, bounding what the next Open replays.
func (s *Store) Checkpoint() error {
	for _, p := range s.parts {
		r := getReq(opCheckpoint, ID{})
		err := p.call(r)
		putReq(r)
		if err != nil {
			return err
		}
	}
	return nil
}

// ScrubReport is the result of Scrub.
type ScrubReport struct {
	Chunks  int
	Bytes   int64
	Corrupt []ID // chunks with a block whose checksum failed
	Errors  int  // other read errors
}

// Scrub reads every live chunk in full and verifies each 4 KiB block's
// checksum, with a few reads in flight, interleaved with other traffic.
func (s *Store) Scrub() (ScrubReport, error) {
	var rep ScrubReport
	var mu sync.Mutex
	const workers = 8
	from := ID{}
	for {
		page, err := s.List(from, 4096)
		if err != nil {
			return rep, err
		}
		if len(page) == 0 {
			return rep, nil
		}
		next, more := page[len(page)-1].ID.Next()
		work := make(chan Info)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, MaxChunkSize)
				for in := range work {
					n, _, err := s.Get(in.ID, 0, buf[:in.Length])
					for errors.Is(err, ErrQueueFull) { // yield to foreground traffic
						time.Sleep(time.Millisecond)
						n, _, err = s.Get(in.ID, 0, buf[:in.Length])
					}
					mu.Lock()
					switch {
					case err == nil:
						rep.Chunks++
						rep.Bytes += int64(n)
					case IsCorrupt(err):
						rep.Corrupt = append(rep.Corrupt, in.ID)
					case err == ErrNotFound:
						// deleted while scrubbing
					default:
						rep.Errors++
					}
					mu.Unlock()
				}
			}()
		}
		for _, in := range page {
			work <- in
		}
		close(work)
		wg.Wait()
		if !more {
			return rep, nil
		}
		from = next
	}
}

func (r ScrubReport) String() string {
	return fmt.Sprintf("%d chunks, %d bytes verified, %d corrupt, %d read errors", r.Chunks, r.Bytes, len(r.Corrupt), r.Errors)
}
