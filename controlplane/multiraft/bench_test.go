package multiraft

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/kvsm"
	"github.com/hashicorp/raft"
)

// The benchmarks run each node as its own process (this test binary
// re-executed), as in a real cluster: three processes, 257 groups each.
const envNode = "CFS_MULTIRAFT_BENCH_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(envNode) != "" {
		benchNode()
		return
	}
	os.Exit(m.Run())
}

// benchNode runs one Host until told to exit. Environment:
// CFS_MULTIRAFT_BENCH_NODE=id, _DIR, _ADDR, _PEERS (id=addr,...), _GROUPS,
// _COMBINING. It prints "ready" once every group has a leader, answers
// "measure SECONDS" with "cpu CPU_SECONDS WALL_SECONDS HEARTBEATS FRAMES",
// and stops on "exit".
func benchNode() {
	env := func(k string) string { return os.Getenv(envNode + k) }
	groups, _ := strconv.Atoi(env("_GROUPS"))
	var boot []raft.Server
	for _, p := range strings.Split(env("_PEERS"), ",") {
		id, addr, _ := strings.Cut(p, "=")
		boot = append(boot, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	cfg := Config{
		NodeID:         env(""),
		Dir:            env("_DIR"),
		RaftAddr:       env("_ADDR"),
		WriteCombining: env("_COMBINING") == "1",
		Logf:           func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}
	// Timeout experiments: CFS_MULTIRAFT_BENCH_TIMEOUTS="heartbeat=1s,commit=2s,lease=1s,window=10ms".
	for _, kv := range strings.Split(os.Getenv("CFS_MULTIRAFT_BENCH_TIMEOUTS"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		d, _ := time.ParseDuration(v)
		switch k {
		case "heartbeat":
			cfg.HeartbeatTimeout, cfg.ElectionTimeout = d, d
		case "commit":
			cfg.CommitTimeout = d
		case "lease":
			cfg.LeaderLeaseTimeout = d
		case "window":
			cfg.HeartbeatWindow = d
		}
	}
	h, err := Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	for g := 0; g < groups; g++ {
		if _, err := h.StartGroup(uint32(g), kvsm.KV{}, boot); err != nil {
			fmt.Fprintln(os.Stderr, "start:", err)
			os.Exit(2)
		}
	}
	for {
		ready := 0
		for _, s := range h.Groups() {
			if s.LeaderAddr != "" {
				ready++
			}
		}
		if ready == groups {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "measure":
			secs, _ := strconv.Atoi(f[1])
			s0 := h.Mux().Stats()
			// CFS_MULTIRAFT_BENCH_PROFILE=DIR writes each node's CPU
			// profile of the measurement there.
			var prof *os.File
			if d := os.Getenv("CFS_MULTIRAFT_BENCH_PROFILE"); d != "" {
				prof, _ = os.Create(filepath.Join(d, env("")+".cpu"))
				pprof.StartCPUProfile(prof)
			}
			c0, w0 := cpuSeconds(), time.Now()
			time.Sleep(time.Duration(secs) * time.Second)
			c1, w1 := cpuSeconds(), time.Now()
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
			}
			s1 := h.Mux().Stats()
			leading := 0
			for _, s := range h.Groups() {
				if s.State == raft.Leader.String() {
					leading++
				}
			}
			fmt.Printf("cpu %f %f %d %d %d\n", c1-c0, w1.Sub(w0).Seconds(),
				s1.HeartbeatsSent-s0.HeartbeatsSent, s1.HeartbeatFramesSent-s0.HeartbeatFramesSent, leading)
		case len(f) == 1 && f[0] == "logstats":
			st := h.LogStore().Stats()
			fmt.Printf("logstats %d %d\n", st.Calls, st.Commits)
		case len(f) == 1 && f[0] == "exit":
			h.Close()
			return
		}
	}
	h.Close()
}

// cpuSeconds is this process's user+system CPU time (getrusage).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

type benchProc struct {
	id    string
	addr  string
	cmd   *exec.Cmd
	stdin *os.File
	lines chan string
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startBenchNodes starts n node processes running groups each and waits
// until each reports every group with a leader.
func startBenchNodes(tb testing.TB, n, groups int, combining bool) []*benchProc {
	tb.Helper()
	dir := tb.TempDir()
	var procs []*benchProc
	var peers []string
	for i := 0; i < n; i++ {
		p := &benchProc{id: fmt.Sprintf("n%d", i+1), addr: freeAddr(tb)}
		procs = append(procs, p)
		peers = append(peers, p.id+"="+p.addr)
	}
	comb := "0"
	if combining {
		comb = "1"
	}
	for _, p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			envNode+"="+p.id, envNode+"_DIR="+filepath.Join(dir, p.id), envNode+"_ADDR="+p.addr,
			envNode+"_PEERS="+strings.Join(peers, ","), envNode+"_GROUPS="+strconv.Itoa(groups), envNode+"_COMBINING="+comb)
		r, w, err := os.Pipe()
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stdin = r
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		r.Close()
		p.cmd, p.stdin, p.lines = cmd, w, make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
			close(p.lines)
		}()
	}
	tb.Cleanup(func() {
		for _, p := range procs {
			fmt.Fprintln(p.stdin, "exit")
			p.stdin.Close()
		}
		for _, p := range procs {
			done := make(chan struct{})
			go func() { p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				p.cmd.Process.Kill()
			}
		}
	})
	for _, p := range procs {
		select {
		case l := <-p.lines:
			if l != "ready" {
				tb.Fatalf("%s said %q", p.id, l)
			}
		case <-time.After(120 * time.Second):
			tb.Fatalf("%s: groups without a leader after 120 s", p.id)
		}
	}
	return procs
}

