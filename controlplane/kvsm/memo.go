package kvsm

import (
	"bytes"
	"fmt"
)

// memo is what an FSM keeps in memory about its group's keys so that the
// commands every Applier runs need not ask Pebble for them: pinned keys'
// values, and the sets of keys under a few prefixes. It is derived from
// the group's state and kept in step by the FSM's own writes (Writer.Set,
// Delete, DeleteRange), which are the only writes to a group's keys besides
// Restore, which clears it. A command whose batch fails to commit stops the
// FSM (the sticky fail) until a Restore, so the memo never outlives a
// write that did not reach the state.
//
// Why: a Pebble get costs a memtable skiplist seek (~20 cache misses) plus a
// bloom probe per table; the metadata state machine read its four shard
// counters, three lock keys and its request record that way on every
// create, ~70 % of its gets (docs/benchmarks.md). The memo is only touched by the group's FSM
// goroutine (ApplyBatch and Restore run there), so it takes no lock.
type memo struct {
	pinned map[string]*memoVal
	sets   []*keySet
}

type memoVal struct {
	present bool
	value   []byte
}

// keySet is the set of the group's keys under prefix.
type keySet struct {
	prefix []byte
	keys   map[string]struct{}
	valid  bool // false: rebuild on the next use (after a DeleteRange)
	// over: the keys under prefix outgrew maxSetKeys; the set is dropped
	// and the lookups read Pebble again, until a DeleteRange or Restore
	// lets it be rebuilt.
	over bool
}

// Bounds: the memo is for a few keys read by nearly every command and a few
// key spaces, not a cache (one that held many values would cost its map
// work on every write).
const (
	maxPinned = 32
	maxSets   = 4
)

// maxSetKeys bounds one set (a group's request records of the last
// minutes, ~40 bytes each in the map: 1<<20 keys is ~40 MiB). A variable
// for the tests.
var maxSetKeys = 1 << 20

func (m *memo) reset() {
	clear(m.pinned)
	m.sets = m.sets[:0]
}

// rangeDeleted forgets what a DeleteRange may have changed.
func (m *memo) rangeDeleted() {
	clear(m.pinned)
	for _, s := range m.sets {
		s.keys, s.valid, s.over = nil, false, false
	}
}

// set records that key now holds value (present) or is absent.
func (m *memo) set(key, value []byte, present bool) {
	for _, s := range m.sets {
		if !s.valid || !bytes.HasPrefix(key, s.prefix) {
			continue
		}
		if present {
			s.keys[string(key)] = struct{}{}
			if len(s.keys) > maxSetKeys {
				s.keys, s.valid, s.over = nil, false, true
			}
		} else {
			delete(s.keys, string(key))
		}
	}
	if v, ok := m.pinned[string(key)]; ok {
		v.present = present
		v.value = append(v.value[:0], value...)
	}
}

// GetPinned is Get for a key read by nearly every command (a counter): its
// value is kept in memory from the first read on and follows every write of
// the key. The value returned must not be modified and is valid only until
// the key is next written. Up to maxPinned keys per group are kept; beyond
// that GetPinned reads Pebble like Get.
func (w *Writer) GetPinned(key []byte) ([]byte, bool, error) {
	if w.m == nil {
		return w.Get(key)
	}
	if v, ok := w.m.pinned[string(key)]; ok {
		return v.value, v.present, nil
	}
	v, found, err := w.Get(key)
	if err != nil || len(w.m.pinned) >= maxPinned {
		return v, found, err
	}
	if w.m.pinned == nil {
		w.m.pinned = make(map[string]*memoVal)
	}
	w.m.pinned[string(key)] = &memoVal{present: found, value: v}
	return v, found, nil
}

// AnyUnder reports whether any key starting with prefix is present, and
// MayHave whether key (which starts with prefix) may be: false means surely
// absent. The memo holds the set of the group's keys under prefix, built by
// a scan at the first use and then following every write under it: for key
// spaces whose keys are looked up far more often than they are present
// (locks, request records), so that the commands looking one up can skip
// the Pebble get that would find nothing. Up to maxSets prefixes per group
// are kept, each of at most maxSetKeys keys; beyond that both read Pebble.
func (w *Writer) AnyUnder(prefix []byte) (bool, error) {
	s, err := w.keySet(prefix)
	if err != nil || s == nil {
		var found bool
		if err == nil {
			err = w.Scan(prefix, PrefixEnd(prefix), func(_, _ []byte) bool { found = true; return false })
		}
		return found, err
	}
	return len(s.keys) > 0, nil
}

// MayHave: see AnyUnder.
func (w *Writer) MayHave(prefix, key []byte) (bool, error) {
	if !bytes.HasPrefix(key, prefix) {
		return false, fmt.Errorf("kvsm: MayHave: key %x is not under %x", key, prefix)
	}
	s, err := w.keySet(prefix)
	if err != nil || s == nil {
		return true, err
	}
	_, ok := s.keys[string(key)]
	return ok, nil
}

// keySet returns the memo's set of keys under prefix (nil: no memo, or no
// room for another set), building it if needed.
func (w *Writer) keySet(prefix []byte) (*keySet, error) {
	if w.m == nil {
		return nil, nil
	}
	var s *keySet
	for _, c := range w.m.sets {
		if bytes.Equal(c.prefix, prefix) {
			s = c
			break
		}
	}
	if s == nil {
		if len(w.m.sets) >= maxSets {
			return nil, nil
		}
		s = &keySet{prefix: append([]byte(nil), prefix...)}
		w.m.sets = append(w.m.sets, s)
	}
	if s.over {
		return nil, nil
	}
	if !s.valid {
		keys := make(map[string]struct{})
		if err := w.Scan(prefix, PrefixEnd(prefix), func(k, _ []byte) bool { keys[string(k)] = struct{}{}; return len(keys) <= maxSetKeys }); err != nil {
			return nil, err
		}
		if len(keys) > maxSetKeys {
			s.over = true
			return nil, nil
		}
		s.keys, s.valid = keys, true
	}
	return s, nil
}

// PrefixEnd returns the first key after every key starting with p (nil:
// to the end of the group's keys): Scan(p, PrefixEnd(p), ...) visits the
// keys under p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
