package kvsm

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Applier is a replicated state machine built on the FSM's persistence.
type Applier interface {
	// Apply executes the committed command cmd, at Raft index index, by
	// reading and writing w. It must be deterministic: the same state and
	// the same command give the same writes and the same result on every
	// replica, so a command it refuses is refused in the result, not with
	// an error. The returned error is for failures that are not the
	// command's fault (I/O errors reading w); it stops the FSM (see the
	// package invariants). The result is handed to the proposer.
	Apply(w *Writer, index uint64, cmd []byte) (result []byte, err error)
	// Query answers the read-only request q from r. It serves remote
	// linearizable reads; it must not retain r.
	Query(r Reader, q []byte) ([]byte, error)
}

// FSM is the raft.BatchingFSM of one group: commands are applied by an
// Applier into the node's State, with the applied index in the same batch.
type FSM struct {
	st    *State
	group uint32
	app   Applier

	applied atomic.Uint64 // last index whose effects are committed to State
	// m is the group's memo (memo.go); only the FSM goroutine touches it.
	m memo
	// failMu guards fail. fail is sticky: once set nothing more is applied.
	failMu sync.Mutex
	fail   error
}

var _ raft.BatchingFSM = (*FSM)(nil)

// NewFSM opens group's state machine. If a restore was interrupted by a
// crash the group's keys are cleared and the applied index reads 0: the
// caller must then restore the group from its latest snapshot (raft does
// that at start when NoSnapshotRestoreOnStart is false).
func NewFSM(st *State, group uint32, app Applier) (*FSM, error) {
	f := &FSM{st: st, group: group, app: app}
	err := st.use(func(db *pebble.DB) error {
		applied, restoring, err := readApplied(db, group)
		if err != nil {
			return err
		}
		if restoring {
			b := db.NewBatch()
			lower, upper := dataBounds(group)
			_ = b.DeleteRange(lower, upper, nil)
			_ = b.Delete(metaKey(group, metaApplied), nil)
			_ = b.Delete(metaKey(group, metaRestoring), nil)
			if err := b.Commit(pebble.Sync); err != nil {
				return err
			}
			applied = 0
		}
		f.applied.Store(applied)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kvsm: group %d: open: %w", group, err)
	}
	return f, nil
}

// Group returns the group id.
func (f *FSM) Group() uint32 { return f.group }

// AppliedIndex returns the last Raft index whose effects are committed.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Err returns the error that stopped the FSM, or nil.
func (f *FSM) Err() error {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	return f.fail
}

func (f *FSM) setFail(err error) error {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	if f.fail == nil {
		f.fail = fmt.Errorf("kvsm: group %d: state machine stopped: %w", f.group, err)
	}
	return f.fail
}

// Reader reads the group's current state. It is not linearizable by itself:
// callers serve linearizable reads only after the leader checks in
// multiraft.
func (f *FSM) Reader() Reader { return liveReader{f.st, f.group} }

// Applier returns the state machine the FSM drives.
func (f *FSM) Applier() Applier { return f.app }

// Apply applies one entry (raft calls ApplyBatch; this is for completeness).
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order in one Pebble batch. Each
// LogCommand's response is its result ([]byte) or an error.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if err := f.Err(); err != nil {
		for i := range out {
			out[i] = err
		}
		return out
	}
	err := f.st.use(func(db *pebble.DB) error {
		applied := f.applied.Load()
		b := db.NewIndexedBatch()
		defer b.Close()
		w := &Writer{b: b, group: f.group, m: &f.m}
		last := applied
		for i, l := range logs {
			if l.Index <= applied {
				continue // replayed after a restart: already in the state
			}
			last = l.Index
			if l.Type != raft.LogCommand {
				continue
			}
			res, err := f.app.Apply(w, l.Index, l.Data)
			if err != nil {
				return fmt.Errorf("index %d: %w", l.Index, err)
			}
			out[i] = res
		}
		if last == applied {
			return nil
		}
		if err := b.Set(metaKey(f.group, metaApplied), binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
			return err
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		f.applied.Store(last)
		return nil
	})
	if err != nil {
		err = f.setFail(err)
		for i := range out {
			out[i] = err
		}
	}
	return out
}
