package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Group is one Raft group's log and stable store inside a Store. It
// implements raft.LogStore, raft.StableStore and raft.MonotonicLogStore
// (false: raft may leave gaps after a snapshot restore and we accept them).
type Group struct {
	s  *Store
	id uint32

	// mu guards first and last and serializes DeleteRange with itself.
	mu    sync.Mutex
	first uint64 // 0 when the group has no entries
	last  uint64 // 0 when the group has no entries
}

var (
	_ raft.LogStore          = (*Group)(nil)
	_ raft.StableStore       = (*Group)(nil)
	_ raft.MonotonicLogStore = (*Group)(nil)
)

// ID returns the group id.
func (g *Group) ID() uint32 { return g.id }

// IsMonotonic reports false: entries may have gaps (raft's default).
func (g *Group) IsMonotonic() bool { return false }

// scanBounds finds the group's first and last index with two seeks.
func (g *Group) scanBounds() (first, last uint64, err error) {
	lower, upper := logBounds(g.id)
	it, err := g.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, 0, fmt.Errorf("raftlog: group %d: %w", g.id, err)
	}
	if it.First() {
		first = binary.BigEndian.Uint64(it.Key()[groupPrefix:])
		if it.Last() {
			last = binary.BigEndian.Uint64(it.Key()[groupPrefix:])
		}
	}
	if err := it.Error(); err != nil {
		_ = it.Close()
		return 0, 0, fmt.Errorf("raftlog: group %d: scan: %w", g.id, err)
	}
	if err := it.Close(); err != nil {
		return 0, 0, fmt.Errorf("raftlog: group %d: scan: %w", g.id, err)
	}
	return first, last, nil
}

// FirstIndex returns the first index stored, 0 if none.
func (g *Group) FirstIndex() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.first, nil
}

// LastIndex returns the last index stored, 0 if none.
func (g *Group) LastIndex() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last, nil
}

// GetLog reads the entry at index into l; raft.ErrLogNotFound if absent.
func (g *Group) GetLog(index uint64, l *raft.Log) error {
	g.s.gate.RLock()
	defer g.s.gate.RUnlock()
	if g.s.closed {
		return ErrClosed
	}
	v, closer, err := g.s.db.Get(logKey(make([]byte, 0, logKeyLen), g.id, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("raftlog: group %d: get %d: %w", g.id, index, err)
	}
	err = decodeEntry(v, index, l)
	_ = closer.Close()
	if err != nil {
		return fmt.Errorf("raftlog: group %d: %w", g.id, err)
	}
	return nil
}

// StoreLog stores one entry durably.
func (g *Group) StoreLog(l *raft.Log) error {
	return g.StoreLogs([]*raft.Log{l})
}

// StoreLogs stores entries durably and atomically: when it returns nil
// every entry is on stable storage; on error none is. Entries need not be
// contiguous with what is stored (raft may leave a gap after a snapshot).
func (g *Group) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if len(logs) > g.s.opts.MaxEntriesPerCall {
		return fmt.Errorf("raftlog: group %d: %d entries in one call, the limit is %d (Options.MaxEntriesPerCall)",
			g.id, len(logs), g.s.opts.MaxEntriesPerCall)
	}
	size := 0
	lo, hi := logs[0].Index, logs[0].Index
	for _, l := range logs {
		if n := len(l.Data) + len(l.Extensions); n > g.s.opts.MaxEntryBytes {
			return fmt.Errorf("raftlog: group %d: entry %d is %d bytes, the limit is %d (Options.MaxEntryBytes)",
				g.id, l.Index, n, g.s.opts.MaxEntryBytes)
		}
		if l.Index == 0 {
			return fmt.Errorf("raftlog: group %d: entry with index 0", g.id)
		}
		size += logKeyLen + encodedEntrySize(l)
		lo, hi = min(lo, l.Index), max(hi, l.Index)
	}

	g.s.gate.RLock()
	defer g.s.gate.RUnlock()
	if g.s.closed {
		return ErrClosed
	}
	b := g.s.db.NewBatchWithSize(size + 64)
	key := make([]byte, 0, logKeyLen)
	val := make([]byte, 0, 256)
	for _, l := range logs {
		key = logKey(key[:0], g.id, l.Index)
		val = appendEntry(val[:0], l)
		if err := b.Set(key, val, nil); err != nil {
			_ = b.Close()
			return fmt.Errorf("raftlog: group %d: batch: %w", g.id, err)
		}
	}
	encoded := uint64(len(b.Repr()))
	var err error
	if g.s.reqs != nil {
		r := &appendReq{batch: b, done: make(chan error, 1)}
		g.s.reqs <- r
		err = <-r.done
	} else {
		err = b.Commit(pebble.Sync)
		_ = b.Close()
		if err == nil {
			g.s.stats.commits.Add(1)
		}
	}
	if err != nil {
		return fmt.Errorf("raftlog: group %d: store entries %d..%d: %w", g.id, lo, hi, err)
	}
	g.s.stats.calls.Add(1)
	g.s.stats.entries.Add(uint64(len(logs)))
	g.s.stats.bytes.Add(encoded)

	g.mu.Lock()
	if g.first == 0 || lo < g.first {
		g.first = lo
	}
	if hi > g.last {
		g.last = hi
	}
	g.mu.Unlock()
	return nil
}

// DeleteRange deletes entries min..max inclusive with one Pebble range
// delete, durably: raft deletes rarely (log compaction after a snapshot,
// truncation of a conflicting suffix) and reasons about what is left, so a
// deletion is synced like an append rather than left to be lost in a crash.
func (g *Group) DeleteRange(minIdx, maxIdx uint64) error {
	if minIdx > maxIdx {
		return nil
	}
	g.s.gate.RLock()
	defer g.s.gate.RUnlock()
	if g.s.closed {
		return ErrClosed
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	start := logKey(nil, g.id, minIdx)
	var end []byte
	if maxIdx == ^uint64(0) {
		_, end = logBounds(g.id)
	} else {
		end = logKey(nil, g.id, maxIdx+1)
	}
	if err := g.s.db.DeleteRange(start, end, pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: group %d: delete %d..%d: %w", g.id, minIdx, maxIdx, err)
	}
	first, last, err := g.scanBounds()
	if err != nil {
		return err
	}
	g.first, g.last = first, last
	return nil
}

// Set stores a stable value durably.
func (g *Group) Set(key, val []byte) error {
	g.s.gate.RLock()
	defer g.s.gate.RUnlock()
	if g.s.closed {
		return ErrClosed
	}
	if err := g.s.db.Set(stableKey(g.id, key), val, pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: group %d: set %q: %w", g.id, key, err)
	}
	return nil
}

// Get returns a stable value, or an empty slice and nil if key was never set.
func (g *Group) Get(key []byte) ([]byte, error) {
	g.s.gate.RLock()
	defer g.s.gate.RUnlock()
	if g.s.closed {
		return nil, ErrClosed
	}
	v, closer, err := g.s.db.Get(stableKey(g.id, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return []byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("raftlog: group %d: get %q: %w", g.id, key, err)
	}
	out := append([]byte{}, v...)
	_ = closer.Close()
	return out, nil
}

// SetUint64 stores a stable uint64 durably (8 bytes big-endian).
func (g *Group) SetUint64(key []byte, val uint64) error {
	return g.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a stable uint64, or 0 and nil if key was never set.
func (g *Group) GetUint64(key []byte) (uint64, error) {
	v, err := g.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) == 0 {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: group %d: stable key %q holds %d bytes, not a uint64", ErrCorrupt, g.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
