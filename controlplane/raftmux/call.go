package raftmux

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// Call sends req to the CallHandler of the node at target, for group, on
// the data connection (a distinct request type from raft's), and returns
// its answer. The call's deadline is ctx's (AppendTimeout if it has none)
// and is carried to the far end, whose handler gets it in its context.
func (m *Mux) Call(ctx context.Context, target string, group uint32, req []byte) ([]byte, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(m.cfg.AppendTimeout)
	}
	left := time.Until(deadline)
	if left <= 0 {
		return nil, fmt.Errorf("%w: call to %s: %v", ErrTimeout, target, ctx.Err())
	}
	body := binary.AppendUvarint(make([]byte, 0, len(req)+binary.MaxVarintLen64), uint64(left/time.Millisecond))
	body = append(body, req...)
	out, _, err := m.roundTrip(target, laneData, group, rpcCall, body, left, ctx.Done())
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, err
}
