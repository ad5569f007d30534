package kvsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

const (
	prefixData byte = 0x10
	prefixMeta byte = 0x11

	metaApplied   byte = 'a'
	metaRestoring byte = 'r'

	groupPrefixLen = 5
)

// ErrClosed is returned by operations on a closed State.
var ErrClosed = errors.New("kvsm: state closed")

// StateOptions configure the state Pebble. Zero fields take defaults.
type StateOptions struct {
	// CacheBytes is the Pebble block cache size. Default 64 MiB.
	CacheBytes int64
	// MemTableBytes is the Pebble memtable size. Default 16 MiB.
	MemTableBytes uint64
	// Logf receives Pebble's error messages. Nil: dropped.
	Logf func(format string, args ...any)
}

// State is a node's state Pebble, shared by the FSMs of all its groups.
type State struct {
	db    *pebble.DB
	cache *pebble.Cache
	dir   string

	mu     sync.RWMutex // held for reading by every use of db
	closed bool         // guarded by mu
}

// OpenState opens (creating if needed) the state store in dir.
func OpenState(dir string, opts StateOptions) (*State, error) {
	if opts.CacheBytes == 0 {
		opts.CacheBytes = 64 << 20
	}
	if opts.MemTableBytes == 0 {
		opts.MemTableBytes = 16 << 20
	}
	if opts.CacheBytes < 0 || opts.MemTableBytes < 1<<20 {
		return nil, fmt.Errorf("kvsm: StateOptions: CacheBytes %d must be >= 0 and MemTableBytes %d >= 1 MiB", opts.CacheBytes, opts.MemTableBytes)
	}
	cache := pebble.NewCache(opts.CacheBytes)
	po := &pebble.Options{
		Cache:        cache,
		MemTableSize: opts.MemTableBytes,
		Logger:       pebbleLogger{opts.Logf},
	}
	// Bloom filters on every level: the metadata state machine looks up
	// many keys that are absent (locks, names about to be created, request
	// ids), and without a filter each such get reads an index and a data
	// block of every table it might be in.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("kvsm: open state %s: %w", dir, err)
	}
	return &State{db: db, cache: cache, dir: dir}, nil
}

// Close closes the store. FSMs using it must have stopped.
func (s *State) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.db.Close()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("kvsm: close state %s: %w", s.dir, err)
	}
	return nil
}

// use runs f with the db while the store is open.
func (s *State) use(f func(db *pebble.DB) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return f(s.db)
}

func groupKey(prefix byte, group uint32, suffix []byte) []byte {
	k := make([]byte, 0, groupPrefixLen+len(suffix))
	k = append(k, prefix)
	k = binary.BigEndian.AppendUint32(k, group)
	return append(k, suffix...)
}

// dataBounds returns [lower, upper) of group's data keys.
func dataBounds(group uint32) (lower, upper []byte) {
	lower = groupKey(prefixData, group, nil)
	if group == ^uint32(0) {
		return lower, []byte{prefixData + 1}
	}
	return lower, groupKey(prefixData, group+1, nil)
}

func metaKey(group uint32, which byte) []byte {
	return groupKey(prefixMeta, group, []byte{which})
}

// readApplied reads group's applied index and restore marker from r.
func readApplied(r pebble.Reader, group uint32) (applied uint64, restoring bool, err error) {
	v, closer, err := r.Get(metaKey(group, metaApplied))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, false, err
	default:
		if len(v) != 8 {
			closer.Close()
			return 0, false, fmt.Errorf("kvsm: group %d: applied index of %d bytes", group, len(v))
		}
		applied = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	_, closer, err = r.Get(metaKey(group, metaRestoring))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, false, err
	default:
		restoring = true
		closer.Close()
	}
	return applied, restoring, nil
}

type pebbleLogger struct {
	logf func(string, ...any)
}

// Infof drops Pebble's routine messages (flushes, compactions).
func (l pebbleLogger) Infof(string, ...any) {}

func (l pebbleLogger) Errorf(format string, args ...any) {
	if l.logf != nil {
		l.logf("kvsm: pebble error: "+format, args...)
	}
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.Errorf(format, args...)
	panic(fmt.Sprintf("kvsm: pebble fatal: "+format, args...))
}
