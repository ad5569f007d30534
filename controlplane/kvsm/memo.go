package kvsm

import "bytes"

// memo is what an FSM keeps in memory about its group's keys so that the
// commands every Applier runs need not ask Pebble for them: pinned keys'
// values and the number of keys under counted prefixes. It is derived from
// the group's state and kept in step by the FSM's own writes (Writer.Set,
// Delete, DeleteRange), which are the only writes to a group's keys besides
// Restore, which clears it. A command whose batch fails to commit stops the
// FSM (the sticky fail) until a Restore, so the memo never outlives a
// write that did not reach the state.
//
// Why: a Pebble get costs a memtable skiplist seek (~20 cache misses) plus a
// bloom probe per table; the metadata state machine read its four shard
// counters and three lock keys that way on every create, ~40 % of its gets
// (docs/benchmarks.md). The memo is only touched by the group's FSM
// goroutine (ApplyBatch and Restore run there), so it takes no lock.
type memo struct {
	pinned  map[string]*memoVal
	counted []*prefixCount
}

type memoVal struct {
	present bool
	value   []byte
}

type prefixCount struct {
	prefix []byte
	n      int64 // keys present under prefix
	valid  bool  // false: recount on the next use (after a DeleteRange)
}

// Bounds: the memo is for a few keys read by nearly every command, not a
// cache (one that held many keys would cost its map work on every write).
const (
	maxPinned  = 32
	maxCounted = 4
)

func (m *memo) reset() {
	clear(m.pinned)
	m.counted = m.counted[:0]
}

// rangeDeleted forgets what a DeleteRange may have changed.
func (m *memo) rangeDeleted() {
	clear(m.pinned)
	for _, c := range m.counted {
		c.valid = false
	}
}

// set records that key now holds value (present) or is absent.
func (m *memo) set(w *Writer, key, value []byte, present bool) error {
	for _, c := range m.counted {
		if !c.valid || !bytes.HasPrefix(key, c.prefix) {
			continue
		}
		_, was, err := w.Get(key)
		if err != nil {
			return err
		}
		switch {
		case present && !was:
			c.n++
		case !present && was:
			c.n--
		}
	}
	if v, ok := m.pinned[string(key)]; ok {
		v.present = present
		v.value = append(v.value[:0], value...)
	}
	return nil
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

// AnyUnder reports whether any key starting with prefix is present. The
// group's keys under prefix are counted once (a scan) and the count then
// follows every write under it, which costs a get per such write: for
// prefixes whose keys are rare and written seldom (locks), so that the
// commands that would look one up can skip the lookup while there are none.
// Up to maxCounted prefixes per group are counted; beyond that AnyUnder
// scans.
func (w *Writer) AnyUnder(prefix []byte) (bool, error) {
	if w.m != nil {
		for _, c := range w.m.counted {
			if bytes.Equal(c.prefix, prefix) {
				if !c.valid {
					n, err := w.countUnder(prefix)
					if err != nil {
						return false, err
					}
					c.n, c.valid = n, true
				}
				return c.n > 0, nil
			}
		}
	}
	n, err := w.countUnder(prefix)
	if err != nil {
		return false, err
	}
	if w.m != nil && len(w.m.counted) < maxCounted {
		w.m.counted = append(w.m.counted, &prefixCount{prefix: append([]byte(nil), prefix...), n: n, valid: true})
	}
	return n > 0, nil
}

func (w *Writer) countUnder(prefix []byte) (int64, error) {
	var n int64
	err := w.Scan(prefix, prefixEnd(prefix), func(_, _ []byte) bool { n++; return true })
	return n, err
}

// prefixEnd returns the first key after every key starting with p (nil:
// to the end of the group's keys).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
