package chunkstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test: a child process (this test binary, re-executed) puts and
// deletes chunks of random sizes and versions and prints each
// acknowledgement; the parent SIGKILLs it at a random moment, reopens the
// store and checks that every acknowledged write reads back byte-identical
// at its latest acknowledged version (or at the version of a write that was
// in flight: unacknowledged writes may or may not survive), that
// acknowledged deletes stay deleted, and that scrubbing finds nothing
// corrupt. Small segments and frequent checkpoints make the child switch
// segments, clean and checkpoint while it is being killed.

const (
	crashIDs     = 240
	crashWorkers = 24
	crashMaxLen  = 96 << 10
)

func crashOpts() Options {
	o := Options{CreateSize: 40 << 20, Partitions: 2, SegmentSize: 1 << 20, QueueDepth: 128,
		CheckpointEvery: 3 << 20, Logf: func(string, ...any) {}}
	return o
}

// crashLen is the size of the chunk written as (id, version).
func crashLen(id ID, v uint64) int {
	x := (id.Lo*0x9e3779b97f4a7c15 ^ v*0xbf58476d1ce4e5b9) >> 20
	switch x % 4 {
	case 0:
		return 1 + int(x%4096)
	case 1:
		return 4096
	default:
		return 1 + int(x%crashMaxLen)
	}
}

func TestCrashChild(t *testing.T) {
	path := os.Getenv("CFS_CRASH_CHILD")
	if path == "" {
		t.Skip("runs only as the crash test's child process")
	}
	round, _ := strconv.ParseUint(os.Getenv("CFS_CRASH_ROUND"), 10, 64)
	s, err := Open(path, crashOpts())
	if err != nil {
		fmt.Println("OPENFAIL", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	say("READY")
	var wg sync.WaitGroup
	for w := 0; w < crashWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(round, uint64(w)))
			n := uint64(0)
			for {
				// Worker w owns ids ≡ w mod crashWorkers: one op per id
				// in flight at a time.
				id := ID{Lo: uint64(w + crashWorkers*r.IntN(crashIDs/crashWorkers))}
				n++
				v := round<<32 | n
				if r.IntN(12) == 0 {
					say("DELTRY %d %d", id.Lo, v)
					err := s.Delete(id, v)
					if err == nil {
						say("DEL %d %d", id.Lo, v)
					} else if !errors.Is(err, ErrNotFound) {
						say("ERR %v", err)
					}
					continue
				}
				say("TRY %d %d", id.Lo, v)
				if err := s.Put(id, v, pattern(id, v, crashLen(id, v))); err != nil {
					say("ERR %v", err)
					continue
				}
				say("ACK %d %d", id.Lo, v)
			}
		}(w)
	}
	wg.Wait()
}

// crashState is what the parent knows: per id, the last acknowledged
// operation and the operations in flight.
type crashState struct {
	acked   map[uint64]uint64   // id -> version of the last acked put (0 if none)
	deleted map[uint64]bool     // id -> last acked op was a delete
	tries   map[uint64][]uint64 // id -> versions of puts in flight
	delTry  map[uint64]bool     // id -> a delete was in flight
}

