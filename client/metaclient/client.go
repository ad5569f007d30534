// Package metaclient is the client of ClaudeFS's metadata service: it
// finds the metadata shards from the cluster map, sends each operation to
// the shard leaders that hold its keys (following redirects), and drives
// the cross-shard transactions of mkdir, rmdir, rename, link and unlink
// (controlplane/meta's package comment has the protocol).
//
// Errors that are file-system outcomes are syscall.Errno values (test
// them with errors.Is); others say which shard and node failed.
package metaclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/meta"
	"github.com/claudefs/claudefs/controlplane/multiraft"
	"github.com/claudefs/claudefs/controlplane/node"
)

// clusterGroup is the Raft group of the cluster map.
const clusterGroup = 0

// Options tune a Client. Zero fields take defaults.
type Options struct {
	// Timeout bounds one operation, retries included, when its context
	// has no deadline. Default 15 s.
	Timeout time.Duration
	// ResolveAfter is how old a lock met by an operation must be before
	// the operation resolves its transaction instead of waiting for it to
	// finish. Default 1 s.
	ResolveAfter time.Duration
	// Logf receives transport messages. Nil: dropped.
	Logf func(format string, args ...any)
	// Now is the clock stamped on commands (mtimes). Default time.Now.
	Now func() time.Time
	// Shards, if set, is the shard map to use (shard → Raft addresses of
	// its replicas) instead of reading the cluster group's: for clients
	// of hosts that run metadata shards without a cluster group.
	Shards map[uint32][]string
}

// Client talks to one cluster's metadata shards. It is safe for
// concurrent use.
type Client struct {
	rc   *multiraft.Client
	opts Options

	mu     sync.RWMutex
	seeds  []string            // Raft addresses that answered the cluster map
	shards map[uint32][]string // shard → Raft addresses of its replicas
	ids    []uint32            // shard ids, sorted
}

// Dial finds the cluster from addrs (Raft addresses of control processes,
// or any mix of their addresses: those that do not answer are skipped)
// and loads its shard map.
func Dial(ctx context.Context, addrs []string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.ResolveAfter <= 0 {
		opts.ResolveAfter = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rc, err := multiraft.NewClient(multiraft.ClientConfig{MaxAttempts: 24, Timeout: opts.Timeout, Logf: opts.Logf})
	if err != nil {
		return nil, err
	}
	c := &Client{rc: rc, opts: opts}
	if opts.Shards != nil {
		err = c.setMap(opts.Shards)
	} else {
		err = c.loadMap(ctx, addrs)
	}
	if err != nil {
		rc.Close()
		return nil, err
	}
	// Materialise the root directory (a no-op after the first time).
	if _, err := c.exec(ctx, meta.RootIno.Shard(), nil); err != nil {
		rc.Close()
		return nil, fmt.Errorf("metaclient: %w", err)
	}
	return c, nil
}

// Close closes the client's connections.
func (c *Client) Close() error { return c.rc.Close() }

// loadMap reads the cluster map from the first of addrs that answers as a
// Raft address; when none does, it asks them as client-API addresses for
// the nodes' Raft addresses (with the operator's credentials:
// $CLAUDEFS_CERT / $CLAUDEFS_CA, or this node's own) and tries those.
func (c *Client) loadMap(ctx context.Context, addrs []string) error {
	errs, ok := c.mapFromRaft(ctx, addrs)
	if ok {
		return nil
	}
	if len(errs) == 0 {
		return errors.New("metaclient: no cluster address given")
	}
	raftAddrs, err := raftAddrsFromAPI(ctx, addrs)
	if err == nil {
		more, ok := c.mapFromRaft(ctx, raftAddrs)
		if ok {
			return nil
		}
		errs = append(errs, more...)
	} else {
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("metaclient: no control process gave the cluster map (give Raft addresses, `cfs dev status --json` lists them): %s", strings.Join(errs, "; "))
}

// mapFromRaft sets the shard map from the first of addrs whose cluster
// group answers; it returns why each one before it did not.
func (c *Client) mapFromRaft(ctx context.Context, addrs []string) (errs []string, ok bool) {
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		b, err := c.rc.Query(qctx, clusterGroup, []byte{0}, []string{a})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", a, err))
			continue
		}
		st, err := cluster.UnmarshalState(b)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", a, err))
			continue
		}
		if len(st.ShardMap) == 0 {
			errs = append(errs, a+": the cluster has no metadata shards placed yet")
			continue
		}
		m := make(map[uint32][]string, len(st.ShardMap))
		for g, nodes := range st.ShardMap {
			for _, id := range nodes {
				if n := st.Nodes[id]; n != nil {
					m[g] = append(m[g], n.RaftAddr)
				}
			}
		}
		if err := c.setMap(m); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", a, err))
			continue
		}
		return errs, true
	}
	return errs, false
}

