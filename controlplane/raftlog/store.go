package raftlog

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// ErrClosed is returned by every call made after (*Store).Close began.
var ErrClosed = errors.New("raftlog: store closed")

// Defaults for Options fields left zero.
const (
	DefaultMaxBatchBytes     = 8 << 20
	DefaultMaxBatchCalls     = 512
	DefaultQueueDepth        = 4096
	DefaultMaxEntryBytes     = 64 << 20
	DefaultMaxEntriesPerCall = 4096
	DefaultCacheBytes        = 8 << 20
	DefaultMemTableBytes     = 16 << 20
)

// Options configure a Store. Zero fields take the defaults above.
type Options struct {
	// WriteCombining (config key raft.write_combining) makes one committer
	// goroutine combine the StoreLogs calls of all groups that are waiting
	// into one synced Pebble batch. False: every call commits and syncs its
	// own batch (Pebble still shares WAL fsyncs among concurrent commits).
	WriteCombining bool
	// MaxBatchBytes bounds the encoded bytes the committer puts in one
	// combined batch. A single call larger than this is committed alone.
	MaxBatchBytes int
	// MaxBatchCalls bounds the StoreLogs calls in one combined batch.
	MaxBatchCalls int
	// QueueDepth bounds StoreLogs calls waiting for the committer; callers
	// beyond it block (back-pressure), they are not refused.
	QueueDepth int
	// MaxEntryBytes bounds one log entry's Data plus Extensions.
	MaxEntryBytes int
	// MaxEntriesPerCall bounds the entries of one StoreLogs call.
	MaxEntriesPerCall int
	// CacheBytes is the Pebble block cache size.
	CacheBytes int64
	// MemTableBytes is the Pebble memtable size.
	MemTableBytes uint64
	// Logf receives Pebble's informational and error messages. Nil: dropped.
	Logf func(format string, args ...any)
}

func (o *Options) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxBatchBytes, DefaultMaxBatchBytes)
	def(&o.MaxBatchCalls, DefaultMaxBatchCalls)
	def(&o.QueueDepth, DefaultQueueDepth)
	def(&o.MaxEntryBytes, DefaultMaxEntryBytes)
	def(&o.MaxEntriesPerCall, DefaultMaxEntriesPerCall)
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = DefaultMemTableBytes
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxBatchBytes", o.MaxBatchBytes}, {"MaxBatchCalls", o.MaxBatchCalls},
		{"QueueDepth", o.QueueDepth}, {"MaxEntryBytes", o.MaxEntryBytes},
		{"MaxEntriesPerCall", o.MaxEntriesPerCall},
	} {
		if f.v < 0 {
			return fmt.Errorf("raftlog: Options.%s is %d, must be positive (0 takes the default)", f.name, f.v)
		}
	}
	if o.MemTableBytes < 1<<20 {
		return fmt.Errorf("raftlog: Options.MemTableBytes is %d, must be at least 1 MiB", o.MemTableBytes)
	}
	return nil
}

// Store is one node's Raft log store. It is safe for concurrent use.
type Store struct {
	db    *pebble.DB
	cache *pebble.Cache
	opts  Options
	dir   string

	// gate: every operation holds it for reading while it touches db or the
	// committer; Close takes it for writing, so it waits for operations in
	// flight and no operation starts after closed is set.
	gate   sync.RWMutex
	closed bool // guarded by gate

	groupsMu sync.Mutex
	groups   map[uint32]*Group // guarded by groupsMu

	// Write combining: requests to the committer, and its exit.
	reqs          chan *appendReq
	committerDone chan struct{}

	stats storeCounters
}

type storeCounters struct {
	calls   atomic.Uint64
	entries atomic.Uint64
	commits atomic.Uint64
	bytes   atomic.Uint64
}

// Stats are cumulative counters since Open.
type Stats struct {
	// Calls is the number of StoreLogs/StoreLog calls that succeeded.
	Calls uint64
	// Entries is the number of log entries they stored.
	Entries uint64
	// Commits is the number of synced Pebble batches that carried them.
	// Calls/Commits is the write-combining factor.
	Commits uint64
	// Bytes is the encoded size of the stored entries.
	Bytes uint64
}

