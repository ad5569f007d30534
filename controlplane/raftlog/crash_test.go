package raftlog

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

const (
	crashEnvDir   = "CFS_RAFTLOG_CRASH_DIR"
	crashEnvComb  = "CFS_RAFTLOG_CRASH_COMBINING"
	crashGroups   = 16
	crashPerCall  = 4
	crashMaxIndex = 1 << 40
)

func crashData(group uint32, index uint64) []byte {
	return fmt.Appendf(nil, "g=%d i=%d %s", group, index, strings.Repeat("x", int(index%97)))
}

// TestMain lets the crash test re-execute this binary as the appending child.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		crashChild(dir, os.Getenv(crashEnvComb) == "1")
		return
	}
	os.Exit(m.Run())
}

// crashChild appends to crashGroups groups from one goroutine each, after
// whatever is already there, and prints "ack GROUP LAST" once StoreLogs
// has returned. It runs until killed.
func crashChild(dir string, combining bool) {
	s, err := Open(dir, Options{WriteCombining: combining})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	var wg sync.WaitGroup
	for gid := uint32(0); gid < crashGroups; gid++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := s.Group(gid)
			if err != nil {
				fmt.Fprintln(os.Stderr, "child group:", err)
				os.Exit(2)
			}
			next, _ := g.LastIndex()
			next++
			for next < crashMaxIndex {
				logs := make([]*raft.Log, crashPerCall)
				for j := range logs {
					idx := next + uint64(j)
					logs[j] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: crashData(gid, idx)}
				}
				if err := g.StoreLogs(logs); err != nil {
					fmt.Fprintln(os.Stderr, "child store:", err)
					os.Exit(2)
				}
				next += crashPerCall
				outMu.Lock()
				fmt.Fprintf(out, "ack %d %d\n", gid, next-1)
				out.Flush()
				outMu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashKeepsAcknowledgedAppends SIGKILLs an appending child at random
// points, several rounds, alternating write combining; after each kill
// every append the child acknowledged must be readable, intact, from a
// reopened store, and the store must be contiguous up to its last index.
func TestCrashKeepsAcknowledgedAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	dir := t.TempDir()
	acked := make(map[uint32]uint64)
	const rounds = 6
	for round := 0; round < rounds; round++ {
		combining := round%2 == 1
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		comb := "0"
		if combining {
			comb = "1"
		}
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvComb+"="+comb)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
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
		// Wait for "ready", then let it append for a random while.
		select {
		case l := <-lines:
			if l != "ready" {
				t.Fatalf("child said %q first; stderr: %s", l, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("child not ready; stderr: %s", stderr.String())
		}
		time.Sleep(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n := 0
		for l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "ack" {
				continue // a line cut by the kill
			}
			gid, err1 := strconv.ParseUint(f[1], 10, 32)
			idx, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			n++
			if idx > acked[uint32(gid)] {
				acked[uint32(gid)] = idx
			}
		}
		_ = cmd.Wait()
		if n == 0 {
			t.Fatalf("round %d: child acknowledged nothing; stderr: %s", round, stderr.String())
		}

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		total := uint64(0)
		for gid := uint32(0); gid < crashGroups; gid++ {
			g := mustGroup(t, s, gid)
			first, last := bounds(t, g)
			if acked[gid] > 0 && (first != 1 || last < acked[gid]) {
				t.Fatalf("round %d group %d: first %d last %d, acknowledged up to %d", round, gid, first, last, acked[gid])
			}
			var l raft.Log
			for idx := uint64(1); idx <= last; idx++ {
				if err := g.GetLog(idx, &l); err != nil {
					t.Fatalf("round %d group %d index %d (acked %d, last %d): %v", round, gid, idx, acked[gid], last, err)
				}
				if !bytes.Equal(l.Data, crashData(gid, idx)) {
					t.Fatalf("round %d group %d index %d: wrong data %q", round, gid, idx, l.Data)
				}
			}
			total += last
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d (combining=%v): killed after %d acks; %d entries intact", round, combining, n, total)
	}
}