// raftAddrsFromAPI asks addrs, as client-API addresses, for the nodes' Raft addresses.
func raftAddrsFromAPI(ctx context.Context, addrs []string) ([]string, error) {
	api, err := node.FindCreds("", "", "", "/var/lib/cfs").Client(3 * time.Second)
	if err != nil {
		return nil, fmt.Errorf("asking %s as client-API addresses needs credentials: %v", strings.Join(addrs, ","), err)
	}
	var lastErr error
	for _, a := range addrs {
		st, err := api.Status(ctx, strings.TrimSpace(a), false)
		if err != nil {
			lastErr = err
			continue
		}
		var out []string
		for _, n := range st.Nodes {
			out = append(out, n.RaftAddr)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("no client API among %s answered: %v", strings.Join(addrs, ","), lastErr)
}

func (c *Client) setMap(m map[uint32][]string) error {
	if len(m) == 0 {
		return errors.New("metaclient: an empty shard map")
	}
	shards := make(map[uint32][]string, len(m))
	seen := map[string]bool{}
	var ids []uint32
	var seeds []string
	for g, addrs := range m {
		if g == 0 || g > meta.MaxShard {
			return fmt.Errorf("metaclient: shard id %d out of range 1..%d", g, meta.MaxShard)
		}
		shards[g] = append([]string(nil), addrs...)
		ids = append(ids, g)
		for _, a := range addrs {
			if !seen[a] {
				seen[a] = true
				seeds = append(seeds, a)
			}
		}
	}
	if _, ok := shards[meta.RootIno.Shard()]; !ok {
		return fmt.Errorf("metaclient: the shard map has no shard %d (the root's)", meta.RootIno.Shard())
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	sort.Strings(seeds)
	c.mu.Lock()
	c.shards, c.ids, c.seeds = shards, ids, seeds
	c.mu.Unlock()
	return nil
}

// Shards returns the metadata shard ids.
func (c *Client) Shards() []uint32 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]uint32(nil), c.ids...)
}

func (c *Client) addrs(shard uint32) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if a := c.shards[shard]; len(a) > 0 {
		return a
	}
	return c.seeds
}

func (c *Client) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.opts.Timeout)
}

func (c *Client) now() int64 { return c.opts.Now().UnixNano() }

func randID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// raw applies an encoded command, retrying an outcome-unknown answer: every
// metadata command is safe to repeat (Exec by its ReqID, the transaction
// steps by their Txid).
func (c *Client) raw(ctx context.Context, shard uint32, cmd []byte) ([]byte, error) {
	for {
		out, err := c.rc.Apply(ctx, shard, cmd, c.addrs(shard))
		if err == nil || !errors.Is(err, multiraft.ErrOutcomeUnknown) || ctx.Err() != nil {
			return out, err
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return nil, err
		}
	}
}