// Open opens (creating if needed) the log store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.CacheBytes)
	po := &pebble.Options{
		Cache:        cache,
		MemTableSize: opts.MemTableBytes,
		Logger:       pebbleLogger{opts.Logf},
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	s := &Store{
		db:     db,
		cache:  cache,
		opts:   opts,
		dir:    dir,
		groups: make(map[uint32]*Group),
	}
	if opts.WriteCombining {
		s.reqs = make(chan *appendReq, opts.QueueDepth)
		s.committerDone = make(chan struct{})
		go s.committer()
	}
	return s, nil
}

// Options returns the options in effect (defaults filled in).
func (s *Store) Options() Options { return s.opts }

// Stats returns the cumulative counters.
func (s *Store) Stats() Stats {
	return Stats{
		Calls:   s.stats.calls.Load(),
		Entries: s.stats.entries.Load(),
		Commits: s.stats.commits.Load(),
		Bytes:   s.stats.bytes.Load(),
	}
}

// Group returns the log and stable store of group id, loading its first
// and last index on first use. Every call with the same id returns the
// same *Group.
func (s *Store) Group(id uint32) (*Group, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	if g, ok := s.groups[id]; ok {
		return g, nil
	}
	g := &Group{s: s, id: id}
	first, last, err := g.scanBounds()
	if err != nil {
		return nil, err
	}
	g.first, g.last = first, last
	s.groups[id] = g
	return g, nil
}

// Close waits for calls in flight, stops the committer and closes Pebble.
// Groups must not be used afterwards (they return ErrClosed).
func (s *Store) Close() error {
	s.gate.Lock()
	if s.closed {
		s.gate.Unlock()
		return nil
	}
	s.closed = true
	s.gate.Unlock()
	if s.reqs != nil {
		// No call is in flight (we held the gate exclusively) and none can
		// start, so the queue is empty: the committer exits at once.
		close(s.reqs)
		<-s.committerDone
	}
	err := s.db.Close()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("raftlog: close %s: %w", s.dir, err)
	}
	return nil
}

// appendReq is one StoreLogs call waiting for the committer.
type appendReq struct {
	batch *pebble.Batch
	done  chan error // buffered 1; the committer sends exactly once
}

// committer combines queued appends into one synced batch per round.
// It never waits for more work than is already queued: while one sync is
// in progress the next round's calls accumulate, which is what makes the
// rounds large under load and free of added latency when idle.
func (s *Store) committer() {
	defer close(s.committerDone)
	round := make([]*appendReq, 0, s.opts.MaxBatchCalls)
	for first := range s.reqs {
		round = append(round[:0], first)
		size := len(first.batch.Repr())
	drain:
		for len(round) < s.opts.MaxBatchCalls && size < s.opts.MaxBatchBytes {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				if size+len(r.batch.Repr()) > s.opts.MaxBatchBytes {
					// Commit what we have, then this one leads the next
					// round. One call above the bound still goes alone.
					s.commitRound(round)
					round = append(round[:0], r)
					size = len(r.batch.Repr())
					continue
				}
				round = append(round, r)
				size += len(r.batch.Repr())
			default:
				break drain
			}
		}
		s.commitRound(round)
	}
}

func (s *Store) commitRound(round []*appendReq) {
	var err error
	if len(round) == 1 {
		err = round[0].batch.Commit(pebble.Sync)
	} else {
		b := s.db.NewBatchWithSize(s.opts.MaxBatchBytes)
		for _, r := range round {
			if err = b.Apply(r.batch, nil); err != nil {
				break
			}
		}
		if err == nil {
			err = b.Commit(pebble.Sync)
		}
		_ = b.Close()
	}
	if err == nil {
		s.stats.commits.Add(1)
	}
	for _, r := range round {
		_ = r.batch.Close()
		r.done <- err
	}
}

// pebbleLogger forwards Pebble's messages to Logf. Fatalf must not return
// (Pebble's contract); it panics with the message after logging it.
type pebbleLogger struct {
	logf func(string, ...any)
}

// Infof drops Pebble's routine messages (flushes, compactions): at one
// line per flush they would drown the control process's log.
func (l pebbleLogger) Infof(string, ...any) {}

func (l pebbleLogger) Errorf(format string, args ...any) {
	if l.logf != nil {
		l.logf("raftlog: pebble error: "+format, args...)
	}
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.Errorf(format, args...)
	panic(fmt.Sprintf("raftlog: pebble fatal: "+format, args...))
}
