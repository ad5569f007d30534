package clustertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/claudefs/claudefs/controlplane/node"
)

// kvInput is one client operation on one key of one shard.
type kvInput struct {
	Op    string // get, put, cas
	Group uint32
	Key   string
	Value string // put, cas: the new value (unique per operation)
	Old   string // cas: the expected value ("" = absent)
}

// kvOutput is what the cluster answered. Unknown marks a write whose outcome the client
// could not learn (timeout, connection reset, leader lost): it may or may not have taken
// effect, so the checker may place it anywhere after its call.
type kvOutput struct {
	Value   string
	Found   bool
	OK      bool
	Unknown bool
}

// kvModel is a register per (group, key): the value, "" when absent.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			in := op.Input.(kvInput)
			k := fmt.Sprintf("%d/%s", in.Group, in.Key)
			if _, ok := by[k]; !ok {
				order = append(order, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.Op {
		case "get":
			return out.Found == (st != "") && out.Value == st, st
		case "put":
			return true, in.Value
		case "cas":
			match := st == in.Old
			if out.Unknown {
				if match {
					return true, in.Value
				}
				return true, st
			}
			if out.OK != match {
				return false, st
			}
			if match {
				return true, in.Value
			}
			return true, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		return fmt.Sprintf("%s(%d/%s, %q, old %q) → %+v", in.Op, in.Group, in.Key, in.Value, in.Old, out)
	},
}

// TestLinearizableKVUnderFaults runs concurrent clients against replicated key-value
// shards while leaders are SIGKILLed (their supervisor restarts them) and SIGSTOPped, and
// checks the history with porcupine. It runs with and without raft.write_combining.
func TestLinearizableKVUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	for _, combining := range []bool{false, true} {
		t.Run(fmt.Sprintf("write_combining=%v", combining), func(t *testing.T) {
			var extra []string
			if combining {
				extra = append(extra, "--raft-write-combining")
			}
			testLinearizable(t, devUp(t, 3, 8, extra...), 20*time.Second)
		})
	}
}

func testLinearizable(t *testing.T, c *cluster, runFor time.Duration) {
	s := c.status()
	var addrs []string
	for _, n := range s.Nodes {
		addrs = append(addrs, n.Control.Addr)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	defer cancel()

	var mu sync.Mutex
	var history []porcupine.Operation
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	const clients = 6
	var wg sync.WaitGroup
	var okOps, unknownOps, failedReads sync.Map
	for cl := range clients {
		wg.Add(1)
		api := c.api(3 * time.Second)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 7))
			last := map[string]string{} // this client's last seen value per key, for CAS
			for seq := 0; ctx.Err() == nil; seq++ {
				in := kvInput{Group: uint32(1 + rng.IntN(2)), Key: fmt.Sprintf("k%d", rng.IntN(8))}
				lk := fmt.Sprintf("%d/%s", in.Group, in.Key)
				switch r := rng.IntN(10); {
				case r < 5:
					in.Op = "get"
				case r < 8:
					in.Op, in.Value = "put", fmt.Sprintf("c%d-%d", cl, seq)
				default:
					in.Op, in.Value, in.Old = "cas", fmt.Sprintf("c%d-%d", cl, seq), last[lk]
				}
				addr := addrs[rng.IntN(len(addrs))]
				call := time.Since(start).Nanoseconds()
				octx, ocancel := context.WithTimeout(context.Background(), 3*time.Second)
				resp, err := api.KV(octx, addr, in.Group, &node.KVRequest{Op: in.Op, Key: in.Key, Value: in.Value, Old: in.Old})
				ocancel()
				ret := time.Since(start).Nanoseconds()
				if err != nil {
					if in.Op == "get" || notApplied(err) {
						failedReads.Store(seq*clients+cl, true)
						time.Sleep(20 * time.Millisecond) // the node is failing over: do not spin
						continue                          // a failed read, or a write refused before it was proposed, has no effect
					}
					// The write may have committed before the failure: outcome unknown.
					unknownOps.Store(seq*clients+cl, true)
					record(porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: kvOutput{Unknown: true}, Return: math.MaxInt64})
					if !isTransient(err) {
						t.Errorf("client %d: %s: %v", cl, in.Op, err)
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
				okOps.Store(seq*clients+cl, true)
				if in.Op == "get" {
					last[lk] = resp.Value
				} else if in.Op == "put" || resp.OK {
					last[lk] = in.Value
				}
				record(porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: kvOutput{Value: resp.Value, Found: resp.Found, OK: resp.OK}, Return: ret})
			}
		}()
	}

	// Faults: every 2.5 s the leader of shard 1 or 2 is SIGKILLed or frozen for 3 s.
	faults := leaderFaults(ctx, t, c, start, []uint32{1, 2}, 99)
	wg.Wait()
	count := func(m *sync.Map) int {
		n := 0
		m.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	t.Logf("%d faults; %d operations completed, %d writes with unknown outcome, %d failed without effect", faults, count(&okOps), count(&unknownOps), count(&failedReads))
	if faults < 3 {
		t.Fatalf("only %d faults injected", faults)
	}
	if count(&okOps) < 200 {
		t.Fatalf("only %d operations completed: the cluster was unavailable too much", count(&okOps))
	}
	res := porcupine.CheckOperationsTimeout(kvModel, history, 60*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is %v (want linearizable)", len(history), res)
	}
}

// leaderFaults, until ctx ends, every 2.5 s SIGKILLs (its supervisor restarts it) or
// freezes for 3 s (SIGSTOP, SIGCONT) the control process leading one of groups, chosen
// by a generator seeded with seed; it returns how many faults it made.
func leaderFaults(ctx context.Context, t *testing.T, c *cluster, start time.Time, groups []uint32, seed uint64) int {
	faults := 0
	rng := rand.New(rand.NewPCG(seed, 1))
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(2500 * time.Millisecond):
		}
		if ctx.Err() != nil {
			break
		}
		g := groups[rng.IntN(len(groups))]
		pid, who := leaderControlPid(c, g)
		if pid == 0 {
			continue
		}
		faults++
		if rng.IntN(2) == 0 {
			t.Logf("%v: SIGKILL %s's control process (leader of shard %d)", time.Since(start).Round(time.Millisecond), who, g)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		} else {
			t.Logf("%v: SIGSTOP %s's control process (leader of shard %d) for 3 s", time.Since(start).Round(time.Millisecond), who, g)
			_ = syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(3 * time.Second)
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	return faults
}

// leaderControlPid returns the control process pid of the node leading group g.
func leaderControlPid(c *cluster, g uint32) (int, string) {
	s := c.status()
	for _, n := range s.Nodes {
		if n.Control.Pid == 0 {
			continue
		}
		ns, err := c.nodeStatus(n.Control.Addr)
		if err != nil {
			continue
		}
		for _, gs := range ns.GroupList {
			if gs.ID == g && gs.State == "Leader" {
				return n.Control.Pid, n.ID
			}
		}
	}
	return 0, ""
}

// notApplied reports whether err proves the operation had no effect: the node answered
// that it was not (or no longer) the leader or not ready before proposing it, or the
// connection was refused so nothing was sent.
func notApplied(err error) bool {
	var apiErr *node.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case "not_leader", "no_leader", "starting":
			return true
		}
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isTransient reports whether err is what a client sees while leaders fail over.
func isTransient(err error) bool {
	var apiErr *node.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case "not_leader", "no_leader", "unavailable", "starting":
			return true
		}
		return false
	}
	return true // transport errors: the node is down, frozen or restarting
}