func (c *Client) do(ctx context.Context, shard uint32, cmd *meta.Command) (*meta.Result, error) {
	return meta.Do(ctx, c.raw, shard, cmd)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitBusy waits for, or resolves, the transaction holding a key on shard.
func (c *Client) waitBusy(ctx context.Context, shard uint32, b meta.Busy, attempt int) error {
	age := time.Duration(c.now() - b.Time)
	if age >= c.opts.ResolveAfter {
		_, err := meta.Resolve(ctx, c.raw, shard, b, c.now())
		return err
	}
	d := min(time.Millisecond<<min(attempt, 5), c.opts.ResolveAfter-age)
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// exec applies parts on one shard as one command, waiting out locks.
func (c *Client) exec(ctx context.Context, shard uint32, parts []meta.Part) (*meta.Result, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	cmd := &meta.Command{Kind: meta.CmdExec, ReqID: randID(), Parts: parts}
	for attempt := 0; ; attempt++ {
		cmd.Time = c.now()
		res, err := c.do(ctx, shard, cmd)
		if err != nil {
			return nil, err
		}
		if res.Status != meta.StatusBusy {
			return res, nil
		}
		if err := c.waitBusy(ctx, shard, res.Busy, attempt); err != nil {
			return nil, err
		}
		cmd.ReqID = randID() // a busy answer is not remembered, but a new id is plainer
	}
}

// query runs a query on shard's leader, waiting out locks.
func (c *Client) query(ctx context.Context, shard uint32, q *meta.Query) (*meta.Answer, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	qb := meta.EncodeQuery(q)
	for attempt := 0; ; attempt++ {
		out, err := c.rc.Query(ctx, shard, qb, c.addrs(shard))
		if err != nil {
			return nil, err
		}
		a, err := meta.DecodeAnswer(out)
		if err != nil {
			return nil, fmt.Errorf("metaclient: shard %d: %w", shard, err)
		}
		if a.Status != meta.StatusBusy {
			return a, nil
		}
		if err := c.waitBusy(ctx, shard, a.Busy, attempt); err != nil {
			return nil, err
		}
	}
}

// statusErr turns a non-OK status into an error: an Errno for file-system
// outcomes.
func statusErr(s meta.Status, shard uint32) error {
	if s == meta.OK {
		return nil
	}
	if e := s.Errno(); e != 0 {
		return e
	}
	return fmt.Errorf("metaclient: shard %d: %v", shard, s)
}

// errConflict is returned inside the client when an operation must start over.
var errConflict = errors.New("metaclient: conflict")

// retry runs op until it does not report a conflict (the state it read
// changed under it), at most 32 times.
func retry(ctx context.Context, op func() error) error {
	var err error
	for attempt := 0; attempt < 32; attempt++ {
		if err = op(); !errors.Is(err, errConflict) {
			return err
		}
		if !sleep(ctx, time.Duration(attempt+1)*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("metaclient: gave up after 32 conflicting attempts: %w", syscall.EAGAIN)
}

// dirShard picks the shard of a new directory from its parent and name,
// so directories spread over the shards.
func (c *Client) dirShard(parent meta.Ino, name string) uint32 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(parent))
	h.Write(b[:])
	h.Write([]byte(name))
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ids[h.Sum64()%uint64(len(c.ids))]
}

// ClusterState reads the cluster group's state (membership, placement map
// and epoch, dataplane addresses) from the control processes this client
// knows, the first that answers: the data path places shards with it.
func (c *Client) ClusterState(ctx context.Context) (*cluster.State, error) {
	c.mu.RLock()
	seeds := append([]string(nil), c.seeds...)
	c.mu.RUnlock()
	var errs []string
	for _, a := range seeds {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		b, err := c.rc.Query(qctx, clusterGroup, []byte{0}, []string{a})
		cancel()
		if err == nil {
			var st *cluster.State
			if st, err = cluster.UnmarshalState(b); err == nil {
				return st, nil
			}
		}
		errs = append(errs, fmt.Sprintf("%s: %v", a, err))
	}
	return nil, fmt.Errorf("metaclient: no control process gave the cluster state: %s", strings.Join(errs, "; "))
}
