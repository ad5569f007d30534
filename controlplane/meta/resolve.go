package meta

import (
	"context"
	"fmt"
)

// ApplyFunc proposes an encoded command to a shard's leader and returns
// its encoded result.
type ApplyFunc func(ctx context.Context, shard uint32, cmd []byte) ([]byte, error)

// Do encodes c, applies it through apply and decodes the result.
func Do(ctx context.Context, apply ApplyFunc, shard uint32, c *Command) (*Result, error) {
	out, err := apply(ctx, shard, EncodeCommand(c))
	if err != nil {
		return nil, err
	}
	res, err := DecodeResult(out)
	if err != nil {
		return nil, fmt.Errorf("meta: shard %d: %w", shard, err)
	}
	return res, nil
}

// Resolve ends transaction b.Txid's share on shard, which holds a lock of
// it: it asks the coordinator for the decision, deciding it aborted if it
// was still open (a transaction whose driver stalled or died), then
// finishes the share accordingly. It is what a reader that meets an old
// lock, and each node's background resolver, do. It returns whether the
// transaction committed.
func Resolve(ctx context.Context, apply ApplyFunc, shard uint32, b Busy, now int64) (bool, error) {
	d, err := Do(ctx, apply, b.Coord, &Command{Kind: CmdDecide, Txid: b.Txid, Abort: true, Time: now})
	if err != nil {
		return false, fmt.Errorf("meta: resolve transaction %x: decide on shard %d: %w", b.Txid, b.Coord, err)
	}
	if d.Status != OK {
		return false, fmt.Errorf("meta: resolve transaction %x: decide on shard %d: %v", b.Txid, b.Coord, d.Status)
	}
	f, err := Do(ctx, apply, shard, &Command{Kind: CmdFinish, Txid: b.Txid, Abort: !d.Committed, Time: now})
	if err != nil {
		return false, fmt.Errorf("meta: resolve transaction %x: finish on shard %d: %w", b.Txid, shard, err)
	}
	if f.Status != OK {
		return false, fmt.Errorf("meta: resolve transaction %x: finish on shard %d: %v", b.Txid, shard, f.Status)
	}
	return d.Committed, nil
}