func TestCrashKill9(t *testing.T) {
	if os.Getenv("CFS_CRASH_CHILD") != "" {
		t.Skip("child")
	}
	rounds := 24
	if testing.Short() {
		rounds = 6
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CFS_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("crash test seed %d (rerun with CFS_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := filepath.Join(t.TempDir(), "dev")
	st := crashState{acked: map[uint64]uint64{}, deleted: map[uint64]bool{}, tries: map[uint64][]uint64{}, delTry: map[uint64]bool{}}
	totalAcks := 0
	for round := 1; round <= rounds; round++ {
		clear(st.tries)
		clear(st.delTry)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CFS_CRASH_CHILD="+path, fmt.Sprintf("CFS_CRASH_ROUND=%d", round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait for READY, then kill at a random moment.
		ready := false
		timeout := time.After(30 * time.Second)
		for !ready {
			select {
			case l, ok := <-lines:
				if !ok {
					cmd.Wait()
					t.Fatalf("round %d: child exited before READY: %s", round, stderr.String())
				}
				if strings.HasPrefix(l, "OPENFAIL") {
					t.Fatalf("round %d: child could not open the store: %s", round, l)
				}
				ready = l == "READY"
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("round %d: child not ready in 30s", round)
			}
		}
		killAt := time.After(time.Duration(20+rng.IntN(400)) * time.Millisecond)
		acks := 0
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				acks += st.observe(t, l)
			case <-killAt:
				cmd.Process.Signal(syscall.SIGKILL)
				killAt = nil
			}
		}
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended on its own (%v): %s", round, cmd.ProcessState, stderr.String())
		}
		totalAcks += acks
		st.verify(t, path, round)
	}
	if totalAcks < rounds*10 {
		t.Fatalf("only %d acknowledgements over %d rounds: the child hardly ran", totalAcks, rounds)
	}
	t.Logf("%d rounds, %d acknowledged writes verified", rounds, totalAcks)
}

func (st *crashState) observe(t *testing.T, l string) int {
	f := strings.Fields(l)
	if len(f) == 0 {
		return 0
	}
	if f[0] == "ERR" {
		t.Fatalf("child reported an error: %s", l)
	}
	if len(f) != 3 {
		return 0
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	v, _ := strconv.ParseUint(f[2], 10, 64)
	switch f[0] {
	case "TRY":
		st.tries[id] = append(st.tries[id], v)
	case "DELTRY":
		st.delTry[id] = true
	case "ACK":
		st.acked[id], st.deleted[id] = v, false
		st.tries[id], st.delTry[id] = nil, false
		return 1
	case "DEL":
		st.deleted[id] = true
		st.tries[id], st.delTry[id] = nil, false
		return 1
	}
	return 0
}

// verify opens the store in this process and checks every id against what
// was acknowledged.
func (st *crashState) verify(t *testing.T, path string, round int) {
	t.Helper()
	s, err := Open(path, crashOpts())
	if err != nil {
		t.Fatalf("round %d: reopen after kill -9: %v", round, err)
	}
	defer s.Close()
	buf := make([]byte, crashMaxLen+1)
	for i := uint64(0); i < crashIDs; i++ {
		id := ID{Lo: i}
		n, v, err := s.Get(id, 0, buf)
		inFlight := func(v uint64) bool {
			for _, x := range st.tries[i] {
				if x == v {
					return true
				}
			}
			return false
		}
		switch {
		case errors.Is(err, ErrNotFound):
			// Fine if never acked, deleted, or a delete was in flight.
			if st.acked[i] != 0 && !st.deleted[i] && !st.delTry[i] {
				t.Fatalf("round %d: chunk %d acked at version %d is gone", round, i, st.acked[i])
			}
			continue
		case err != nil:
			t.Fatalf("round %d: chunk %d: %v", round, i, err)
		}
		switch {
		case st.deleted[i] && !inFlight(v):
			t.Fatalf("round %d: chunk %d was deleted but reads back version %d", round, i, v)
		case !st.deleted[i] && v != st.acked[i] && !inFlight(v):
			t.Fatalf("round %d: chunk %d reads version %d; acked %d, in flight %v", round, i, v, st.acked[i], st.tries[i])
		}
		want := pattern(id, v, crashLen(id, v))
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("round %d: chunk %d version %d: %d bytes differ from what was written (%d bytes)", round, i, v, n, len(want))
		}
		// What survived is now the truth for the next round.
		st.acked[i], st.deleted[i] = v, false
	}
	for i := uint64(0); i < crashIDs; i++ {
		if _, _, err := s.Get(ID{Lo: i}, 0, buf[:1]); errors.Is(err, ErrNotFound) {
			st.acked[i], st.deleted[i] = 0, true
		}
	}
	rep, err := s.Scrub()
	if err != nil || len(rep.Corrupt) > 0 || rep.Errors > 0 {
		t.Fatalf("round %d: scrub after recovery: %v %v", round, rep, err)
	}
}