// BenchmarkIdleCPU measures, by getrusage in each node process over 10 s,
// the CPU three idle nodes with 257 groups each use, in % of one core.
// Run: go test ./controlplane/multiraft -run '^$' -bench IdleCPU -benchtime 1x
func BenchmarkIdleCPU(b *testing.B) {
	const groups, seconds = 257, 10
	procs := startBenchNodes(b, 3, groups, false)
	time.Sleep(3 * time.Second) // let elections and the first snapshots settle
	b.ResetTimer()
	for _, p := range procs {
		fmt.Fprintf(p.stdin, "measure %d\n", seconds)
	}
	worst := 0.0
	for _, p := range procs {
		l := <-p.lines
		var cpu, wall float64
		var hb, frames uint64
		var leading int
		if _, err := fmt.Sscanf(l, "cpu %f %f %d %d %d", &cpu, &wall, &hb, &frames, &leading); err != nil {
			b.Fatalf("%s: %q: %v", p.id, l, err)
		}
		pct := 100 * cpu / wall
		worst = max(worst, pct)
		b.Logf("%s: %.1f%% of one core idle (leads %d groups; %d heartbeats in %d frames, %.1f per frame)",
			p.id, pct, leading, hb, frames, float64(hb)/float64(max(frames, 1)))
	}
	b.ReportMetric(worst, "%core/node(max)")
}

// BenchmarkCommits measures replicated writes per second across all 257
// groups from 16 concurrent clients (a standalone Client each, over
// raftmux to the leaders), with and without write combining.
// Run: go test ./controlplane/multiraft -run '^$' -bench Commits -benchtime 1x
func BenchmarkCommits(b *testing.B) {
	const groups, clients, seconds = 257, 16, 5
	for _, combining := range []bool{false, true} {
		b.Run(fmt.Sprintf("write_combining=%v", combining), func(b *testing.B) {
			procs := startBenchNodes(b, 3, groups, combining)
			var addrs []string
			for _, p := range procs {
				addrs = append(addrs, p.addr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+30)*time.Second)
			defer cancel()
			var cls []*Client
			for i := 0; i < clients; i++ {
				cl, err := NewClient(ClientConfig{})
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				cls = append(cls, cl)
			}
			// Warm up: every client learns every leader.
			for g := 0; g < groups; g++ {
				cmd, _ := kvsm.EncodeCommand(kvsm.Put([]byte("warm"), []byte("x")))
				for _, cl := range cls {
					if _, err := cl.Apply(ctx, uint32(g), cmd, addrs); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			var ok, failed atomic.Uint64
			stop := time.Now().Add(seconds * time.Second)
			var wg sync.WaitGroup
			for i, cl := range cls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(i), 7))
					val := make([]byte, 128)
					for n := 0; time.Now().Before(stop); n++ {
						g := uint32(rng.IntN(groups))
						cmd, _ := kvsm.EncodeCommand(kvsm.Put(fmt.Appendf(nil, "c%d-%d", i, n), val))
						if _, err := cl.Apply(ctx, g, cmd, addrs); err != nil {
							failed.Add(1)
							continue
						}
						ok.Add(1)
					}
				}()
			}
			wg.Wait()
			rate := float64(ok.Load()) / seconds
			var calls, commits uint64
			for _, p := range procs {
				fmt.Fprintln(p.stdin, "logstats")
				var c, m uint64
				fmt.Sscanf(<-p.lines, "logstats %d %d", &c, &m)
				calls, commits = calls+c, commits+m
			}
			b.Logf("write_combining=%v: %d commits in %d s = %.0f/s (%d failed); log appends %d in %d synced batches (%.2f per batch)",
				combining, ok.Load(), seconds, rate, failed.Load(), calls, commits, float64(calls)/float64(max(commits, 1)))
			b.ReportMetric(rate, "commits/s")
		})
	}
}
