package kvsm

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Reader reads one group's keys. Keys are relative to the group.
type Reader interface {
	// Get returns a copy of key's value; found is false if key is absent.
	Get(key []byte) (value []byte, found bool, err error)
	// Scan calls fn for each key in [start, end) in key order until fn
	// returns false. A nil end means the end of the group's keys. key and
	// value are valid only during the call.
	Scan(start, end []byte, fn func(key, value []byte) bool) error
}

// pebbleReader is a Reader over anything Pebble can read from (the DB, an
// indexed batch, a snapshot), confined to one group's data keys.
type pebbleReader struct {
	r     pebble.Reader
	group uint32
}

func (p pebbleReader) Get(key []byte) ([]byte, bool, error) {
	v, closer, err := p.r.Get(groupKey(prefixData, p.group, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kvsm: group %d: get: %w", p.group, err)
	}
	out := append([]byte{}, v...)
	closer.Close()
	return out, true, nil
}

func (p pebbleReader) Scan(start, end []byte, fn func(key, value []byte) bool) error {
	lower := groupKey(prefixData, p.group, start)
	_, upper := dataBounds(p.group)
	if end != nil {
		upper = groupKey(prefixData, p.group, end)
	}
	it, err := p.r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("kvsm: group %d: scan: %w", p.group, err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("kvsm: group %d: scan: %w", p.group, err)
		}
		if !fn(it.Key()[groupPrefixLen:], v) {
			break
		}
	}
	err = it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kvsm: group %d: scan: %w", p.group, err)
	}
	return nil
}

// liveReader reads the state store's current contents while it is open.
type liveReader struct {
	s     *State
	group uint32
}

func (l liveReader) Get(key []byte) (v []byte, found bool, err error) {
	err = l.s.use(func(db *pebble.DB) error {
		v, found, err = pebbleReader{db, l.group}.Get(key)
		return err
	})
	return v, found, err
}

func (l liveReader) Scan(start, end []byte, fn func(key, value []byte) bool) error {
	return l.s.use(func(db *pebble.DB) error {
		return pebbleReader{db, l.group}.Scan(start, end, fn)
	})
}

// Writer is the view an Applier gets of its group while applying: reads
// see the state as of the previous command plus this batch's own writes,
// and writes are committed with the applied index after the batch of
// commands. Keys are relative to the group.
type Writer struct {
	b     *pebble.Batch // indexed
	group uint32
	m     *memo // the FSM's; nil: none (GetPinned and AnyUnder read Pebble)
}

// Get reads through the pending batch.
func (w *Writer) Get(key []byte) ([]byte, bool, error) {
	return pebbleReader{w.b, w.group}.Get(key)
}

// Scan reads through the pending batch.
func (w *Writer) Scan(start, end []byte, fn func(key, value []byte) bool) error {
	return pebbleReader{w.b, w.group}.Scan(start, end, fn)
}

// Set stores value under key.
func (w *Writer) Set(key, value []byte) error {
	if w.m != nil {
		w.m.set(key, value, true)
	}
	return w.b.Set(groupKey(prefixData, w.group, key), value, nil)
}

// Delete removes key.
func (w *Writer) Delete(key []byte) error {
	if w.m != nil {
		w.m.set(key, nil, false)
	}
	return w.b.Delete(groupKey(prefixData, w.group, key), nil)
}

// DeleteRange removes the keys in [start, end); a nil end means to the end
// of the group's keys.
func (w *Writer) DeleteRange(start, end []byte) error {
	lower := groupKey(prefixData, w.group, start)
	_, upper := dataBounds(w.group)
	if end != nil {
		upper = groupKey(prefixData, w.group, end)
	}
	if w.m != nil {
		w.m.rangeDeleted()
	}
	return w.b.DeleteRange(lower, upper, nil)
}

var (
	_ Reader = (*Writer)(nil)
	_ Reader = pebbleReader{}
	_ Reader = liveReader{}
)
