package metaclient

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// A cross-shard operation: the coordinator's share decides it (its command
// applies the share and records the decision at once); every other share
// is prepared first — applied under locks, old values kept — and finished
// after the decision. So users see either all of it or none of it: before
// the decision the prepared keys are locked (readers wait, or resolve an
// old transaction by deciding it aborted), after it they are final.

// txn runs one cross-shard transaction. shares are the participants'
// parts; coordParts builds the coordinator's from the participants'
// prepare results (mkdir needs the inode number the new directory's shard
// allocated). check, if not nil, runs once every share is prepared and
// before the decision, with the transaction's id (reads that pass that
// id see through its locks); an error from it aborts. It returns the coordinator's result, whose Status is the
// operation's outcome, and the participants' results.
func (c *Client) txn(ctx context.Context, coord uint32, shares map[uint32][]meta.Part,
	coordParts func(prepared map[uint32]*meta.Result) []meta.Part, check func(txid uint64) error) (*meta.Result, map[uint32]*meta.Result, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	txid := randID()
	participants := make([]uint32, 0, len(shares))
	for s, parts := range shares {
		if s == coord {
			// The coordinator's commit meets its own prepared keys as busy,
			// so a share there may only lock (the rename lock).
			for _, p := range parts {
				if p.Kind != meta.PartLockKey {
					return nil, nil, fmt.Errorf("metaclient: a share on the coordinator (shard %d) may only lock keys", s)
				}
			}
		}
		participants = append(participants, s)
	}
	sort.Slice(participants, func(i, j int) bool { return participants[i] < participants[j] })

	// Prepare every share, in parallel.
	prepared := make(map[uint32]*meta.Result, len(shares))
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		failed  *meta.Result
		failErr error
	)
	for _, s := range participants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.prepare(ctx, s, txid, coord, participants, shares[s])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failErr = err
			case res.Status != meta.OK:
				if failed == nil {
					failed = res
				}
			default:
				prepared[s] = res
			}
		}()
	}
	wg.Wait()
	if failErr != nil || failed != nil {
		c.abort(ctx, txid, coord, participants)
		if failErr != nil {
			return nil, nil, failErr
		}
		return failed, prepared, nil
	}

	if check != nil {
		if err := check(txid); err != nil {
			c.abort(context.WithoutCancel(ctx), txid, coord, participants)
			return nil, nil, err
		}
	}

	// Decide.
	cmd := &meta.Command{Kind: meta.CmdCommit, Txid: txid, Coord: coord, Participants: participants, Parts: coordParts(prepared)}
	var res *meta.Result
	for attempt := 0; ; attempt++ {
		cmd.Time = c.now()
		r, err := c.do(ctx, coord, cmd)
		if err != nil {
			// Undecided as far as we know: a resolver decides it.
			c.abort(context.WithoutCancel(ctx), txid, coord, participants)
			return nil, nil, err
		}
		if r.Status != meta.StatusBusy {
			res = r
			break
		}
		if err := c.waitBusy(ctx, coord, r.Busy, attempt); err != nil {
			c.abort(context.WithoutCancel(ctx), txid, coord, participants)
			return nil, nil, err
		}
	}
	if c.finish(ctx, txid, participants, !res.Committed) {
		// Every share is finished: the decision is no longer needed. (Kept
		// while a share is left to a resolver, who must find it.)
		_, _ = c.do(ctx, coord, &meta.Command{Kind: meta.CmdForget, Txid: txid, Time: c.now()})
	}
	return res, prepared, nil
}

func (c *Client) prepare(ctx context.Context, shard uint32, txid uint64, coord uint32, participants []uint32, parts []meta.Part) (*meta.Result, error) {
	cmd := &meta.Command{Kind: meta.CmdPrepare, Txid: txid, Coord: coord, Participants: participants, Parts: parts}
	for attempt := 0; ; attempt++ {
		cmd.Time = c.now()
		res, err := c.do(ctx, shard, cmd)
		if err != nil || res.Status != meta.StatusBusy {
			return res, err
		}
		if err := c.waitBusy(ctx, shard, res.Busy, attempt); err != nil {
			return nil, err
		}
	}
}

// abort decides txid aborted (unless it committed) and rolls back the
// prepared shares. Failures are left to the resolvers.
func (c *Client) abort(ctx context.Context, txid uint64, coord uint32, participants []uint32) {
	d, err := c.do(ctx, coord, &meta.Command{Kind: meta.CmdDecide, Txid: txid, Abort: true, Participants: participants, Time: c.now()})
	if err != nil {
		c.logf("transaction %x: deciding abort on shard %d: %v (a resolver will)", txid, coord, err)
		return
	}
	if c.finish(ctx, txid, participants, !d.Committed) {
		_, _ = c.do(ctx, coord, &meta.Command{Kind: meta.CmdForget, Txid: txid, Time: c.now()})
	}
}

// finish ends every participant's share, in parallel, and reports whether
// all of them answered.
func (c *Client) finish(ctx context.Context, txid uint64, participants []uint32, abort bool) bool {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all = true
	)
	for _, s := range participants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.do(ctx, s, &meta.Command{Kind: meta.CmdFinish, Txid: txid, Abort: abort, Time: c.now()}); err != nil {
				c.logf("transaction %x: finishing on shard %d: %v (a resolver will)", txid, s, err)
				mu.Lock()
				all = false
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return all
}

func (c *Client) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}
